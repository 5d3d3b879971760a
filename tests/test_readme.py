"""The front page: it fits a screen, its links resolve, its results table is the committed evaluations."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import ROOT

README = ROOT / "README.md"
# The results table's rows: model name -> the evaluation its figures come from.
EVALUATIONS = {
    "pendulum_balance": "experiments/pendulum_balance/eval.json",
    "pendulum_hidden_goal": "experiments/pendulum_hidden_goal/eval.json",
    "pendulum_reward_balance": "experiments/pendulum_reward_balance/eval_fast28_40.json",
    "pendulum_swingup": "experiments/pendulum_swingup/eval.json",
    "double_pendulum_swingup": "experiments/double_pendulum_swingup/eval.json",
    "pendulum_balance_attempt": "experiments/pendulum_balance_attempt/eval_random.json",
    "balance_probes_near_up_episodes": "experiments/balance_probes/H_eval.json",
}


def pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "experiments").glob("*/README.md"))]


def test_readme_fits_a_screen_and_starts_with_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.encode()) <= 12 * 1024
    first = text.splitlines()[:6]
    assert any("run_config.py configs/base.yaml" in line and "venv" in line for line in first)
    assert any("pytest tests" in line and "venv" in line for line in first)
    tests = text[text.index("## Tests"):]
    lines = tests.splitlines()
    assert "python3 -m pytest tests -n 2" in lines and 'python3 -m pytest tests -m "not slow"' in lines


def test_every_relative_link_and_image_resolves() -> None:
    for page in pages():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)}: {target}"


def test_results_table_gives_the_committed_evaluations() -> None:
    rows = {}
    for line in README.read_text().splitlines():
        name = re.match(r"\| `(\w+)` \|", line)
        if name:
            rows[name.group(1)] = line
    assert set(rows) == set(EVALUATIONS)
    for name, path in EVALUATIONS.items():
        conditions = json.loads((ROOT / path).read_text())["conditions"]
        cells = [c.strip().strip("*") for c in rows[name].split("|")]
        assert cells[3] == f"{conditions['learned']['mean']:,.1f}", name
        assert cells[4] == f"{conditions['reference']['mean']:,.1f}", name
        assert (ROOT / "experiments").joinpath(*Path(path).parts[1:2], "README.md").is_file()
