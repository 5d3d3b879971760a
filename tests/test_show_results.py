"""show_results.py end to end (subprocesses on tiny lifetimes), its error messages and metarl.analysis.plots."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_in_process, run_script
from PIL import Image

from metarl.analysis import plots
from metarl.cli.main import run_main
from metarl.runs.io import load_model

SCRIPT = "show_results.py"


def load_script():
    """The program behind show_results.py (`metarl.cli.show_results`)."""
    return importlib.import_module("metarl.cli.show_results")


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # The scripts' batches are tiny here; on a shared machine extra threads only spin.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny GA run (a second or two)."""
    out = tmp_path_factory.mktemp("run") / "tiny"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        result = run_script("run_config.py", "configs/tiny.yaml", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def evaluate_json(model: Path, out: Path, *args: str) -> dict:
    """``show_results.py MODEL --evaluate --json OUT`` in this process (the script's own main: a process would
    spend most of its time importing torch; `test_shipped_model_replays_without_a_compiler` runs one)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = run_main(load_script().main, [str(model), "--evaluate", "--episodes", "8", "--steps", "20",
                                             "--json", str(out), *args])
    assert code == 0, stderr.getvalue()
    assert "learned / no_plasticity" in stdout.getvalue()
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_save_and_plot_replay_of_the_seed_model(tmp_path: Path, seed_files) -> None:
    _, model = seed_files
    result = run_script(SCRIPT, str(model), "--steps", "20", "--seed", "1", "--episodes", "8",
                        "--save", str(tmp_path / "r.gif"), "--plot", str(tmp_path / "r.png"))
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "r.gif") as gif:
        assert gif.n_frames > 1
        width, height = gif.size
        assert width > height  # environment and panels side by side
    with Image.open(tmp_path / "r.png") as png:
        assert png.format == "PNG" and min(png.size) > 300
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.gif", "r.png"]


@pytest.mark.slow
def test_run_folder_fitness_curve(tmp_path: Path, run_dir: Path) -> None:
    result = run_script(SCRIPT, str(run_dir), "--plot", str(tmp_path / "curve.png"))
    assert result.returncode == 0, result.stderr
    assert "4 generations" in result.stdout
    with Image.open(tmp_path / "curve.png") as png:
        assert png.format == "PNG"


@pytest.mark.slow
def test_evaluate_json_is_reproducible_for_a_seed(tmp_path: Path, seed_files) -> None:
    _, model = seed_files
    a = evaluate_json(model, tmp_path / "a.json", "--seed", "4")
    b = evaluate_json(model, tmp_path / "b.json", "--seed", "4")
    c = evaluate_json(model, tmp_path / "c.json", "--seed", "5")
    assert set(a["conditions"]) == {"learned", "no_plasticity", "reward_zeroed", "random_rule", "reward_shuffled",
                                    "reference"}
    for summary in a["conditions"].values():
        assert summary["n"] == 8 and summary["ci95"][0] <= summary["mean"] <= summary["ci95"][1]
        assert 0 <= summary["last_quarter_height"]["mean"] <= 2 and 0 <= summary["balanced_fraction"] <= 1
    assert a == b
    assert a["conditions"] != c["conditions"]
    assert a["model"] == str(model) and a["settings"]["episodes"] == 8 and a["settings"]["steps"] == 20
    assert isinstance(a["lifetime_gain"]["mean"], float)


@pytest.mark.slow
def test_evaluate_plots_height_per_condition_and_reports_each_goal(tmp_path: Path, run_dir: Path) -> None:
    data = evaluate_json(run_dir / "best_model.yaml", tmp_path / "g.json", "--set", "env.reward=spin",
                         "--set", "ga.antithetic=goal", "--set", "ga.evals_per_individual=2",
                         "--plot", str(tmp_path / "h.png"))
    assert set(data["conditions"]["learned"]["per_goal"]) == {"+1", "-1"}
    assert data["conditions"]["reward_zeroed"]["mean"] == 0.0  # blind to the goal: the two cancel exactly
    with Image.open(tmp_path / "h.png") as png:
        assert png.format == "PNG"


@pytest.mark.slow
def test_rescore_picks_the_best_elite_on_held_out_lifetimes(tmp_path: Path, run_dir: Path) -> None:
    import shutil

    from metarl.analysis import evaluation
    from metarl.evolve import trainer as training
    from metarl.runs.io import load_model

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    result = run_script(SCRIPT, str(run), "--rescore", "3", "--episodes", "4")
    assert result.returncode == 0, result.stderr
    model = load_model(run / "rescored_model.yaml")
    state = training.load_run(run)
    scores = evaluation.rescore(state.population[:3], model.layout, state.config, episodes=4, seed=0)
    assert model.fitness == pytest.approx(float(scores.max()))
    assert torch.equal(model.genome, state.population[int(scores.argmax())])
    assert model.generation == state.generation - 1
    bad = run_script(SCRIPT, str(run), "--rescore", "999")
    assert bad.returncode == 2 and "--rescore" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_rescore_of_snapshots_picks_the_best_of_the_last_k(tmp_path: Path, run_dir: Path) -> None:
    import shutil

    from metarl.analysis import evaluation
    from metarl.evolve import trainer as training

    run = tmp_path / "snap"
    made = run_script("run_config.py", "configs/tiny.yaml", "--out", str(run), "--set", "logging.snapshot_every=1")
    assert made.returncode == 0, made.stderr
    snapshots = sorted((run / "snapshots").glob("gen_*.yaml"))
    assert len(snapshots) == 4
    result = run_script(SCRIPT, str(run), "--rescore", "3", "--snapshots", "--episodes", "4")
    assert result.returncode == 0, result.stderr
    assert "the last 3 snapshots (generations 1-3)" in result.stdout
    model = load_model(run / "rescored_model.yaml")
    config = training.load_run(run).config
    genomes = torch.stack([load_model(p).genome for p in snapshots[1:]])
    scores = evaluation.rescore(genomes, model.layout, config, episodes=4, seed=0)
    best = int(torch.argsort(scores, descending=True, stable=True)[0])
    assert torch.equal(model.genome, genomes[best])
    assert model.generation == best + 1 and model.fitness == pytest.approx(float(scores[best]))
    (run / "rescored_model.yaml").unlink()
    without = tmp_path / "plain"
    shutil.copytree(run_dir, without)
    for args, says in (([str(run), "--rescore", "5", "--snapshots"], "--rescore must be in [1, 4] with --snapshots"),
                       ([str(run), "--snapshots"], "--snapshots goes with --rescore K"),
                       ([str(without), "--rescore", "1", "--snapshots"], "no snapshots to rescore")):
        bad = run_script(SCRIPT, *args)
        assert bad.returncode == 2 and says in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    assert not (run / "rescored_model.yaml").exists() and not (without / "rescored_model.yaml").exists()


@pytest.mark.slow
def test_evaluate_other_actor_size_and_overrides(tmp_path: Path, run_dir: Path) -> None:
    data = evaluate_json(run_dir / "best_model.yaml", tmp_path / "e.json", "--hidden", "16,16",
                         "--set", "env.params.length=[0.7,1.3]")
    assert data["settings"]["hidden"] == [16, 16]
    assert data["settings"]["env"]["params"]["length"] == [0.7, 1.3]
    assert data["settings"]["overrides"] == ["env.params.length=[0.7,1.3]"]
    assert all(s["n"] == 8 for s in data["conditions"].values())


@pytest.mark.slow
def test_missing_file_is_one_line_without_traceback(tmp_path: Path) -> None:
    result = run_script(SCRIPT, str(tmp_path / "nope.yaml"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope.yaml'}: no such model file or run folder"]


BAD_INPUTS = {
    "not a model": (["{model_dir}/not_model.yaml"], "not a saved model"),
    "corrupt yaml": (["{model_dir}/corrupt.yaml"], "not a readable YAML"),
    "incompatible cells": (["{model_dir}/wrong_cells.yaml"], "corrupt rule cells"),
    "run dir without log": (["{model_dir}"], "no log.csv"),
    "bad --hidden": (["{model}", "--evaluate", "--hidden", "16,x"], "--hidden"),
    "zero --hidden": (["{model}", "--hidden", "0"], "--hidden"),
    "--evaluate on a run dir": (["{run_dir}", "--evaluate"], "needs a MODEL.yaml"),
    "--save format": (["{model}", "--save", "out.mp4"], ".gif"),
    "--plot format": (["{model}", "--plot", "out.xyz"], "unsupported figure format"),
    "unknown --set key": (["{model}", "--evaluate", "--set", "env.bogus=1"], "env.bogus"),
    "bad --steps": (["{model}", "--steps", "0"], "--steps"),
    "bad int": (["{model}", "--episodes", "many"], "--episodes"),
    "--json without --evaluate": (["{model}", "--json", "x.json"], "--json"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_line(case: str, tmp_path: Path, run_dir: Path, seed_files,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    _, model = seed_files
    (tmp_path / "not_model.yaml").write_text("a: 1\nb: [2, 3]\n")
    (tmp_path / "corrupt.yaml").write_text("actor: {reward_network: [1, 2\n")
    text = model.read_text().replace("b_output: [[0.01974194310605526]]", "b_output: [[0.1, 0.2, 0.3]]")
    (tmp_path / "wrong_cells.yaml").write_text(text)
    args, expected = BAD_INPUTS[case]
    argv = [a.format(model=model, model_dir=tmp_path, run_dir=run_dir) for a in args]
    assert run_main(load_script().main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err


# ---------------------------------------------------------------------------- window and plots

@pytest.mark.slow
def test_live_window_replays_lifetimes_until_closed(monkeypatch: pytest.MonkeyPatch, seed_files,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _, model = seed_files
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    script = load_script()
    lifetimes, polls = [], iter(range(25))
    new_lifetime = script.new_lifetime

    def counting(*args):
        lifetimes.append(args[-1])
        return new_lifetime(*args)

    monkeypatch.setattr(script, "new_lifetime", counting)
    # The dummy driver's window is refused (nobody could close it): this one "closes" after 25 frames.
    import pygame

    def window(width: int, height: int, instead: str, endless: bool) -> pygame.Surface:
        pygame.display.init()
        return pygame.display.set_mode((width, height))

    monkeypatch.setattr(script, "open_window", window)
    # "Close the window" after 25 frames: two full lifetimes of 10 steps and part of a third.
    # A tiny dt makes the real-time frame rate high, so the test does not wait.
    monkeypatch.setattr(script, "window_open", lambda: next(polls, None) is not None)
    monkeypatch.setattr(script, "LIVE_PANEL_EVERY", 3)
    assert run_main(script.main, [str(model), "--steps", "10", "--seed", "2", "--set", "env.dt=0.001"]) == 0
    assert lifetimes == [0, 1, 2]
    assert "seed 2" in capsys.readouterr().out


@pytest.mark.slow
def test_live_replay_under_a_dummy_video_driver_is_one_line(tmp_path: Path) -> None:
    # SDL_VIDEODRIVER=dummy (asked for, as scripts and CI do) draws nowhere: the endless replay would loop unseen.
    done = run_script("show_results.py", "experiments/pendulum_swingup/model.yaml", cwd=ROOT,
                      env={"SDL_VIDEODRIVER": "dummy"})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot open a window (SDL_VIDEODRIVER=dummy"), lines
    assert "--save" in lines[0]


@pytest.mark.slow
def test_replay_panels_render_at_the_requested_size(seed_files) -> None:
    _, model_path = seed_files
    model = load_model(model_path)
    script = load_script()
    life = script.new_lifetime(model, model.config, model.config.layer_sizes, 0, 0)
    panels = plots.ReplayPanels(300, 200, steps=5, weight_limit=4.0, sigma_limit=1.0)
    panels.reset(life.actor, "test")
    first = panels.update([], life.actor)
    rewards = [float(life.step()[0]) for _ in range(5)]
    last = panels.update(rewards, life.actor)
    assert first.shape == last.shape == (200, 300, 3) and last.dtype == np.uint8
    assert not np.array_equal(first, last)


def test_fitness_curve_has_the_four_curves() -> None:
    rows = [{"generation": g, "best": 3.0 + g, "mean": 1.0 + g, "median": 1.5 + g, "worst": 0.0,
             "best_ever": 3.0 + g} for g in range(5)]
    fig = plots.fitness_curve_figure(rows, title="run")
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert sorted(labels) == ["best", "best ever", "mean", "median"]
    assert plots.figure_to_array(fig).ndim == 3


def test_actor_values_pool_layers_and_individuals(seed_files) -> None:
    _, model_path = seed_files
    model = load_model(model_path)
    script = load_script()
    life = script.new_lifetime(model, model.config, [3, 5, 1], 0, 0)
    assert plots.actor_values(life.actor, "weights").shape == (3 * 5 + 5 * 1,)
    assert plots.actor_values(life.actor, "sigmas").tolist() == [0.0] * 6
    assert torch.is_tensor(life.actor.weights[0])


# ---------------------------------------------------------------------------- several runs, no compiler

@pytest.mark.slow
def test_several_runs_in_one_figure(tmp_path: Path, run_dir: Path) -> None:
    # The two extra runs in this process (run_config.py's own main).
    other_seed, other_config, tiny = tmp_path / "seed5", tmp_path / "longer", ROOT / "configs/tiny.yaml"
    assert run_in_process([str(tiny), "--out", str(other_seed), "--seed", "5", "--quiet"])[0] == 0
    assert run_in_process([str(tiny), "--out", str(other_config), "--quiet", "--set", "ga.lifetime_steps=40"])[0] == 0
    result = run_script(SCRIPT, str(run_dir), str(other_seed), str(other_config), "--plot", str(tmp_path / "runs.png"))
    assert result.returncode == 0, result.stderr
    # The two seeds of one config are one curve; the other config is another.
    assert result.stdout.strip() == f"wrote {tmp_path / 'runs.png'} (tiny (2 runs), longer (1 run))"
    with Image.open(tmp_path / "runs.png") as png:
        assert png.format == "PNG"
    model = run_script(SCRIPT, str(run_dir), str(run_dir / "best_model.yaml"), "--plot", str(tmp_path / "x.png"))
    assert model.returncode == 2 and "several paths must all be run folders" in model.stderr


@pytest.mark.slow
def test_run_folder_without_plot_and_without_a_display_says_so(run_dir: Path) -> None:
    result = run_script(SCRIPT, str(run_dir))  # MPLBACKEND=Agg: no window can open
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: no window can open here (matplotlib backend agg); write the figure "
                                     "with --plot curve.png")


@pytest.mark.slow
@pytest.mark.long(31)
def test_shipped_model_replays_without_a_compiler(tmp_path: Path) -> None:
    model = ROOT / "experiments" / "pendulum_swingup" / "model.yaml"
    assert load_model(model).config.runtime.native is True  # a training choice, not needed to replay
    no_compiler = {"CXX": "/nonexistent/c++", "METARL_CACHE": str(tmp_path / "cache")}
    result = run_script(SCRIPT, str(model), "--steps", "20", "--seed", "1", "--save", str(tmp_path / "r.png"),
                        env=no_compiler)
    assert result.returncode == 0, result.stderr
    assert f"wrote {tmp_path / 'r.png'} (the last of 20 steps)" in result.stdout  # a still: one frame drawn
    assert result.stderr.strip().splitlines() == ["warning: native lifetime kernel not used (the C++ compiler "
                                                  "CXX=/nonexistent/c++ was not found); using the torch step"]
    evaluated = run_script(SCRIPT, str(model), "--evaluate", "--episodes", "4", "--steps", "20", env=no_compiler)
    assert evaluated.returncode == 0, evaluated.stderr


@pytest.mark.slow
def test_no_display_is_one_line_instead_of_an_endless_unseen_replay(tmp_path: Path) -> None:
    # Without --save or --plot and no display, the live replay would run forever where nobody sees it.
    from conftest import NO_DISPLAY

    done = run_script("show_results.py", "experiments/pendulum_swingup/model.yaml", env=NO_DISPLAY, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot open a window"), done.stderr
    assert "--save" in lines[0] and "--plot" in lines[0]
