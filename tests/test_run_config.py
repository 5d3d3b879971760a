"""run_config.py end to end: run folder, reproducibility, resume, Ctrl-C, bad input, memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import ROOT, TINY, fitness_columns, run_in_process, run_script, wait_for_file

from metarl.runs import io


def run_ok(*args, **kw):
    proc = run_script("run_config.py", *args, **kw)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.slow
def test_run_folder_contents(tmp_path):
    out = tmp_path / "run"
    proc = run_ok(TINY, "--out", str(out))
    assert "gen     3" in proc.stdout
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "log.csv", "best_model.yaml", "checkpoint.pt"}
    rows = io.read_log(out / "log.csv")
    assert [r["generation"] for r in rows] == [0, 1, 2, 3]
    assert all(r["best"] >= r["median"] >= r["worst"] for r in rows)
    assert all(r["best_ever"] == max(x["best"] for x in rows[: i + 1]) for i, r in enumerate(rows))
    model = io.load_model(out / "best_model.yaml")
    assert model.generation == 3 and model.fitness == pytest.approx(rows[-1]["best"])
    assert model.config.ga.population_size == 20


@pytest.mark.slow
def test_same_seed_same_log_and_other_seed_differs(tmp_path):
    run_ok(TINY, "--out", str(tmp_path / "a"))  # one run in a process of its own, the others in this one
    assert run_in_process([str(ROOT / TINY), "--out", str(tmp_path / "b"), "--quiet"])[0] == 0
    assert run_in_process([str(ROOT / TINY), "--out", str(tmp_path / "c"), "--seed", "2", "--quiet"])[0] == 0
    assert fitness_columns(tmp_path / "a") == fitness_columns(tmp_path / "b")
    assert fitness_columns(tmp_path / "a") != fitness_columns(tmp_path / "c")


@pytest.mark.slow
def test_resume_equals_uninterrupted_run(tmp_path):
    assert run_in_process([str(ROOT / TINY), "--out", str(tmp_path / "full"), "--generations", "6", "--quiet"])[0] == 0
    assert run_in_process([str(ROOT / TINY), "--out", str(tmp_path / "half"), "--generations", "3", "--quiet"])[0] == 0
    proc = run_ok("--resume", str(tmp_path / "half"), "--generations", "6")
    assert "gen     3" in proc.stdout and "gen     0" not in proc.stdout
    assert fitness_columns(tmp_path / "full") == fitness_columns(tmp_path / "half")
    assert yaml.safe_load((tmp_path / "half" / "config.yaml").read_text())["ga"]["generations"] == 6
    done = run_ok("--resume", str(tmp_path / "half"))
    assert "nothing to do" in done.stdout


@pytest.mark.slow
def test_null_seed_is_drawn_and_recorded(tmp_path):
    run_ok(TINY, "--out", str(tmp_path / "r"), "--set", "seed=null", "--generations", "1")
    seed = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["seed"]
    assert isinstance(seed, int)


@pytest.mark.slow
def test_original_flat_config_runs(tmp_path, seed_files):
    base, _ = seed_files
    proc = run_ok(str(base), "--out", str(tmp_path / "r"), "--set", "population_size=8", "--set", "num_survivors=2",
                  "--set", "num_eval_steps=10", "--generations", "1", "--seed", "0")
    assert "CUDA is not available" in proc.stderr or "cuda" not in proc.stdout
    assert len(fitness_columns(tmp_path / "r")) == 1


@pytest.mark.slow
def test_ctrl_c_keeps_checkpoint_and_resumes(tmp_path):
    out = tmp_path / "r"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "run_config.py", TINY, "--out", str(out), "--generations", "200",
                             "--set", "ga.population_size=100", "--set", "ga.lifetime_steps=100"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_file(out / "log.csv", proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err and f"--resume {out}" in err
    done = len(fitness_columns(out))
    assert done >= 1
    resumed = run_script("run_config.py", "--resume", str(out), "--generations", str(done + 1))
    assert resumed.returncode == 0, resumed.stderr
    assert len(fitness_columns(out)) == done + 1


@pytest.mark.parametrize("args, message", [
    (["configs/does_not_exist.yaml"], "no such file"),
    ([TINY, "--set", "ga.num_survivors=50"], "ga.num_survivors"),
    ([TINY, "--set", "ga.populaton_size=5"], "did you mean 'population_size'"),
    ([TINY, "--set", "env.dt=0"], "env.dt"),
    ([TINY, "--set", "env.name=Cartpole"], "env.name"),
    ([TINY, "--set", "nonsense"], "--set nonsense"),
    (["--resume", "/nonexistent/run"], "no such run folder"),
])
def test_bad_input_one_line_no_traceback(tmp_path, monkeypatch, args, message):
    # In this process (the script's own main; the first case also as a process, below): each case is an
    # error before any work, and a process would spend its 2.5 s importing torch.
    monkeypatch.chdir(ROOT)
    argv = [*args, "--out", str(tmp_path / "x")] if args[0] != "--resume" else list(args)
    code, err = run_in_process(argv)
    assert code != 0
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_bad_input_is_one_line_from_the_script_too(tmp_path):
    proc = run_script("run_config.py", TINY, "--set", "ga.populaton_size=5", "--out", str(tmp_path / "x"),
                      real_process=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "did you mean 'population_size'" in lines[0]
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_native_kernel_without_compiler(tmp_path):
    no_compiler = {"CXX": "/nonexistent/c++", "METARL_CACHE": str(tmp_path / "cache")}
    proc = run_script("run_config.py", TINY, "--out", str(tmp_path / "x"), "--set", "runtime.native=true",
                      env=no_compiler)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("error: runtime.native is true but the native kernel cannot run: "
                                   "the C++ compiler CXX=/nonexistent/c++ was not found")
    assert not (tmp_path / "x" / "checkpoint.pt").exists()
    # Auto (the default): one warning, then the torch step.
    proc = run_script("run_config.py", TINY, "--out", str(tmp_path / "y"), "--generations", "1", env=no_compiler)
    assert proc.returncode == 0, proc.stderr
    assert "warning: native lifetime kernel not used" in proc.stderr and "step: spec" in proc.stdout


@pytest.mark.slow
def test_bad_yaml_and_usage_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ga: [unclosed\n")
    proc = run_script("run_config.py", str(bad))
    assert proc.returncode == 2 and "invalid YAML" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_script("run_config.py")
    assert proc.returncode == 2 and "CONFIG" in proc.stderr
    proc = run_script("run_config.py", TINY, "--generations", "0")
    assert proc.returncode == 2 and "--generations" in proc.stderr


@pytest.mark.slow
def test_existing_run_is_not_overwritten(tmp_path):
    out = tmp_path / "r"
    run_ok(TINY, "--out", str(out), "--generations", "1")
    before = (out / "log.csv").read_bytes()
    proc = run_script("run_config.py", TINY, "--out", str(out))
    assert proc.returncode == 2 and "--resume" in proc.stderr
    assert (out / "log.csv").read_bytes() == before


@pytest.mark.slow
def test_corrupt_checkpoint_is_reported(tmp_path):
    out = tmp_path / "r"
    run_ok(TINY, "--out", str(out), "--generations", "1")
    (out / "checkpoint.pt").write_bytes(b"garbage")
    proc = run_script("run_config.py", "--resume", str(out))
    assert proc.returncode == 2 and "corrupt checkpoint" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_population_10000_generation_under_1gb(tmp_path):
    code = (
        "import sys, runpy; sys.argv = ['run_config.py', 'configs/original.yaml', '--out', sys.argv[1], "
        "'--device', 'cpu', '--generations', '1', '--set', 'ga.lifetime_steps=5']\n"
        "try:\n    runpy.run_path('run_config.py', run_name='__main__')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        # VmHWM, this program's own peak: ru_maxrss keeps the parent's peak across fork and exec (a pytest
        # worker that has grown to 1.1 GB read as this program's 1.1 GB).
        "print('PEAK_KB', next(int(ln.split()[1]) for ln in open('/proc/self/status') if ln.startswith('VmHWM')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr
    peak_kb = int(proc.stdout.split("PEAK_KB")[1])
    assert peak_kb < 1024 * 1024, f"peak RSS {peak_kb / 1024:.0f} MiB; {proc.stdout[-400:]} {proc.stderr[-400:]}"
    assert len(fitness_columns(tmp_path / "r")) == 1
