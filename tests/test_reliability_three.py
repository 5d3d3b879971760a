"""Reliability, round three (issue 46): long paths and inputs, --gymnasium's size, JSON without NaN, snapshot
names, a spec that overflows, a config.yaml lost mid-run. Each bad input is one ``error:`` line (exit 2) that
quotes at most ~200 characters of it, with nothing written; CMA-ES states and stage runs are in
tests/test_cma_state.py and tests/test_stage_edits.py."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
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
                          "no_such_config: no such file, nor a shipped config (shipped, by folder: configs: base, ")
    assert " more folders in experiments/)" in line


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


# ---------------------------------------------------------------------------- what is written


@pytest.mark.parametrize(("data", "nulls"), [
    ({"a": math.nan}, ["a"]),
    ({"points": [{"reference": {"mean": math.inf, "ci95": [-math.inf, 1.0]}}]},
     ["points[0].reference.mean", "points[0].reference.ci95[0]"]),
    ({"a": 1.5, "b": [1, 2], "c": "NaN"}, []),
], ids=["nan", "nested-inf", "finite"])
def test_json_output_never_holds_nan(tmp_path, capsys, data, nulls):
    from metarl.cli import show_results

    out = tmp_path / "x.json"
    show_results.write_json(str(out), data)
    text = out.read_text()

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in the JSON")

    written = json.loads(text, parse_constant=refuse)  # NaN, Infinity, -Infinity are not JSON
    notes = written.get("notes", [])
    assert bool(notes) == bool(nulls)
    for path in nulls:
        assert path in notes[0]
    if nulls:
        assert notes[0].startswith(f"{len(nulls)} values were not finite numbers")


@pytest.mark.parametrize(("overrides", "message"), [
    (["env.params.length=1.0e-300"], "env.params.length: 1e-300 makes the equation of motion overflow "
                                     "(max_torque/(mass length^2) is infinite even in float64): the spec itself"),
    (["env.params.mass=1.0e-320"], "env.params.mass: 1e-320 makes the equation of motion overflow"),
    (["env.params.length=[1.0e-300, 1.0]"], "env.params.length: [1e-300, 1.0] makes the equation of motion"),
], ids=["length", "mass", "length-range"])
def test_a_spec_that_overflows_says_so(tmp_path, overrides, message):
    args = [ROOT / TINY, "--out", tmp_path / "r"]
    for o in overrides:
        args += ["--set", o]
    one_short_line(*run("run_config.py", args), message)
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def snapshot_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("snap") / "run"
    code, err = run("run_config.py", [ROOT / TINY, "--out", out, "--generations", "3", "--quiet", "--set",
                                      "logging.snapshot_every=1", "--set", "ga.population_size=8", "--set",
                                      "ga.num_survivors=2", "--set", "ga.lifetime_steps=5"])
    assert code == 0, err
    return out


@pytest.mark.parametrize("name", ["gen_99999999999999999999.yaml", "gen_000007.yaml"])
def test_a_snapshot_named_another_generation_is_refused(snapshot_run, tmp_path, name):
    out = tmp_path / "run"
    shutil.copytree(snapshot_run, out)
    shutil.copy(out / "snapshots" / "gen_000002.yaml", out / "snapshots" / name)
    number = name[4:-5]
    code, err = run("show_results.py", [out, "--rescore", "1", "--snapshots", "--episodes", "2"])
    one_short_line(code, err, f"{name}: not a snapshot of this run: named generation ", "saved at generation 2")
    assert not (out / "rescored_model.yaml").exists() and int(number) != 2


def test_a_config_yaml_lost_mid_run_resumes_from_the_checkpoint_s_copy(snapshot_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(snapshot_run, out)
    kept = (out / "config.yaml").read_text()
    (out / "config.yaml").unlink()
    done = run_root_script("run_config.py", ["--resume", str(out), "--generations", "4", "--quiet"])
    assert done.returncode == 0, done.stderr
    assert "warning: " in done.stderr and "config.yaml is missing: the run continues with the config its " \
        "checkpoint holds" in done.stderr
    assert yaml.safe_load((out / "config.yaml").read_text())["env"] == yaml.safe_load(kept)["env"]
    # Without a copy (a checkpoint of format 1, or none) it is one line.
    (out / "config.yaml").unlink()
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    torch.save({k: v for k, v in state.items() if k not in ("config", "format", "sha256")}, out / "checkpoint.pt")
    one_short_line(*run("run_config.py", ["--resume", out]), "config.yaml is missing and its checkpoint (written by "
                   "a metarl before checkpoint format 2) holds no copy: put the run's config.yaml back")
    (out / "checkpoint.pt").unlink()
    one_short_line(*run("run_config.py", ["--resume", out]), "not a run folder (no config.yaml)")
