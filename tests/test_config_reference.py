"""docs/config.md is generated from the schema: every key documented, and the committed page is current."""

from __future__ import annotations

import pytest
from conftest import ROOT

from metarl.config import reference


def test_every_schema_key_has_a_meaning_and_a_row() -> None:
    page = reference.render()
    keys = [key for key, _, _ in reference.keys()]
    assert "ga.population_size" in keys and "env.episode_steps" in keys and "logging.histogram_every" in keys
    assert set(keys) == set(reference.MEANINGS)
    for key in keys:
        assert f"| `{key}` |" in page
    assert "| `ga.population_size` | `int` | `10000` | integer in [1, 10^9] |" in page


def test_docs_config_md_is_what_the_command_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert reference.main([]) == 0  # python3 -m metarl.config.reference, in this process
    assert (ROOT / "docs" / "config.md").read_text() == capsys.readouterr().out, \
        "docs/config.md is stale: run python3 -m metarl.config.reference --write"


def test_a_key_missing_from_the_meanings_fails_the_generation(monkeypatch) -> None:
    monkeypatch.delitem(reference.MEANINGS, "ga.generations")
    try:
        reference.render()
    except RuntimeError as e:
        assert "ga.generations" in str(e)
    else:
        raise AssertionError("render() accepted an undocumented key")
