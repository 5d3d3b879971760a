"""examples/custom_rule.py end to end: a rule with one input more, evolved on the native kernel (generated from
the declaration, no fall-back), saved, reloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import run_script


@pytest.mark.slow
def test_the_custom_rule_example_evolves_saves_and_reloads(tmp_path: Path) -> None:
    done = run_script("examples/custom_rule.py", "--out", str(tmp_path / "run"), "--generations", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("rule clocked (fingerprint ") and \
        lines[0].endswith("native kernel: runs it (generated from the declaration)")
    assert "not used" not in done.stderr and "torch step" not in done.stderr  # no fall-back
    assert lines[1] == "genes per individual: 531 (the standard rule: 520)"
    assert [line.split(":")[0] for line in lines[2:4]] == ["generation 0", "generation 1"]
    assert lines[4].startswith("reloaded best_model.yaml: rule clocked, fitness ")
    saved = yaml.safe_load((tmp_path / "run" / "best_model.yaml").read_text())
    assert saved["rule"]["name"] == "clocked" and saved["config"]["rule"]["declaration"] == "clocked"
    assert saved["rule"]["cells"]["node_network"]["inputs"][-1] == {"name": "elapsed", "width": 1,
                                                                    "source": "lifetime_fraction"}
