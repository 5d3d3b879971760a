"""metarl.analysis.robustness and show_results.py --robustness: the grid, its settings, agreement with --evaluate, the
table, JSON and heat map end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from PIL import Image

from metarl.analysis import evaluation, robustness
from metarl.cli import show_results
from metarl.cli.main import run_main
from metarl.config import from_dict
from metarl.core.genome import GenomeLayout
from metarl.runs import io

MODEL = ROOT / "tests/data/seed_best_model.yaml"


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def tiny(**env: object):
    return from_dict({"env": {"init": "down", **env}, "actor": {"hidden": [4]},
                      "ga": {"population_size": 4, "num_survivors": 1, "lifetime_steps": 10},
                      "runtime": {"native": False}})


def test_each_axis_changes_one_setting_and_dt_keeps_the_simulated_time() -> None:
    config = tiny(goal_switch=4, episode_steps=5)
    points = robustness.grid(config, 10)
    assert points[0] == (robustness.BASE, None, config, 10)
    assert len(points) == 1 + sum(len(a.values) for a in robustness.AXES)
    cfg, steps = robustness.setting(config, "dt", 0.025, 10)
    assert (cfg.env.dt, steps, cfg.env.goal_switch, cfg.env.episode_steps) == (0.025, 20, 8, 10)
    ranged, _ = robustness.setting(tiny(goal_switch=[0, 4]), "dt", 0.025, 10)
    assert ranged.env.goal_switch == [0, 8]  # a drawn switch step: both ends of its range
    assert cfg.actor == config.actor and cfg.env.params == {}
    cfg, steps = robustness.setting(config, "length", 1.5, 10)
    assert cfg.env.params == {"length": 1.5} and steps == 10
    assert dataclasses.replace(cfg.env, params={}) == config.env
    double, _ = robustness.setting(from_dict({"env": {"name": "DoublePendulum", "params": {"mass1": 2.0}}}),
                                   "mass", 0.5, 10)
    assert double.env.params == {"mass1": 0.5, "mass2": 0.5}
    assert robustness.setting(config, "obs_noise", 0.03, 10)[0].env.obs_noise == 0.03
    assert robustness.setting(config, "max_torque", 3.0, 10)[0].env.max_torque == 3.0
    with pytest.raises(ValueError, match="unknown robustness axis"):
        robustness.setting(config, "colour", 1.0, 10)


def test_a_point_scores_what_evaluate_scores_on_the_same_keys() -> None:
    layout = GenomeLayout(1, 8)
    genome = layout.random(1, 0.5, torch.Generator().manual_seed(3))[0]
    config = tiny(goal=1, max_torque=2.0).replace(
        ga=dataclasses.replace(tiny().ga, antithetic="goal", evals_per_individual=2))
    config = config.replace(env=dataclasses.replace(config.env, obs_noise=0.02))
    full = evaluation.evaluate_rule(genome, layout, config, episodes=4, seed=5)
    keys = evaluation.evaluation_keys(5, 4)
    learned, reference, bal, _ = robustness.evaluate_point(genome, layout, config, keys=keys, steps=10)
    assert torch.equal(learned, full.fitness["learned"]) and torch.equal(reference, full.fitness["reference"])
    assert bal.shape == (4,)


@pytest.mark.slow
def test_robustness_report_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, plot = tmp_path / "r.json", tmp_path / "r.png"
    code = run_main(show_results.main, [str(MODEL), "--robustness", "--episodes", "2", "--steps", "6", "--set",
                                        "runtime.native=false", "--json", str(out), "--plot", str(plot)])
    text = capsys.readouterr().out
    assert code == 0
    # What every point varies from, as the model's config and --set give it (here: the model's own task).
    env = io.load_model(MODEL).config.env
    assert (f"\nbase (row model): {env.name}, params {env.params or 'default'}, sensor noise {env.obs_noise}, "
            f"dt {env.dt}, max torque {env.max_torque}, ") in text
    for axis in robustness.AXES:
        assert f"\n{axis.name} " in text
    data = json.loads(out.read_text())
    assert len(data["points"]) == 1 + sum(len(a.values) for a in robustness.AXES)
    dt_point = next(p for p in data["points"] if p["axis"] == "dt")
    assert dt_point["steps"] == 12 and data["settings"]["episodes"] == 2
    assert {"learned", "reference", "share", "balanced_fraction", "learned - reference"} <= set(dt_point)
    with Image.open(plot) as png:
        assert png.format == "PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.png"]


def test_table_and_heat_map_show_every_point(tmp_path: Path) -> None:
    def summary(mean: float) -> evaluation.Summary:
        return evaluation.Summary(mean, 1.0, 8)

    points = [robustness.Point(axis, value, 10, summary(2.0 * i), summary(10.0), summary(2.0 * i - 10.0), 0.5, 1.0)
              for i, (axis, value, _, _) in enumerate(robustness.grid(tiny(), 10))]
    points[1] = dataclasses.replace(points[1], reference=summary(0.0))  # a share that cannot be computed
    table = robustness.format_table(points, hidden_goal=True)
    assert table.count("\n") == len(points) + 1 and "n/a" in table and "goal +1 lifetimes" in table
    assert robustness.to_dict(points)["points"][2]["share"] == pytest.approx(0.4)
    from metarl.analysis import plots

    plots.save_figure(robustness.heatmap_figure(points), tmp_path / "h.png")
    with Image.open(tmp_path / "h.png") as png:
        assert png.format == "PNG" and png.size[0] > png.size[1] / 2


@pytest.mark.parametrize("args, message", [
    (["--robustness", "--evaluate"], "--robustness cannot be combined with --evaluate"),
    (["--robustness", "--save", "x.gif"], "--robustness cannot be combined with --save"),
    (["--robustness", "--episodes", "1"], "--episodes must be >= 2"),
])
def test_bad_robustness_options_are_one_line(args: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(show_results.main, [str(MODEL), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_robustness_needs_a_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "log.csv").write_text("generation,best\n0,1\n")
    assert run_main(show_results.main, [str(tmp_path), "--robustness"]) == 2
    assert "--robustness needs a MODEL.yaml" in capsys.readouterr().err
