"""Reliability, round two (issue 22): the adversarial cases that once gave a traceback, a hang or silently
wrong results, each now one ``error:`` line (exit 2) with nothing written, or the right result.

Grouped: the run folder (lock, foreign files), non-finite genomes, what is read back (checkpoint,
config.yaml, model files, logs), files and paths, YAML, sizes and seeds, the self-check. Everything runs
in-process on configs/tiny.yaml except where real concurrent processes are the point (slow lane).
"""

from __future__ import annotations

import errno
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, TINY, fitness_columns, needs_native, run_script

from metarl import config as C
from metarl import io, lifetime, training
from metarl.cli import run_main
from metarl.runlock import LOCK_FILE, RunFolderBusy, RunLock
from metarl.scripts import show_results
from metarl.scripts import train as run_config

TINY_ARGS = [str(ROOT / TINY), "--set", "ga.lifetime_steps=5", "--set", "ga.population_size=8",
             "--set", "ga.num_survivors=2"]


def run(main, args: list[str], capsys) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of a script's ``main`` run in this process as the command line would."""
    code = run_main(main, [str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert "Traceback" not in err and len(lines[0]) < 1000, err[:500]
    for fragment in fragments:
        assert fragment in err, err


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its content (to show that nothing was written), but the lock file."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


@pytest.fixture
def tiny_run(tmp_path, capsys) -> Path:
    """A completed 2-generation run folder (population 8, 5-step lifetimes)."""
    out = tmp_path / "run"
    code, _, err = run(run_config.main, [*TINY_ARGS, "--generations", "2", "--out", out, "--quiet"], capsys)
    assert code == 0, err
    return out


# ---------------------------------------------------------------------------- the run folder: one writer

HOLD = """
import sys, time
from metarl.runlock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def hold_lock(run_dir: Path) -> subprocess.Popen:
    """A real second process holding the run folder's lock (as a live run does)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_naming_the_holder(tiny_run, capsys):
    before = tree(tiny_run)
    holder = hold_lock(tiny_run)
    try:
        code, _, err = run(run_config.main, ["--resume", tiny_run, "--generations", "3"], capsys)
        one_line(err, f"in use by process {holder.pid}")
        assert code == 2
        code, _, err = run(show_results.main, [tiny_run, "--rescore", "1", "--episodes", "2"], capsys)
        assert code == 2 and f"process {holder.pid}" in err
        assert tree(tiny_run) == before
    finally:
        holder.kill()  # kill -9: the kernel releases the lock with the process
        holder.wait()
    code, _, err = run(run_config.main, ["--resume", tiny_run, "--generations", "3", "--quiet"], capsys)
    assert code == 0, err
    assert len(io.read_log(tiny_run / "log.csv")) == 3


def test_a_new_run_into_a_locked_empty_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    holder = hold_lock(out)
    try:
        code, _, err = run(run_config.main, [*TINY_ARGS, "--out", out], capsys)
        one_line(err, f"in use by process {holder.pid}")
        assert {p.name for p in out.iterdir()} == {LOCK_FILE}
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_released_on_any_exit(tmp_path):
    lock = RunLock(tmp_path).acquire()
    with pytest.raises(RunFolderBusy):
        RunLock(tmp_path).acquire()  # another open file description: refused even in one process
    lock.release()
    with RunLock(tmp_path):
        pass
    holder = hold_lock(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    RunLock(tmp_path).acquire().release()


@pytest.mark.slow
def test_two_runs_started_at_once_into_one_folder(tmp_path):
    out = tmp_path / "r"
    args = [sys.executable, "run_config.py", *[str(a) for a in TINY_ARGS], "--out", str(out), "--quiet",
            "--generations", "3"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    one_line(refused)
    assert "in use by process" in refused or "already holds a run" in refused
    reference = tmp_path / "ref"
    assert run_script("run_config.py", *[str(a) for a in TINY_ARGS], "--out", str(reference), "--quiet",
                      "--generations", "3").returncode == 0
    assert fitness_columns(out) == fitness_columns(reference)


@pytest.mark.parametrize("files", [{"config.yaml": "mine: 1\n", "log.csv": "a,b\n1,2\n"},
                                   {"notes.txt": "my notes"}, {"best_model.yaml": "x: 1\n"}])
def test_out_never_writes_into_a_folder_with_files(tmp_path, capsys, files):
    out = tmp_path / "mine"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    before = tree(out)
    code, _, err = run(run_config.main, [*TINY_ARGS, "--out", out], capsys)
    assert code == 2
    one_line(err, "already holds a run" if set(files) & set(training.RUN_FILES) else "not a metarl run folder")
    assert tree(out) == before and {p.name for p in out.iterdir()} == set(files)


def test_out_an_empty_folder_is_used(tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    code, _, err = run(run_config.main, [*TINY_ARGS, "--out", out, "--generations", "1", "--quiet"], capsys)
    assert code == 0, err
    assert (out / "checkpoint.pt").is_file()


# ---------------------------------------------------------------------------- non-finite genomes


@pytest.mark.parametrize("backend", ["spec", pytest.param("native", marks=needs_native)])
def test_non_finite_genomes_score_nan_on_every_backend(backend):
    config = C.load(ROOT / TINY, ["ga.lifetime_steps=5"])
    layout = training.layout_of(config)
    genomes = layout.random(4, 0.5, torch.Generator().manual_seed(0))
    genomes[0] = math.nan
    genomes[1, 7] = math.inf
    genomes[2, 3] = -math.inf
    fitness, rewards = lifetime.run_lifetimes(genomes, layout, config, torch.arange(4), backend=backend, trace=True)
    assert torch.isnan(fitness[:3]).all() and torch.isnan(rewards[:3]).all()
    assert torch.isfinite(fitness[3]) and torch.isfinite(rewards[3]).all()
    alone, _ = lifetime.run_lifetimes(genomes[3:], layout, config, torch.arange(4)[3:], backend=backend)
    assert alone[0] == fitness[3]  # the others' damage does not reach it


def test_an_all_nan_population_stops_the_run_and_saves_nothing(tmp_path):
    config = C.load(ROOT / TINY, ["ga.lifetime_steps=5", "ga.population_size=4", "ga.num_survivors=2"])
    state = training.new_run(config)
    state.population[:] = math.nan
    trainer = training.Trainer(state, tmp_path)
    with pytest.raises(training.NonFiniteError, match="all 4 individuals"):
        trainer.run_generation()
    assert not (tmp_path / "best_model.yaml").exists()
    with pytest.raises(io.ModelFileError, match="NaN or infinite genes"):
        io.save_model(tmp_path / "m.yaml", state.population[0], trainer.layout, config, fitness=1.0, generation=0,
                      seed=1)
    with pytest.raises(io.ModelFileError, match="non-finite fitness"):
        io.save_model(tmp_path / "m.yaml", torch.zeros(trainer.layout.size), trainer.layout, config,
                      fitness=math.nan, generation=0, seed=1)
