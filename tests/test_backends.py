"""Backend selection and the start-up self-check (`metarl.backends`, `metarl.backends.lifetime.self_check`)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import genomes, small_config

from metarl import backends
from metarl.backends import lifetime
from metarl.core import rng, step
from metarl.core.genome import GenomeLayout
from metarl.core.spec import reference_rule_step


@pytest.mark.parametrize("backend", ["native", "compiled"])
def test_self_check_passes_on_every_backend(backend: str) -> None:
    # Its cost (0.04-0.12 s on an idle machine) is measured by bench/kernel.py's warm-up, not asserted here.
    config = small_config("DoublePendulum", hidden=[12, 6])
    assert lifetime.self_check(backend, config) < 1e-5


def test_a_rule_changed_in_the_spec_only_is_caught_before_a_run(monkeypatch) -> None:
    # As if metarl/core/spec.py were edited and the native kernel not: the kernel is now stale.
    def changed(*args: object, learning_rate: float, **kw: object) -> object:
        return reference_rule_step(*args, learning_rate=2 * learning_rate, **kw)

    monkeypatch.setattr(step, "reference_rule_step", changed)
    # A learning rate no other test uses: this config has not been checked in this process.
    config = small_config(native=True)
    config = config.replace(actor=dataclasses.replace(config.actor, learning_rate=0.0123))
    layout = GenomeLayout(1, 8)
    g, keys = genomes(layout, 4), rng.individual_keys(0, 0, 0, torch.arange(4))
    with pytest.raises(lifetime.SelfCheckError, match=r"^self-check failed: the native backend differs from the "
                                                      r"spec by [0-9.e-]+ \(tolerance 0.0001\)"):
        lifetime.run_lifetimes(g, layout, config, keys)
    # The compiled backend compiles the spec's own step: edited with it, it agrees.
    assert lifetime.self_check("compiled", config) == 0.0


def test_backends_are_chosen_from_the_config_and_named() -> None:
    config = small_config(native=None)
    cpu = torch.device("cpu")
    assert backends.select_backend(config, cpu).name == "native"
    assert backends.select_backend(config, cpu, torch.float64) is backends.SPEC
    assert backends.get("compiled") is backends.COMPILED
    with pytest.raises(ValueError, match="unknown backend 'eager'"):
        backends.get("eager")
    # Chunks: a padded backend runs every chunk at one size, at most the padded population.
    assert backends.COMPILED.chunk_size(config, cpu, 20) == 32
    assert backends.NATIVE.chunk_size(config, cpu, 20) == backends.NATIVE.cpu_chunk
