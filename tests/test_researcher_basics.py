"""What researchers expect of a project: help without optional packages, a citation, a changelog, errors that
list what ships, plots with their baselines (issue 44)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TINY, run_script

NO_GYMNASIUM = """
import importlib.abc, pydoc, sys

class Block(importlib.abc.MetaPathFinder):  # as where gymnasium is not installed
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "gymnasium":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Block())
import metarl
text = pydoc.render_doc(metarl)
assert "evolve learning rules" in text, text[:200]
try:
    metarl.gym
except AttributeError as e:
    print(e)
"""


@pytest.mark.slow
def test_help_of_metarl_works_without_gymnasium() -> None:
    done = subprocess.run([sys.executable, "-c", NO_GYMNASIUM], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "metarl.gym needs gymnasium (pip install '.[gymnasium]')"


def test_citation_and_changelog() -> None:
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["type"] == "software"
    assert citation["title"].startswith("metarl") and citation["license"] == "MIT" and citation["authors"]
    from metarl import __version__

    assert citation["version"] == __version__
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert changelog.startswith("# Changelog") and "## 2026-11-24" in changelog


def test_unknown_config_lists_the_shipped_configs_by_folder() -> None:
    done = run_script("run_config.py", "no_such_config")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: no_such_config: no such file, nor a shipped config (shipped, by folder: configs: ")
    assert "; experiments/balance_probes: pendulum_balance_probe; " in line and len(line) <= 400
    assert "_fast" not in line  # the attempts' configs are not shipped names


@pytest.mark.slow
def test_fitness_plot_shows_the_baseline_levels_and_names_the_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert run_script("run_config.py", TINY, "--out", str(run), "--quiet").returncode == 0
    done = run_script("show_results.py", str(run), "--plot", str(tmp_path / "curve.png"))
    assert done.returncode == 0, done.stderr
    assert "random rules (generation 0 mean)" in done.stdout and "no plasticity (a random actor)" in done.stdout
    from metarl.cli import show_results
    from metarl.runs.io import read_log

    config = show_results.run_config(run)
    assert config is not None and "Pendulum" in show_results.summary(config)
    levels = show_results.baseline_levels(read_log(run / "log.csv"), config)
    assert levels["random rules (generation 0 mean)"] == read_log(run / "log.csv")[0]["mean"]
