"""The native kernel's numbers do not depend on the CPU: builds for other instruction sets and vector
widths give bit-identical lifetimes (rewards, env states and learned actor parameters).

The kernel is compiled with -ffp-contract=off and writes every fused multiply-add explicitly, so each
operation is correctly rounded in a fixed order whatever -march decides (AVX2 or AVX-512, 8 or 16
individuals per vector). Here: ``native`` (this CPU) against ``x86-64-v3`` forced to another vector
width, and ``x86-64-v4`` (AVX-512) where this CPU has it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import needs_native

from metarl.backends import lifetime, native
from metarl.config import RuntimeConfig
from metarl.core import rng
from metarl.runs import io

ROOT = Path(__file__).resolve().parents[1]
pytestmark = needs_native
BUILD = native.library


def _lifetime(monkeypatch: pytest.MonkeyPatch, target: str | None, lanes: int | None, model: str,
              pop: int, steps: int) -> list[torch.Tensor]:
    """Fitness, rewards, states and every learned actor parameter of ``pop`` lifetimes on the kernel
    built for ``target`` with ``lanes`` individuals per vector."""
    def library(signal_dim: int, state_dim: int) -> object:
        return BUILD(signal_dim, state_dim, target, lanes)

    monkeypatch.setattr(native, "library", library)
    saved = io.load_model(ROOT / model)
    config = saved.config.replace(runtime=RuntimeConfig(native=True, threads=1))
    genomes = saved.genome.reshape(1, -1).expand(pop, -1).contiguous()
    keys = rng.individual_keys(7, 0, 0, torch.arange(pop))
    life = lifetime.Lifetime(genomes, saved.layout, config, keys, backend="native")
    fitness = torch.zeros(pop, dtype=torch.float64)
    rewards = torch.zeros(steps, pop)
    states = torch.zeros(steps, 2 * life.env.links, pop)
    life.run(steps, fitness, rewards, states)
    actor = life.actor
    return [fitness, rewards, states, *actor.weights, *actor.biases, *actor.sigmas]


TARGETS = [("x86-64-v3", 16)] + ([("x86-64-v4", None), ("x86-64-v4", 8)] if native.default_lanes() == 16 else [])


@pytest.mark.slow  # builds the kernel for other targets (about 10 s each)
@pytest.mark.parametrize(("target", "lanes"), TARGETS)
@pytest.mark.parametrize(("model", "steps"), [("experiments/pendulum_swingup/model.yaml", 500),
                                              ("experiments/double_pendulum_swingup/model.yaml", 200)])
def test_other_targets_and_widths_give_the_same_bits(monkeypatch: pytest.MonkeyPatch, target: str,
                                                     lanes: int | None, model: str, steps: int) -> None:
    pop = 21  # not a multiple of any width: the last block is partly empty
    here = _lifetime(monkeypatch, None, None, model, pop, steps)
    there = _lifetime(monkeypatch, target, lanes, model, pop, steps)
    assert here[0].abs().sum() > 0
    for a, b in zip(here, there, strict=True):
        assert torch.equal(a, b), f"{target} (lanes {lanes}) differs from native by {(a - b).abs().max():.3g}"


@pytest.mark.slow
def test_the_cache_key_holds_what_changes_the_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METARL_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "_libraries", {})
    native.library(1, 0)
    native.library(1, 0, "x86-64-v3")
    native.library(1, 0, "x86-64-v3", 16)
    built = sorted(p.name for p in (tmp_path / "native").glob("*.so"))
    assert len(built) == 3, built
    assert any("x86-64-v3_l16" in name for name in built)
