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
