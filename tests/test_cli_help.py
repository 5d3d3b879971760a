"""``--help`` is answered before the command's heavy imports (`metarl.cli.startup`, `metarl.cli.parsers`), with the
same parser the command parses its arguments with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SCRIPTS, run_script

from metarl.cli import parsers, startup

HEAVY = ("torch", "numpy", "matplotlib", "yaml", "pygame")


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_prints_the_command_s_usage_without_loading_torch(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # argparse's width, here and in the process
    code = ("import sys\n"
            f"sys.argv = [{script!r}, '--set', 'a=1', '--help']\n"
            "from metarl.cli import startup\n"
            "try:\n"
            f"    startup.run({SCRIPTS[script]!r})\n"
            "except SystemExit as e:\n"
            "    print('exit', e.code)\n"
            f"print('loaded', [m for m in {HEAVY!r} if m in sys.modules])\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, COLUMNS="100"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"usage: {script}") and lines[-2:] == ["exit 0", "loaded []"]
    parser = parsers.PARSERS[SCRIPTS[script]]()
    parser.prog = script  # argparse takes it from sys.argv[0]
    assert done.stdout[:-len("exit 0\nloaded []\n")] == parser.format_help()


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_the_command_s_own_parser_prints_the_same_help(script: str) -> None:
    quick = run_script(script, "--help", real_process=True)
    # An abbreviation argparse accepts takes the usual path: the command's module, then its parser.
    usual = run_script(script, "--he", real_process=True)
    assert quick.returncode == usual.returncode == 0 and quick.stderr == usual.stderr == ""
    assert quick.stdout == usual.stdout and quick.stdout.startswith(f"usage: {script}")


def test_what_counts_as_asking_for_help() -> None:
    assert startup.asks_for_help(["-h"]) and startup.asks_for_help(["CONFIG", "--set", "ga.seed=1", "--help"])
    assert not startup.asks_for_help(["--", "-h"]) and not startup.asks_for_help(["--he"])
    assert not startup.asks_for_help(["CONFIG", "--help=1"]) and not startup.asks_for_help([])


def test_the_environments_the_help_names_are_the_ones_metarl_registers() -> None:
    from metarl import envs

    shipped = tuple(name for name, cls in envs.ENVS.items() if cls.__module__.startswith("metarl.envs."))
    assert parsers.SHIPPED_ENVS == shipped
    assert parsers.DEFAULT_RESCORE_EPISODES == parsers.RESCORE_EPISODES


@pytest.mark.slow
def test_the_startup_benchmark_times_every_case(tmp_path: Path) -> None:
    out = tmp_path / "startup.json"
    done = subprocess.run([sys.executable, "bench/startup.py", "--runs", "1", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    import json

    medians = json.loads(out.read_text())["medians_s"]
    assert len(medians) == 5 and all(t > 0 for t in medians.values())
    assert "load average" in done.stdout
