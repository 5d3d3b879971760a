"""The compiled backend's fallback to the eager step is kept per specialisation (per config and shape): a compiler
failure for one config sends that config to the eager step, and only it (issue 43, item 6; before, the fallback
was keyed on the step function, so one failure sent every later compiled config of the process to the eager step).

torch.compile is replaced by a stand-in that runs the step eagerly and counts its calls (compiling for real takes
minutes on 2 cores); it fails for one population size as a compiler would for one config."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from conftest import genomes, small_config

from metarl.backends import compiled, lifetime
from metarl.core import rng, step
from metarl.core.genome import GenomeLayout

FAILING_POPULATION = 7


@pytest.fixture
def compiler(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """torch.compile stood in for: the populations the "compiled" step ran for, in order; for
    `FAILING_POPULATION` it fails as inductor would."""
    calls: list[int] = []

    def fake_compile(fn: Callable[..., Any], dynamic: bool = False) -> Callable[..., Any]:
        def compiled_fn(env: Any, g: torch.Tensor, *rest: Any) -> Any:
            calls.append(g.shape[0])
            if g.shape[0] == FAILING_POPULATION:
                raise RuntimeError("inductor: C++ compile error for this shape\nmore details")
            return fn(env, g, *rest)
        return compiled_fn

    monkeypatch.setattr(compiled, "_compiled", {})
    monkeypatch.setattr(compiled, "_broken", {})
    monkeypatch.setattr(torch, "compile", fake_compile)
    return calls


def run(pop: int, steps: int = 3, **config: Any) -> tuple[lifetime.Lifetime, torch.Tensor]:
    cfg = small_config(pop=pop, steps=steps, compile=True, **config)
    layout = GenomeLayout(cfg.rule.signal_dim, cfg.rule.state_dim)
    life = lifetime.Lifetime(genomes(layout, pop), layout, cfg, rng.individual_keys(0, 0, 0, torch.arange(pop)),
                             backend="compiled")
    fitness = torch.zeros(pop, dtype=torch.float64)
    with torch.no_grad():
        life.run(steps, fitness)
    return life, fitness


def test_a_compile_failure_for_one_config_leaves_the_others_compiled(compiler: list[int]) -> None:
    with pytest.warns(UserWarning) as caught:
        failing, _ = run(FAILING_POPULATION)
    assert [str(w.message) for w in caught] == [
        "torch.compile of the lifetime step failed (RuntimeError: inductor: C++ compile error for this shape); "
        "running it eagerly for this config (others still compile)"]
    assert compiler == [FAILING_POPULATION]  # one try, then eager
    assert compiled.fell_back(step.transition, failing._specialisation())

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: this config compiles
        other, fitness = run(5)
        again, _ = run(FAILING_POPULATION)  # the failed config stays eager, without trying or warning again
        third, _ = run(6, hidden=[4])
    assert compiler == [FAILING_POPULATION, 5, 5, 5, 6, 6, 6]  # every step of the other configs ran compiled
    assert not compiled.fell_back(step.transition, other._specialisation())
    assert not compiled.fell_back(step.transition, third._specialisation())
    assert compiled.fell_back(step.transition, again._specialisation())
    assert compiled.fell_back(step.transition)  # some specialisation fell back (bench/gpu_check.py's question)
    # The compiled step gave what the eager step gives (the stand-in runs it).
    eager, _ = lifetime.run_lifetimes(other.genomes, GenomeLayout(1, 8), small_config(pop=5, steps=3),
                                      rng.individual_keys(0, 0, 0, torch.arange(5)), backend="spec")
    torch.testing.assert_close(fitness, eager)


def test_the_specialisation_tells_configs_apart(compiler: list[int]) -> None:
    key = run(5)[0]._specialisation()
    assert run(5)[0]._specialisation() == key  # the same config: the same key (a failure is remembered)
    for other in (run(6), run(5, hidden=[4]), run(5, env="DoublePendulum"), run(5, h_dim=4), run(5, steps=4)):
        assert other[0]._specialisation() != key
