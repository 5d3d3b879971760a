"""The front page: it fits a screen, its links resolve, its results table is the committed evaluations."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import ROOT, run_script

README = ROOT / "README.md"
# The results table's rows: model name -> the evaluation its figures come from, each the plain
# `show_results.py NAME --evaluate --episodes 256` (seed 0, no --set).
EVALUATIONS = {
    "pendulum_balance": "experiments/pendulum_balance/eval.json",
    "pendulum_hidden_goal": "experiments/pendulum_hidden_goal/eval.json",
    "pendulum_reward_balance": "experiments/pendulum_reward_balance/eval.json",
    "pendulum_swingup": "experiments/pendulum_swingup/eval.json",
    "double_pendulum_swingup": "experiments/double_pendulum_swingup/eval.json",
    "pendulum_balance_attempt": "experiments/pendulum_balance_attempt/eval.json",
    "balance_probes_near_up_episodes": "experiments/balance_probes/eval.json",
}
RECOMPUTED = "pendulum_hidden_goal"  # the cheapest row (about 10 s of one core)


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
        settings = json.loads((ROOT / path).read_text())
        assert settings["model"] == name, path
        assert (settings["settings"]["episodes"], settings["settings"]["seed"]) == (256, 0), path
        assert settings["settings"]["overrides"] == [], f"{path}: made with --set, not the plain command"


def table_cells(name: str) -> list[str]:
    line = next(line for line in README.read_text().splitlines() if line.startswith(f"| `{name}` |"))
    return [c.strip().strip("*") for c in line.split("|")]


@pytest.mark.slow
def test_a_results_table_row_is_what_the_plain_command_gives_today(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    result = run_script("show_results.py", RECOMPUTED, "--evaluate", "--episodes", "256", "--json", str(out))
    assert result.returncode == 0, result.stderr
    conditions = json.loads(out.read_text())["conditions"]
    cells = table_cells(RECOMPUTED)
    assert cells[3] == f"{conditions['learned']['mean']:,.1f}"
    assert cells[4] == f"{conditions['reference']['mean']:,.1f}"
