"""A run survives being killed: kill -9 at random moments, SIGTERM and SIGHUP, non-finite fitness, old runs."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, TINY, run_script, wait_for_file

from metarl.cli import show_results
from metarl.cli import train as run_config
from metarl.cli.main import exit_code, run_main
from metarl.config import load
from metarl.errors import NonFiniteError
from metarl.evolve import distributed
from metarl.evolve import trainer as training
from metarl.runs import io
from metarl.runs.signals import Stopped, deferred_signals, stop_signals

# Short generations, so that a kill lands in any phase: start-up, a lifetime, the writes.
SMALL = [TINY, "--set", "ga.population_size=8", "--set", "ga.num_survivors=2", "--set", "ga.lifetime_steps=10"]
COLUMNS = ("generation", "best", "mean", "median", "worst", "best_ever", "nonfinite")  # not the timings

# A process that imports run_config once and forks a child per request: the children start in
# milliseconds instead of the seconds of importing torch, so 20+ kills fit in a few seconds. It
# computes nothing itself, so forking it is safe. Request: {"args": [...], "delay": s}; the child is
# sent SIGKILL after ``delay`` seconds unless it ended; answer: {"killed": bool, "code": exit code}.
FORK_SERVER = """
import json, os, signal, sys, time
from metarl.cli import train as run_config
from metarl.cli.main import exit_code, run_main
from metarl.runs.signals import Stopped, deferred_signals, stop_signals
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os._exit(run_main(run_config.main, request["args"]))
    deadline = time.monotonic() + request["delay"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print(json.dumps({"killed": False, "code": os.waitstatus_to_exitcode(status)}), flush=True)
            break
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            print(json.dumps({"killed": True, "code": -9}), flush=True)
            break
        time.sleep(0.002)
"""


def log_columns(run_dir: Path) -> list[tuple[str, ...]]:
    with (run_dir / "log.csv").open(newline="") as f:
        return [tuple(row[k] for k in COLUMNS) for row in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.long(34)
def test_kill_9_at_random_moments_then_resume_gives_the_uninterrupted_log(tmp_path):
    generations = 60
    reference = run_script("run_config.py", *SMALL, "--out", str(tmp_path / "ref"), "--generations", str(generations))
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "killed"
    server = subprocess.Popen([sys.executable, "-c", FORK_SERVER], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    rng = random.Random(14)
    kills, trials = 0, 0
    try:
        while kills < 14 and trials < 40:
            trials += 1
            # Resume when the folder holds a run; a process killed before it wrote config.yaml left
            # nothing to resume, so the run starts again (as a user would, with the same command).
            if (out / "config.yaml").exists():
                assert training.load_run(out).generation <= generations  # resumable after every kill
                args = ["--resume", str(out)]
            else:
                assert not (out / training.CHECKPOINT).exists()
                args = [*SMALL, "--out", str(out), "--generations", str(generations)]
            server.stdin.write(json.dumps({"args": args, "delay": rng.uniform(0.0, 0.3)}) + "\n")
            server.stdin.flush()
            answer = json.loads(server.stdout.readline())
            kills += answer["killed"]
            assert answer["killed"] or answer["code"] == 0, answer
            if not answer["killed"]:
                break  # the run finished between kills
    finally:
        server.stdin.close()
        server.wait(timeout=60)
    assert kills >= 12
    # On a busy machine every kill may land before config.yaml is written: then the run starts again.
    again = ["--resume", str(out)] if (out / "config.yaml").exists() else \
        [*SMALL, "--out", str(out), "--generations", str(generations)]
    final = run_script("run_config.py", *again)
    assert final.returncode == 0, final.stderr
    assert log_columns(out) == log_columns(tmp_path / "ref")
    assert len(log_columns(out)) == generations
    for name in ("best_model.yaml", "best_ever.yaml"):
        ref, got = tmp_path / "ref" / name, out / name
        assert got.exists() == ref.exists()
        if ref.exists():
            assert io.load_model(got).fitness == io.load_model(ref).fitness
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("signum, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGHUP, 129, "SIGHUP")])
@pytest.mark.slow
def test_sigterm_and_sighup_stop_like_ctrl_c(tmp_path, signum, code, name):
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "run_config.py", *SMALL, "--out", str(out), "--generations", "100000"],
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_file(out / "log.csv", proc)
    time.sleep(0.2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"stopped by {name}; the run folder holds" in err and f"--resume {out}" in err
    assert "Traceback" not in err
    done = len(log_columns(out))
    resumed = run_script("run_config.py", "--resume", str(out), "--generations", str(done + 1))
    assert resumed.returncode == 0, resumed.stderr
    assert len(log_columns(out)) == done + 1


def test_signals_wait_for_the_end_of_a_write():
    done = []
    with pytest.raises(Stopped) as stopped, stop_signals():
        with deferred_signals():
            signal.raise_signal(signal.SIGHUP)
            done.append("write finished")
    assert done == ["write finished"] and exit_code(stopped.value) == 129
    with pytest.raises(KeyboardInterrupt), deferred_signals():
        signal.raise_signal(signal.SIGINT)
        done.append("again")
    assert done[-1] == "again"


# ---------------------------------------------------------------------------- non-finite fitness

def fixed_fitness(values: list[list[float]]):
    """An evaluator returning ``values[generation]`` (population 4)."""
    return lambda population, generation, progress: torch.tensor(values[generation], dtype=torch.float64)


def tiny_state(population: int = 4):
    config = load(ROOT / TINY, [f"ga.population_size={population}", "ga.num_survivors=2"])
    return training.new_run(config)


def test_nonfinite_fitness_is_counted_and_never_the_best(tmp_path):
    nan, inf = math.nan, math.inf
    values = [[nan, 1.0, inf, 3.0], [-inf, nan, 2.0, 0.5], [5.0, 1.0, 2.0, 0.0]]
    trainer = training.Trainer(tiny_state(), tmp_path, evaluator=fixed_fitness(values))
    rows = [trainer.run_generation() for _ in values]
    assert [r["nonfinite"] for r in rows] == [2, 2, 0]
    assert [(r["best"], r["mean"], r["median"], r["worst"]) for r in rows[:2]] == [(3.0, 2.0, 1.0, 1.0),
                                                                                   (2.0, 1.25, 0.5, 0.5)]
    assert [r["best_ever"] for r in rows] == [3.0, 3.0, 5.0]
    logged = io.read_log(tmp_path / "log.csv")
    assert [r["nonfinite"] for r in logged] == [2, 2, 0]
    assert all(math.isfinite(v) for r in logged for v in r.values())
    with (tmp_path / "log.csv").open() as f:
        assert f.readline().strip().endswith("individual_steps_per_s,nonfinite")


def test_first_generation_nan_never_becomes_best_ever(tmp_path):
    values = [[math.nan, math.nan, 1.0, math.nan], [0.5, 0.2, 0.1, 0.0]]
    trainer = training.Trainer(tiny_state(), tmp_path, evaluator=fixed_fitness(values))
    trainer.run_generation()
    trainer.run_generation()
    for name in ("best_model.yaml", "best_ever.yaml"):
        assert math.isfinite(yaml.safe_load((tmp_path / name).read_text())["fitness"])
    assert io.load_model(tmp_path / "best_ever.yaml").fitness == 1.0


def test_a_generation_without_a_finite_fitness_stops_the_run(tmp_path):
    trainer = training.Trainer(tiny_state(), tmp_path, evaluator=fixed_fitness([[1.0] * 4, [math.nan] * 4]))
    trainer.run_generation()
    before = (tmp_path / "log.csv").read_bytes()
    with pytest.raises(NonFiniteError, match="generation 1: the fitness of all 4 individuals is NaN or infinite"):
        trainer.run_generation()
    assert (tmp_path / "log.csv").read_bytes() == before and trainer.state.generation == 1


def test_all_nonfinite_is_one_line_from_the_script(tmp_path, capsys, monkeypatch):
    nan = fixed_fitness([[math.nan] * 20])
    monkeypatch.setattr(distributed.Context, "evaluator", lambda self, config: nan)
    code = run_main(run_config.main, [str(ROOT / TINY), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    last = err.rstrip("\n").split("\n")[-1]  # after the progress bar (redrawn with \r)
    assert code == 2 and err.count("error:") == 1 and "Traceback" not in err
    assert last.startswith("error: generation 0: the fitness of all 20 individuals is NaN or infinite")


# ---------------------------------------------------------------------------- recovery

@pytest.mark.slow
def test_run_killed_before_its_first_checkpoint_resumes(tmp_path):
    assert run_script("run_config.py", *SMALL, "--out", str(tmp_path / "ref"), "--generations", "2").returncode == 0
    out = tmp_path / "r"  # killed after writing config.yaml, in the middle of the first checkpoint
    out.mkdir()
    (out / "config.yaml").write_text((tmp_path / "ref" / "config.yaml").read_text())
    (out / ".checkpoint.pt.abc.tmp").write_bytes(b"partial")
    proc = run_script("run_config.py", "--resume", str(out))
    assert proc.returncode == 0, proc.stderr
    assert log_columns(out) == log_columns(tmp_path / "ref")
    assert not (out / ".checkpoint.pt.abc.tmp").exists()


@pytest.mark.slow
def test_resume_rewrites_a_log_left_behind_the_checkpoint(tmp_path):
    out = tmp_path / "r"
    assert run_script("run_config.py", *SMALL, "--out", str(out), "--generations", "3").returncode == 0
    full = (out / "log.csv").read_text()
    (out / "log.csv").write_text("".join(full.splitlines(keepends=True)[:-1]))  # killed before the log write
    proc = run_script("run_config.py", "--resume", str(out))
    assert proc.returncode == 0 and "nothing to do" in proc.stdout
    assert (out / "log.csv").read_text() == full


@pytest.mark.slow
def test_runs_of_older_versions_without_nonfinite_resume_and_plot(tmp_path):
    out = tmp_path / "r"
    assert run_script("run_config.py", *SMALL, "--out", str(out), "--generations", "2").returncode == 0
    checkpoint = io.load_checkpoint(out / training.CHECKPOINT)
    checkpoint["rows"] = [{k: v for k, v in row.items() if k != "nonfinite"} for row in checkpoint["rows"]]
    io.save_checkpoint(out / training.CHECKPOINT, checkpoint)
    old = io.log_text(checkpoint["rows"]).replace(",nonfinite", "").replace(",\n", "\n")
    (out / "log.csv").write_text(old)
    assert "nonfinite" not in (out / "log.csv").read_text()
    assert show_results.main([str(out), "--plot", str(tmp_path / "old.png")]) in (0, None)
    proc = run_script("run_config.py", "--resume", str(out), "--generations", "3")
    assert proc.returncode == 0, proc.stderr
    rows = io.read_log(out / "log.csv")
    assert [math.isnan(r["nonfinite"]) for r in rows] == [True, True, False]
    assert show_results.main([str(out), "--plot", str(tmp_path / "new.png")]) in (0, None)
    assert (tmp_path / "new.png").stat().st_size > 0
