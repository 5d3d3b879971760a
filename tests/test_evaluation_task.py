"""The task a model is judged on: the ``evaluation`` section it records, every motor direction and goal training
drew, and what the plain ``show_results.py MODEL --evaluate`` prints (issue 44)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_script

from metarl import config as cfg_mod
from metarl.analysis import evaluation
from metarl.core.genome import GenomeLayout
from metarl.errors import ConfigError
from metarl.runs import io

TRAINING = {"seed": 0, "device": "cpu",
            "env": {"init": "down", "obs_noise": 0.05, "action_sign": "random",
                    "params": {"length": [0.8, 1.6], "mass": [0.8, 1.2]}},
            "actor": {"hidden": [4]},
            "ga": {"population_size": 4, "num_survivors": 1, "lifetime_steps": 20, "evals_per_individual": 2,
                   "antithetic": "goal"},
            "runtime": {"native": False, "threads": 1}}
TASK = {"env": {"obs_noise": 0.0, "goal_switch": None, "params": {"length": 1.0}}, "lifetime_steps": 12}


def save(tmp_path: Path, data: dict, name: str = "model.yaml") -> Path:
    config = cfg_mod.from_dict(data)
    layout = GenomeLayout(config.rule.signal_dim, config.rule.state_dim)
    genome = layout.random(1, 0.3, torch.Generator().manual_seed(0))[0]
    path = tmp_path / name
    io.save_model(path, genome, layout, config, fitness=1.0, generation=0, seed=0)
    return path


def evaluate(model: Path, out: Path, *args: str) -> tuple[str, dict]:
    result = run_script("show_results.py", str(model), "--evaluate", "--episodes", "4", "--json", str(out), *args)
    assert result.returncode == 0, result.stderr
    return result.stdout, json.loads(out.read_text())


def test_the_evaluation_section_makes_the_task_and_names_its_keys_in_errors() -> None:
    config = cfg_mod.from_dict({**TRAINING, "evaluation": TASK})
    task = cfg_mod.evaluation_task(config)
    assert task.env.obs_noise == 0.0 and task.env.params == {"length": 1.0, "mass": [0.8, 1.2]}
    assert task.ga.lifetime_steps == 12 and task.env.action_sign == "random"
    assert cfg_mod.evaluation_task(cfg_mod.from_dict(TRAINING)) == cfg_mod.from_dict(TRAINING)  # empty: as trained
    for bad, message in (({"env": {"obs_nose": 0}}, "evaluation.env.obs_nose: unknown key (did you mean 'obs_noise'"),
                         ({"env": {"obs_noise": -1}}, "evaluation.env.obs_noise: must be finite"),
                         ({"env": {"params": {"lenth": 1}}}, "evaluation.env.params.lenth: unknown parameter"),
                         ({"env": {"goal": "random"}}, "evaluation.env.goal: ga.antithetic: goal evaluates both"),
                         ({"lifetime_steps": 0}, "evaluation.lifetime_steps: must be an integer")):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            cfg_mod.from_dict({**TRAINING, "evaluation": bad})


def test_variants_cover_every_motor_direction_and_goal_training_drew() -> None:
    random_motor = cfg_mod.from_dict(TRAINING)
    assert evaluation.variants_of(random_motor) == [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    pairs = cfg_mod.from_dict({**TRAINING, "env": {"action_sign": -1}, "ga": {**TRAINING["ga"], "antithetic": True}})
    assert evaluation.variants_of(pairs) == [(None, -1), (None, 1)]
    fixed = cfg_mod.from_dict({**TRAINING, "env": {"action_sign": 1}, "ga": {**TRAINING["ga"], "antithetic": False}})
    assert evaluation.variants_of(fixed) == [(None, None)]


@pytest.mark.slow
def test_plain_evaluate_runs_the_recorded_task_and_set_still_overrides_it(tmp_path: Path) -> None:
    model = save(tmp_path, {**TRAINING, "evaluation": TASK})
    out, data = evaluate(model, tmp_path / "e.json")
    env = data["settings"]["env"]
    assert env["obs_noise"] == 0.0 and env["params"] == {"length": 1.0, "mass": [0.8, 1.2]}
    assert data["settings"]["steps"] == 12 and data["settings"]["motors"] == [1, -1]
    assert "task: Pendulum, params length 1.0, mass [0.8, 1.2], sensor noise 0.0" in out
    assert "motor +1 and -1, each episode with both" in out and "(the model's recorded evaluation task)" in out
    learned = data["conditions"]["learned"]
    assert set(learned["per_goal"]) == set(learned["per_motor"]) == {"+1", "-1"}
    both = [learned["per_motor"][m]["mean"] for m in ("+1", "-1")]
    assert learned["mean"] == pytest.approx(sum(both) / 2)
    # --set overrides the recorded task, and the record itself
    _, data = evaluate(model, tmp_path / "s.json", "--set", "env.obs_noise=0.02", "--set", "env.action_sign=-1")
    assert data["settings"]["env"]["obs_noise"] == 0.02 and data["settings"]["motors"] == []
    assert "per_motor" not in data["conditions"]["learned"]
    _, data = evaluate(model, tmp_path / "r.json", "--set", "evaluation.env.obs_noise=0.01")
    assert data["settings"]["env"]["obs_noise"] == 0.01 and data["settings"]["steps"] == 12
    # an old model (no evaluation section) is evaluated on its training task
    old = save(tmp_path, TRAINING, "old.yaml")
    out, data = evaluate(old, tmp_path / "o.json")
    assert data["settings"]["env"]["obs_noise"] == 0.05 and "(the model's training task)" in out


@pytest.mark.slow
@pytest.mark.long(40)
def test_quick_start_model_beats_no_plasticity_by_the_plain_command(tmp_path: Path) -> None:
    """The README's quick start, shortened: 10 generations of base.yaml, then plain ``--evaluate``. Training
    averages both motor directions; so does the evaluation (it once tested the motor +1 only: 0.23x)."""
    run = tmp_path / "run"
    result = run_script("run_config.py", "configs/base.yaml", "--generations", "10", "--out", str(run))
    assert result.returncode == 0, result.stderr
    out, data = evaluate(run / "best_model.yaml", tmp_path / "q.json", "--episodes", "16")
    learned, frozen = (data["conditions"][c]["mean"] for c in ("learned", "no_plasticity"))
    trained = io.load_model(run / "best_model.yaml").fitness
    assert learned > 5 * frozen and learned > 0.3 * trained, out
    assert data["ratio_learned_no_plasticity"] > 5 and data["settings"]["motors"] == [1, -1]


def test_shipped_models_record_the_task_their_results_table_row_is_judged_on() -> None:
    model = io.load_model(ROOT / "experiments/pendulum_reward_balance/model.yaml")
    task = cfg_mod.evaluation_task(model.config)
    assert task.env.obs_noise == 0 and task.env.goal_switch is None
    assert task.env.params == {"length": 1.0, "mass": 1.0, "damping": 0.1}
    assert model.config.env.obs_noise > 0 and model.config.env.goal_switch is not None  # its training mix


def test_reports_name_a_shipped_model_without_a_path_of_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    from metarl.cli.show_results import shown

    monkeypatch.chdir(ROOT)
    model = ROOT / "experiments/pendulum_swingup/model.yaml"
    assert shown(model, "pendulum_swingup") == "pendulum_swingup (experiments/pendulum_swingup/model.yaml)"
    assert shown(model, "experiments/pendulum_swingup/model.yaml") == "experiments/pendulum_swingup/model.yaml"


def test_a_random_motor_on_antithetic_pairs_says_the_evaluation_runs_both_already() -> None:
    done = run_script("show_results.py", "pendulum_swingup", "--evaluate", "--set", "env.action_sign=random")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ga.antithetic: True groups need a fixed env.action_sign")
    assert "--evaluate already runs every lifetime with both motor directions" in line
