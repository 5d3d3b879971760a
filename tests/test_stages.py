"""Multi-stage configs (``stages:``, `metarl.evolve.stages`): one command and one run folder for a curriculum, each
stage warm-started from the model the stage before it shipped, resumable across stages; hostile stage lists."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import ROOT, fitness_columns, run_in_process, run_script, wait_for_file

from metarl.cli import show_results
from metarl.cli.main import run_main
from metarl.evolve import stages
from metarl.evolve import trainer as training
from metarl.runs import io

# Two stages x 2 generations, population 12, 20-step lifetimes; the second stage antithetic and rescored.
BASE = {"seed": 3, "device": "cpu", "env": {"name": "Pendulum", "max_torque": 2.0},
        "actor": {"hidden": [4], "learning_rate": 0.03},
        "ga": {"population_size": 12, "num_survivors": 3, "generations": 2, "lifetime_steps": 20,
               "evals_per_individual": 2, "mutation_probability": 0.05, "common_random_numbers": True},
        "runtime": {"threads": 1}}
STAGES = [{"name": "one", "env": {"init": "near_up"}},
          {"name": "two", "seed": 5, "ga.antithetic": True, "rescore": 2}]


def write_config(tmp_path, stage_list=None, **base):
    path = tmp_path / "stages.yaml"
    path.write_text(yaml.safe_dump({**BASE, **base, "stages": STAGES if stage_list is None else stage_list}))
    return path


def run(args):
    code, err = run_in_process([str(a) for a in args])
    return code, err


def outputs(run_dir):
    """Everything that a stop and resume must reproduce: both stages' logs and the shipped models' genomes."""
    models = [run_dir / "one" / "best_model.yaml", run_dir / "two" / "rescored_model.yaml", run_dir / "model.yaml"]
    return ([fitness_columns(run_dir / name) for name in ("one", "two")],
            [io.load_model(m).genome.tolist() for m in models], io.load_model(run_dir / "model.yaml").fitness)


def test_one_command_runs_every_stage_into_one_folder(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "run"
    code, err = run([config, "--out", out, "--quiet"])
    assert code == 0, err
    assert {p.name for p in out.iterdir()} >= {"stages.yaml", "one", "two", "model.yaml"}
    one, two = (training.load_run(out / name) for name in ("one", "two"))
    assert one.generation == two.generation == 2
    assert one.config.env.init == "near_up" and one.config.seed == 3 and one.config.ga.init_model is None
    assert two.config.env.init == "up" and two.config.seed == 5 and two.config.ga.antithetic is True
    # Stage two starts from stage one's best_model.yaml; the run ships stage two's rescored elite.
    assert two.config.ga.init_model == str(out / "one" / "best_model.yaml")
    assert (out / "model.yaml").read_text() == (out / "two" / "rescored_model.yaml").read_text()
    # RUN/stages.yaml reads back to the same stages.
    recorded = stages.load_run(out)
    assert [(s.name, s.config, s.rescore) for s in recorded] == \
        [(s.name, s.config, s.rescore) for s in stages.load(config, out)]


@pytest.mark.slow
def test_each_stage_is_what_the_separate_commands_give(tmp_path):
    """The curriculum as one command = the old recipe: each stage's config run alone, warm-started by hand
    from the previous stage's model, then show_results.py --rescore."""
    config = write_config(tmp_path)
    out = tmp_path / "run"
    assert run([config, "--out", out, "--quiet"])[0] == 0
    plan = stages.load(config, out)
    prev = None
    for stage in plan:
        alone = tmp_path / f"alone_{stage.name}"
        cfg = stage.config
        if prev is not None:
            cfg = cfg.replace(ga=cfg.ga.__class__(**{**cfg.ga.__dict__, "init_model": str(prev)}))
        path = tmp_path / f"{stage.name}.yaml"
        path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        assert run([path, "--out", alone, "--quiet"])[0] == 0
        assert fitness_columns(alone) == fitness_columns(out / stage.name)
        prev = alone / "best_model.yaml"
    assert run_main(show_results.main, [str(tmp_path / "alone_two"), "--rescore", "2"]) == 0
    assert torch.equal(io.load_model(tmp_path / "alone_two" / "rescored_model.yaml").genome,
                       io.load_model(out / "model.yaml").genome)


def test_ship_snapshot_warm_starts_from_the_last_generation_s_snapshot(tmp_path):
    # CMA-ES: the snapshot is the distribution's mean, which best_model.yaml (the best sample) is not.
    stage_list = [{"name": "one", "ship": "snapshot"}, {"name": "two", "seed": 5, "ship": "snapshot"}]
    config = write_config(tmp_path, stage_list, search={"name": "cma", "sigma0": 0.02},
                          logging={"snapshot_every": 5})
    out = tmp_path / "run"
    code, err = run([config, "--out", out, "--quiet"])
    assert code == 0, err
    snapshot = out / "one" / "snapshots" / "gen_000001.yaml"  # the last of 2 generations (every 5: only it)
    assert training.load_run(out / "two").config.ga.init_model == str(snapshot)
    assert not torch.equal(io.load_model(snapshot).genome, io.load_model(out / "one" / "best_model.yaml").genome)
    assert (out / "model.yaml").read_text() == (out / "two" / "snapshots" / "gen_000001.yaml").read_text()
    assert [s.ship for s in stages.load_run(out)] == ["snapshot", "snapshot"]  # recorded in stages.yaml


def test_command_line_overrides_apply_to_every_stage(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "run"
    code, err = run([config, "--out", out, "--quiet", "--generations", "1", "--set", "actor.learning_rate=0.02"])
    assert code == 0, err
    for name in ("one", "two"):
        state = training.load_run(out / name)
        assert state.generation == 1 and state.config.actor.learning_rate == 0.02


@pytest.fixture
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    config = write_config(tmp)
    assert run([config, "--out", tmp / "run", "--quiet"])[0] == 0
    return config, outputs(tmp / "run")


@pytest.mark.parametrize("stop_at", [pytest.param(1, marks=pytest.mark.slow), 2,
                                     pytest.param(3, marks=pytest.mark.slow), pytest.param(4, marks=pytest.mark.slow)])
def test_a_stop_anywhere_then_resume_gives_the_uninterrupted_run(tmp_path, monkeypatch, reference,
                                                                 stop_at):
    """Stopped before generation ``stop_at`` of the whole run (2: at the stage boundary, stage two's
    generation 0 checkpoint written, 4: after the last generation, before the rescore), resumed."""
    config, want = reference
    out = tmp_path / "run"
    calls = {"n": 0}
    real_generation, real_ship = training.Trainer.run_generation, stages.ship

    def generation(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == stop_at + 1:
            raise KeyboardInterrupt
        return real_generation(self, *a, **k)

    def ship(stage, *a, **k):
        if stage.rescore and stop_at == 4:
            raise KeyboardInterrupt
        return real_ship(stage, *a, **k)

    monkeypatch.setattr(training.Trainer, "run_generation", generation)
    monkeypatch.setattr(stages, "ship", ship)
    code, err = run([config, "--out", out, "--quiet"])
    assert code == 130 and f"--resume {out}" in err.replace("\n", " ") or stop_at == 4
    assert not (out / "model.yaml").exists()
    monkeypatch.undo()
    code, err = run(["--resume", out, "--quiet"])
    assert code == 0, err
    assert outputs(out) == want
    assert run(["--resume", out, "--quiet"])[0] == 0  # complete: nothing changes
    assert outputs(out) == want


def test_a_lost_stage_folder_and_model_are_made_again(tmp_path, reference):
    config, want = reference
    out = tmp_path / "run"
    assert run([config, "--out", out, "--quiet"])[0] == 0
    for name in ("two/checkpoint.pt", "two/log.csv", "two/rescored_model.yaml", "model.yaml"):
        (out / name).unlink()
    assert run(["--resume", out, "--quiet"])[0] == 0
    assert outputs(out) == want


@pytest.mark.slow
@pytest.mark.long(23)
def test_kill_9_in_the_second_stage_then_resume(tmp_path):
    config = write_config(tmp_path)
    longer = ["--quiet", "--generations", "4", "--set", "ga.lifetime_steps=5000"]  # ~0.1 s a generation
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "run_config.py", str(config), "--out", str(out), *longer], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_file(out / "two" / "log.csv", proc)  # stage two has completed a generation
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model.yaml").exists()
    resumed = run_script("run_config.py", "--resume", str(out), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = run_script("run_config.py", str(config), "--out", str(tmp_path / "ref"), *longer)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    assert outputs(out) == outputs(tmp_path / "ref")


# ---------------------------------------------------------------------------- hostile stage lists

HOSTILE = [
    ([], "stages: expected a non-empty list"),
    (5, "stages: expected a non-empty list"),
    ([3], "stages[0]: expected a mapping"),
    ([{"ga": {"generations": 2}}], "stages[0].name: expected a folder name"),
    ([{"name": "../up"}], "stages[0].name: expected a folder name"),
    ([{"name": "tensorboard"}], "stages[0].name"),
    ([{"name": "stages.yaml"}], "stages[0].name: expected a folder name"),
    ([{"name": "a"}, {"name": "a"}], "stages[1] (a).name: 'a' names two stages"),
    ([{"name": "a", "gaa": {"generations": 2}}], "stages[0] (a): gaa: not a stage key (did you mean 'ga'?)"),
    ([{"name": "a", "device": "cpu"}], "stages[0] (a): device: not a stage key (the device is the run's"),
    ([{"name": "a"}, {"name": "b", "ga": {"generations": 0}}], "stages[1] (b): ga.generations: must be an integer"),
    ([{"name": "a"}, {"name": "b", "ga.generations": -1}], "stages[1] (b): ga.generations: must be an integer"),
    ([{"name": "a", "env": {"init": "sideways"}}], "stages[0] (a): env.init: unknown value 'sideways'"),
    ([{"name": "a", "ga": 5}], "stages[0] (a): ga: expected a mapping of the stage's overrides, got 5"),
    ([{"name": "a", "ga": None}], "stages[0] (a): ga: expected a mapping of the stage's overrides, got None"),
    ([{"name": "a", "ga": {"bogus": 1}}], "stages[0] (a): ga.bogus: unknown key"),
    ([{"name": "a", "ga.": 1}], "stages[0] (a): ga.: not a key"),
    ([{"name": "a", "ga": {"generations": 2}, "ga.generations": 3}], "stages[0] (a): ga.generations: given twice"),
    ([{"name": "a"}, {"name": "b", "ga": {"init_model": "x.yaml"}}],
     "stages[1] (b): ga.init_model: a later stage starts from the model the stage before it ships"),
    ([{"name": "a", "ga": {"init_model": "no_such_model.yaml"}}], "stages[0] (a): ga.init_model:"),
    ([{"name": "a", "rescore": 0}], "stages[0] (a).rescore: must be an integer in [1, ga.num_survivors=3]"),
    ([{"name": "a", "rescore": 4}], "stages[0] (a).rescore: must be an integer in [1, ga.num_survivors=3]"),
    ([{"name": "a", "rescore": True}], "stages[0] (a).rescore: must be an integer"),
    ([{"name": "a", "rescore": "5"}], "stages[0] (a).rescore: must be an integer"),
    ([{"name": "a", "ga": {"antithetic": True, "evals_per_individual": 3}}],
     "stages[0] (a): ga.antithetic: needs an even evals_per_individual"),
    ([{"name": f"s{i}"} for i in range(101)], "stages: at most 100 stages"),
    ([{"name": "a", "ship": "mean"}], "stages[0] (a).ship: must be one of best, snapshot, got 'mean'"),
    ([{"name": "a", "ship": "snapshot"}], "stages[0] (a).ship: snapshot needs logging.snapshot_every"),
    ([{"name": "a", "ship": "snapshot", "rescore": 2, "logging.snapshot_every": 1}],
     "stages[0] (a): rescore and ship: snapshot are two ways"),
]


@pytest.mark.parametrize(("stage_list", "message"), HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_hostile_stage_lists_are_one_line_and_write_nothing(tmp_path, stage_list, message):
    config = write_config(tmp_path, stage_list)
    out = tmp_path / "run"
    code, err = run([config, "--out", out, "--quiet"])
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert message in err, err
    assert not out.exists()


def test_a_flat_base_is_refused(tmp_path):
    path = tmp_path / "flat.yaml"
    path.write_text(yaml.safe_dump({"population_size": 10, "stages": [{"name": "a"}]}))
    code, err = run([path, "--out", tmp_path / "run"])
    assert code == 2 and "stages: a multi-stage config is written in the nested format" in err


def test_resume_refuses_generations_and_a_broken_stage_file(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "run"
    assert run([config, "--out", out, "--quiet"])[0] == 0
    code, err = run(["--resume", out, "--generations", "5"])
    assert code == 2 and "is a multi-stage run" in err
    (out / "stages.yaml").write_text("stages: [{name: one, ga: {generations: zero}}]\n")
    code, err = run(["--resume", out])
    assert code == 2 and err.count("\n") == 1
    assert f"{out / 'stages.yaml'}: stages[0] (one): ga.generations: expected an integer" in err


def test_resume_refuses_a_stage_folder_that_is_not_the_recorded_stage(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "run"
    assert run([config, "--out", out, "--quiet"])[0] == 0
    text = (out / "stages.yaml").read_text()
    (out / "stages.yaml").write_text(text.replace("seed: 5", "seed: 6"))
    code, err = run(["--resume", out])
    assert code == 2 and "stages.yaml: stages[1] (two): seed is 6 but was 5 when the run started" in err
    (out / stages.STARTED_FILE).unlink()  # a run of an earlier version: the stage's own config.yaml decides
    code, err = run(["--resume", out])
    assert code == 2 and "stages[1] (two): seed is 6 there but 5 in" in err


def test_show_results_names_the_stages_of_a_multi_stage_folder(tmp_path, capsys):
    config = write_config(tmp_path)
    out = tmp_path / "run"
    assert run([config, "--out", out, "--quiet"])[0] == 0
    for args in ([out, "--plot", tmp_path / "c.png"], [out, "--rescore", "1"]):
        assert run_main(show_results.main, [str(a) for a in args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"is a multi-stage run: name its stages' run folders ({out / 'one'} " in err
    assert run_main(show_results.main, [str(out / "one"), str(out / "two"), "--plot", str(tmp_path / "c.png")]) == 0


def test_a_new_run_into_a_multi_stage_folder_is_refused(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "run"
    assert run([config, "--out", out, "--quiet"])[0] == 0
    code, err = run([config, "--out", out])
    assert code == 2 and "already holds a run" in err


def test_the_balance_recipe_keeps_the_three_stage_numbers(tmp_path):
    """experiments/pendulum_balance/pendulum_balance.yaml: the three stages that made the shipped model (stage 1's
    seed 3 since the portable draws; seed 2 for the portable kernel before them, seed 1 before that)."""
    plan = stages.load(ROOT / "experiments/pendulum_balance/pendulum_balance.yaml", tmp_path)
    got = [(s.name, s.config.seed, s.config.env.init, s.config.ga.generations, s.config.ga.lifetime_steps,
            s.config.ga.evals_per_individual, s.config.ga.antithetic, s.rescore) for s in plan]
    assert got == [("stage1", 3, "near_up", 300, 300, 4, False, None),
                   ("stage2", 5, "down", 29, 1000, 2, False, None),
                   ("stage3", 6, "down", 1000, 1000, 4, True, 20)]
    for s in plan:
        c = s.config
        assert (c.env.max_torque, c.env.reward, c.actor.learning_rate, c.ga.population_size, c.ga.num_survivors,
                c.ga.mutation_probability, c.ga.mutation_strength, c.ga.common_random_numbers,
                c.runtime.threads, c.runtime.native) == (2.0, "height", 0.03, 500, 25, 0.05, 0.1, True, 1, True)
    assert [s.config.ga.init_model for s in plan] == [None, str(tmp_path / "stage1" / "best_model.yaml"),
                                                      str(tmp_path / "stage2" / "best_model.yaml")]


def test_the_reward_balance_lineage_is_its_nine_trainings(tmp_path):
    """experiments/pendulum_reward_balance/pendulum_reward_balance_lineage.yaml: each stage is the training of the same
    name (attempts/pendulum_reward_balance_<name>.yaml) run to the generation whose snapshot the next training started
    from, and the last to the shipped model's generation (the run: experiments/pendulum_reward_balance/README.md)."""
    from metarl import config as cfg_mod

    folder = ROOT / "experiments" / "pendulum_reward_balance"
    plan = stages.load(folder / "pendulum_reward_balance_lineage.yaml", tmp_path)
    assert [s.name for s in plan] == ["change2", "flip", "fast", "fast5", "fast6", "fast8", "fast15", "fast26",
                                      "fast28"]
    # change2's model is its best ever (generation 74), the best of its last generation here; the rest are snapshots
    assert [s.ship for s in plan] == ["best"] + ["snapshot"] * 8 and all(s.rescore is None for s in plan)
    trainings = [cfg_mod.load(folder / "attempts" / f"pendulum_reward_balance_{s.name}.yaml") for s in plan]
    assert plan[0].config.ga.init_model == trainings[0].ga.init_model
    went_on = [alone.ga.init_model for alone in trainings[1:]] + [str(folder / "model.yaml")]

    def numbers(c):  # what a run's numbers depend on: all but its length, its warm start's path, logging, evaluation
        d = c.to_dict()
        d["ga"].pop("generations")
        d["ga"].pop("init_model")
        d.pop("logging")
        d.pop("evaluation")
        return d

    for stage, alone, model in zip(plan, trainings, went_on, strict=True):
        assert stage.config.ga.generations == io.load_model(ROOT / model).generation + 1, stage.name
        assert numbers(stage.config) == numbers(alone), stage.name
