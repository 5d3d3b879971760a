"""Genome layout, saved-model round trips and compatibility with the original project's model."""

from __future__ import annotations

import pytest
import torch
import yaml

from metarl import config as C
from metarl.backends.lifetime import run_lifetimes
from metarl.core.genome import GenomeLayout
from metarl.core.rng import individual_keys
from metarl.errors import ModelFileError
from metarl.runs import io


def test_layout_sizes_match_spec():
    layout = GenomeLayout(1, 8)
    assert layout.size == 520
    assert [c.size for c in layout.cells.values()] == [135, 165, 220]
    assert GenomeLayout(2, 0).cells["connection_network"].part_shapes()["w_state"] == (14, 0)


def test_views_are_named_slices_of_the_flat_genome():
    layout = GenomeLayout(1, 8)
    genome = torch.arange(2 * 520, dtype=torch.float32).reshape(2, 520)
    w = layout.view(genome, "node_network", "w_state")
    assert w.shape == (2, 14, 8) and w[0, 0, 0].item() == 135.0
    assert layout.view(genome, "connection_network", "b_output")[1, -1].item() == 1039.0


@pytest.mark.slow
def test_seed_model_loads_and_drives_an_actor(seed_files):
    _, model_path = seed_files
    model = io.load_model(model_path)
    assert model.layout == GenomeLayout(1, 8) and model.genome.shape == (520,)
    assert model.config.env.max_torque == 5.0 and model.fitness == pytest.approx(39.895, abs=1e-3)
    keys = individual_keys(0, 0, 0, torch.arange(4))
    fitness, rewards = run_lifetimes(model.genome.expand(4, -1), model.layout, model.config, keys, trace=True)
    assert fitness.shape == (4,) and rewards.shape == (4, 20) and torch.isfinite(fitness).all()


@pytest.mark.parametrize("state_dim", [3, 0])  # 0: cells without state, their w_state rows empty
def test_save_load_roundtrip(tmp_path, state_dim):
    cfg = C.from_dict({"seed": 4, "rule": {"signal_dim": 2, "state_dim": state_dim}})
    layout = GenomeLayout(2, state_dim)
    genome = layout.random(1, 0.3, torch.Generator().manual_seed(0))[0]
    path = tmp_path / "m.yaml"
    io.save_model(path, genome, layout, cfg, fitness=12.5, generation=7, seed=4)
    model = io.load_model(path)
    assert torch.equal(model.genome, genome) and model.layout == layout
    assert (model.fitness, model.generation, model.seed, model.config) == (12.5, 7, 4, cfg)
    data = yaml.safe_load(path.read_text())
    assert set(data["actor"]) == {"reward_network", "node_network", "connection_network"}
    assert data["version"]


@pytest.mark.parametrize("text, match", [
    ("just: text\n", "not a saved model"),
    ("actor: {reward_network: {w_state: [1]}}\n", "corrupt rule cells"),
    ("{{{{", "not a readable YAML"),
])
def test_bad_model_files(tmp_path, text, match):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(ModelFileError, match=match):
        io.load_model(path)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        io.load_model(tmp_path / "absent.yaml")
