"""Reliability, round three (issue 46): long paths and inputs, --gymnasium's size, JSON without NaN, snapshot
names, a spec that overflows, a config.yaml lost mid-run. Each bad input is one ``error:`` line (exit 2) that
quotes at most ~200 characters of it, with nothing written; CMA-ES states and stage runs are in
tests/test_cma_state.py and tests/test_stage_edits.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TINY, run_root_script

LONG_NAME = "a" * 300  # one name over 255 bytes
LONG_PATH = "/tmp/" + "b/" * 2500  # 5,005 characters


def run(script: str, args: list[str]) -> tuple[int, str]:
    done = run_root_script(script, [str(a) for a in args])
    return done.returncode, done.stderr


def one_short_line(code: int, err: str, *fragments: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert "Traceback" not in err and len(lines[0]) <= 400, lines[0][:500]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def stage_config(tmp: Path, init_model: str) -> str:
    path = tmp / "stages.yaml"
    path.write_text(yaml.safe_dump({"ga": {"population_size": 4, "num_survivors": 1, "lifetime_steps": 5},
                                    "stages": [{"name": "a", "ga.init_model": init_model}]}))
    return str(path)


PATHS = [
    ("show_results-name", "show_results.py", lambda tmp, p: [p], "file name too long"),
    ("resume", "run_config.py", lambda tmp, p: ["--resume", p], "file name too long"),
    ("config", "run_config.py", lambda tmp, p: [p, "--out", tmp / "r"], "no such file, nor a shipped config"),
    ("init_model", "run_config.py", lambda tmp, p: [ROOT / TINY, "--set", f"ga.init_model={p}", "--out", tmp / "r"],
     "ga.init_model: "),
    ("stage-init_model", "run_config.py", lambda tmp, p: [stage_config(tmp, p), "--out", tmp / "r"],
     "stages[0] (a): ga.init_model: "),
    ("plot-runs", "show_results.py", lambda tmp, p: [tmp, p, "--plot", tmp / "c.png"], ""),
]


@pytest.mark.parametrize("path", [LONG_NAME, LONG_PATH], ids=["300-byte-name", "5000-character-path"])
@pytest.mark.parametrize(("name", "script", "args", "message"), PATHS, ids=[p[0] for p in PATHS])
def test_a_path_too_long_is_one_short_line(tmp_path, path, name, script, args, message):
    code, err = run(script, args(tmp_path, path))
    one_short_line(code, err, message)
    assert not (tmp_path / "r").exists() and not (tmp_path / "c.png").exists()


def test_a_missing_config_names_a_few_shipped_ones():
    line = one_short_line(*run("run_config.py", ["no_such_config"]),
                          "no_such_config: no such file, nor a shipped config (shipped: base, ")
    assert " more, in configs/ and experiments/)" in line


@pytest.mark.parametrize(("script", "args"), [
    ("run_config.py", [str(ROOT / TINY), "--generations", "9" * 5000]),
    ("run_config.py", [str(ROOT / TINY), "--seed", "1" * 5000]),
    ("show_results.py", ["pendulum_balance", "--episodes", "7" * 5000]),
    ("show_results.py", ["pendulum_balance", "--gymnasium", "P" * 100_000]),
], ids=["generations", "seed", "episodes", "gymnasium-id"])
def test_long_inputs_are_echoed_clipped(script, args):
    if "--gymnasium" in args:
        pytest.importorskip("gymnasium")
    one_short_line(*run(script, args))


@pytest.mark.parametrize(("args", "message"), [
    (["--lifetimes", "100000000"], "work: --gymnasium needs about"),
    (["--episodes-per-lifetime", "100000000"], "work: --gymnasium needs about"),
], ids=["lifetimes", "episodes"])
def test_gymnasium_is_guarded_by_the_work_estimate(args, message):
    pytest.importorskip("gymnasium")
    line = one_short_line(*run("show_results.py", ["pendulum_balance", "--gymnasium", "Pendulum-v1", *args]),
                          message)
    assert "reduce --lifetimes, --episodes-per-lifetime or --hidden, or pass --allow-large" in line
