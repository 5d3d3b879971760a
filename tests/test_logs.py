"""run_config.py's output for files and clusters (plain lines, --quiet, --log-every) and TensorBoard."""

from __future__ import annotations

import sys

import pytest
from conftest import TINY, run_root_script, run_script

from metarl.errors import UserError
from metarl.runs import logs


def gen_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("gen ")]


@pytest.mark.slow
def test_plain_lines_when_stdout_is_not_a_terminal(tmp_path):
    # run_script captures the output: no terminal, as under nohup or SLURM.
    proc = run_script("run_config.py", TINY, "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    lines = gen_lines(proc.stdout)
    assert [line.split()[1] for line in lines] == ["0/4", "1/4", "2/4", "3/4"]
    assert all("best" in line and "eta" in line for line in lines)
    assert "\r" not in proc.stdout + proc.stderr and "\x1b" not in proc.stdout + proc.stderr
    assert "generations:" not in proc.stderr  # no tqdm bar


def test_quiet_and_log_every(tmp_path):
    # In this process (run_config.py's own main; test_plain_lines_when_stdout_is_not_a_terminal runs the script).
    done = run_root_script("run_config.py", [TINY, "--out", str(tmp_path / "q"), "--quiet"])
    assert done.returncode == 0 and gen_lines(done.stdout) == [] and "done: 4 generations" in done.stdout
    done = run_root_script("run_config.py", [TINY, "--out", str(tmp_path / "e"), "--log-every", "3"])
    # every 3rd generation, and always the first and the last one
    assert done.returncode == 0 and [line.split()[1] for line in gen_lines(done.stdout)] == ["0/4", "2/4", "3/4"]
    done = run_root_script("run_config.py", [TINY, "--log-every", "0"])
    assert done.returncode == 2 and done.stderr.strip() == "error: --log-every must be >= 1, got 0 (see --help)"


def test_progress_lines_follow_the_reporting_interval(capsys):
    progress = logs.Progress(total=5, initial=0, steps_per_generation=10, every=2, stream=sys.stdout)
    row = {"best": 2.0, "mean": 1.0, "median": 1.0, "best_ever": 2.0, "individual_steps_per_s": 100.0}
    for g in range(5):
        assert progress.generation_started(g) is None  # no bars without a terminal
        progress.generation_done({**row, "generation": g})
    progress.close()
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()] == ["0/5", "1/5", "3/5", "4/5"]


def test_missing_tensorboard_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(UserError, match="needs the tensorboard package: pip install tensorboard"):
        logs.tensorboard_writer()


def test_tensorboard_missing_stops_before_writing(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        proc = run_script("run_config.py", TINY, "--out", str(tmp_path / "r"), "--tensorboard")
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("error: TensorBoard logging needs the tensorboard package")
        assert not (tmp_path / "r" / "log.csv").exists()
    else:
        pytest.skip("tensorboard is installed: the missing case is tested in-process only")


@pytest.mark.slow
def test_tensorboard_scalars_and_histograms(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "r"
    proc = run_script("run_config.py", TINY, "--out", str(out), "--set", "logging.tensorboard=true",
                      "--set", "logging.histogram_every=2")
    assert proc.returncode == 0, proc.stderr
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"histograms": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    assert {"fitness/best", "fitness/mean", "fitness/median", "fitness/worst",
            "throughput/individual_steps_per_s"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("fitness/best")] == [0, 1, 2, 3]
    assert [e.step for e in events.Histograms("population/genes")] == [0, 2]
