"""The experiments' own scripts run on the shipped models and say what their docstrings promise."""

from __future__ import annotations

import importlib.util
import re

import pytest
from conftest import ROOT


def load(path: str):
    spec = importlib.util.spec_from_file_location(path.replace("/", "_"), ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_reward_balance_screen_prints_every_bar_and_refuses_the_evaluation_keys(capsys) -> None:
    screen = load("experiments/pendulum_reward_balance/screen.py")
    model = "experiments/pendulum_reward_balance/model.yaml"
    screen.main([str(ROOT / model)])
    line = capsys.readouterr().out.strip()
    values = dict(re.findall(r"(\w+[+-]?\d?) (-?[\d.]+)", line.split(" ", 1)[1]))
    assert set(values) == {"dn+1", "up+1", "dn-1", "up-1", "plain", "bal", "L15"}
    assert all(-1000 <= float(values[k]) <= 0 for k in ("dn+1", "dn-1"))  # heights are >= 0: goal -1 scores <= 0
    assert all(0 <= float(values[k]) <= 1 for k in ("bal", "L15"))
    assert 0.5 < float(values["plain"]) < 1.2  # the shipped rule scores most of the controller's
    with pytest.raises(SystemExit):
        screen.main([str(ROOT / model), "--seeds", "0"])
    assert "seed 0's keys" in capsys.readouterr().err


def test_check_lineage_compares_every_stage_with_the_committed_logs_and_models(tmp_path, capsys) -> None:
    # A run folder of pendulum_reward_balance_lineage.yaml made of the committed files themselves (the run takes an
    # hour): every stage's log up to its last generation, the model it ships, RUN/model.yaml.
    import shutil

    from metarl.evolve import stages

    check = load("experiments/pendulum_reward_balance/check_lineage.py")
    folder = ROOT / "experiments" / "pendulum_reward_balance"
    run = tmp_path / "run"
    plan = stages.load(folder / "pendulum_reward_balance_lineage.yaml", run)
    run.mkdir()
    (run / stages.STAGES_FILE).write_text(stages.recorded(plan))
    for stage, model in zip(plan, check.went_on(plan), strict=True):
        stage.folder(run).mkdir()
        log = folder / "attempts" / f"log_{stage.name}.csv"
        lines = log.read_text().splitlines()[:1 + stage.config.ga.generations]
        (stage.folder(run) / "log.csv").write_text("\n".join(lines) + "\n")
        stage.shipped(run).parent.mkdir(exist_ok=True)
        shutil.copy(model, stage.shipped(run))
    shutil.copy(folder / "model.yaml", run / "model.yaml")
    assert check.main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "fast26: 196 of 196 generations as log_fast26.csv" in out and "model.yaml, bit for bit" in out
    # A stage that shipped another model, and a log row that differs in its last digit, are both reported.
    shutil.copy(folder / "attempts" / "model_fast8_110.yaml", plan[5].shipped(run))
    log = plan[1].folder(run) / "log.csv"
    lines = log.read_text().splitlines()
    lines[5] = lines[5].replace(",", ",9", 1)  # generation 4's best, one digit more
    log.write_text("\n".join(lines) + "\n")
    assert check.main([str(run)]) == 1
    out = capsys.readouterr().out
    assert "flip: 111 of 112" in out
    assert "fast8: 151 of 151" in out and "shipped model_fast8_150.yaml: DIFFERENT genome" in out
    assert check.main([str(tmp_path)]) == 2
