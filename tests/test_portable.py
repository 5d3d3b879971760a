"""The native kernel's numbers do not depend on the CPU: builds for other instruction sets and vector
widths give bit-identical lifetimes (rewards, env states and learned actor parameters).

The kernel is compiled with -ffp-contract=off and writes every fused multiply-add explicitly, so each
operation is correctly rounded in a fixed order whatever -march decides (AVX2 or AVX-512, 8 or 16
individuals per vector). Here: ``native`` (this CPU) against ``x86-64-v3`` forced to another vector
width, and ``x86-64-v4`` (AVX-512) where this CPU has it.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import needs_native, run_script

from metarl import envs
from metarl.backends import lifetime, native
from metarl.config import RuntimeConfig
from metarl.core import rng
from metarl.core.rule import RULES
from metarl.runs import io

ROOT = Path(__file__).resolve().parents[1]
pytestmark = needs_native
BUILD = native.library


def _lifetime(monkeypatch: pytest.MonkeyPatch, target: str | None, lanes: int | None, model: str,
              pop: int, steps: int) -> list[torch.Tensor]:
    """Fitness, rewards, states and every learned actor parameter of ``pop`` lifetimes on the kernel
    built for ``target`` with ``lanes`` individuals per vector."""
    def library(signal_dim: int, state_dim: int, target_: object = None, lanes_: object = None,
                prog: native.codegen.Program | None = None) -> object:
        return BUILD(signal_dim, state_dim, target, lanes, prog)

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
                                              ("experiments/double_pendulum_swingup/model.yaml", 200),
                                              # the reward_change rule, its trace and the sensor noise
                                              ("experiments/pendulum_reward_balance/model_change.yaml", 300)])
def test_other_targets_and_widths_give_the_same_bits(monkeypatch: pytest.MonkeyPatch, target: str,
                                                     lanes: int | None, model: str, steps: int) -> None:
    pop = 21  # not a multiple of any width: the last block is partly empty
    here = _lifetime(monkeypatch, None, None, model, pop, steps)
    there = _lifetime(monkeypatch, target, lanes, model, pop, steps)
    assert here[0].abs().sum() > 0
    for a, b in zip(here, there, strict=True):
        assert torch.equal(a, b), f"{target} (lanes {lanes}) differs from native by {(a - b).abs().max():.3g}"


@pytest.mark.slow  # one more build (about 10 s)
@pytest.mark.parametrize(("model", "steps"), [("experiments/pendulum_swingup/model.yaml", 300)])
def test_large_states_row_by_row_form_gives_the_same_bits(monkeypatch: pytest.MonkeyPatch, model: str,
                                                           steps: int) -> None:
    # States above METARL_ROWWISE_H (kernel/rule.h) read the cells' matrices row by row instead of column by
    # column, each sum's terms in the same order: built with the row form at every size, a small-state
    # model's lifetimes must be the same bits as with the column form.
    pop = 21
    column = _lifetime(monkeypatch, None, None, model, pop, steps)
    monkeypatch.setattr(native, "FLAGS", (*native.FLAGS, "-DMETARL_ROWWISE_H=0"))
    monkeypatch.setattr(native, "_libraries", {})
    rows = _lifetime(monkeypatch, None, None, model, pop, steps)
    assert column[0].abs().sum() > 0
    for a, b in zip(column, rows, strict=True):
        assert torch.equal(a, b), f"the row form differs from the column form by {(a - b).abs().max():.3g}"


FAKE_COMPILER = """#!/bin/sh
# Records its arguments and writes the output file: the cache key's logic without a real build.
if [ "$1" = "--version" ]; then echo "fake c++ ${FAKE_VERSION:-1}"; exit 0; fi
echo "$@" >> "$FAKE_LOG"
while [ $# -gt 1 ]; do [ "$1" = "-o" ] && : > "$2"; shift; done
"""


def test_the_cache_key_holds_what_changes_the_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compiler, log = tmp_path / "fake-c++", tmp_path / "builds.log"
    compiler.write_text(FAKE_COMPILER)
    compiler.chmod(0o755)
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("METARL_CACHE", str(tmp_path / "cache"))

    def build(*args, rule: str = "standard") -> str:
        return native._build(*args, native.program(RULES[rule], envs.make("Pendulum", 1), args[0])).name

    base = build(1, 0, "native", None)
    assert build(1, 0, "native", None) == base  # cached: built once
    keys = {base, build(1, 0, "x86-64-v3", None), build(1, 0, "x86-64-v3", 16), build(2, 0, "native", None),
            build(1, 8, "native", None)}
    assert len(keys) == 5 and any("x86-64-v3_l16" in k for k in keys)
    monkeypatch.setenv("FAKE_VERSION", "2")  # another compiler: another library
    assert build(1, 0, "native", None) not in keys
    monkeypatch.setenv("FAKE_VERSION", "1")
    with monkeypatch.context() as m:
        m.setattr(native, "_cpu_id", lambda: "another CPU")  # -march=native means another machine's code
        assert build(1, 0, "native", None) not in keys
        m.setattr(native, "FLAGS", (*native.FLAGS, "-DOTHER"))
        assert build(1, 0, "x86-64-v3", None) not in keys
    sources = tmp_path / "kernel"
    shutil.copytree(native.SOURCE_DIR, sources)
    (sources / "rule.h").write_text((sources / "rule.h").read_text() + "\n// a change\n")
    monkeypatch.setattr(native, "SOURCE_DIR", sources)
    assert build(1, 0, "native", None) not in keys  # an edited source: another library
    assert build(1, 0, "native", None, rule="reward_change") not in keys  # another program: another library
    builds = log.read_text().splitlines()
    assert len(builds) == 10 and all("-ffp-contract=off" in b for b in builds)
    assert sum("-march=x86-64-v3" in b and "-DMETARL_LANES=16" in b for b in builds) == 1


# The kernel's tanh, bit for bit: 2^18 points on [-9, 9] and the edges (zeros, the clamp, infinities, NaN, the
# smallest floats). Its speed-ups (min/max for the clamp, the saturation as two masked moves) were checked equal
# to the earlier form on all 2^32 float32 bit patterns; this digest keeps any later change honest.
TANH_DIGEST = "048040ddf985d205aaa4299290e30be8851ba0324251398b84c816c48ff699b0"


@needs_native
def test_the_kernel_s_tanh_gives_its_pinned_bits() -> None:
    edges = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 7.90531110763549805, -7.90531110763549805,
             1e-30, -1e-38, 3e-45, 1e-3, -1e-3, 0.5, -0.5, 2.0, -2.0]
    x = torch.cat([torch.linspace(-9.0, 9.0, 1 << 18), torch.tensor(edges)])
    y = torch.cat([native.elementwise("tanh", part) for part in x.split(16384)])
    assert hashlib.sha256(y.view(torch.int32).numpy().tobytes()).hexdigest() == TANH_DIGEST


# ---------------------------------------------------------------------------- the draws made in Python
# The actor's initial weights (and the spec's noise) are drawn in torch, whose log, cos and sqrt are MKL's on
# Intel builds of torch: their last bits depend on the CPU MKL finds (the golden pins failed on an Intel Xeon
# with AVX-512 with no code change, pinned on an AMD EPYC). `rng.normal` is made of IEEE operations only.

@pytest.mark.parametrize(("name", "fn", "scale"), [("log", rng.log32, 1.0), ("cos", rng.cos32, rng._TWO_PI),
                                                   ("cos", rng.cos32, 8000.0)])
@needs_native
def test_python_log_and_cos_are_the_kernels_bit_for_bit(name: str, fn, scale: float) -> None:
    g = torch.Generator().manual_seed(3)
    u = (torch.randint(0, 1 << 24, (1 << 18,), generator=g).float() + 0.5) / (1 << 24)  # the uniforms' grid
    x = u * scale if scale < 10 else (2 * u - 1) * scale
    assert torch.equal(fn(x).view(torch.int32), native.elementwise(name, x).view(torch.int32))


def test_fma32_rounds_once_and_sqrt32_is_correctly_rounded() -> None:
    from fractions import Fraction
    g = torch.Generator().manual_seed(4)
    a, b, c = (torch.randn(3000, generator=g) * 8 for _ in range(3))
    # cases where rounding the float64 sum again to float32 would round twice: c cancels a * b's top bits
    c[:1000] = -(a[:1000].double() * b[:1000].double()).float()
    got = rng.fma32(a, b, c)
    for x, y, z, r in zip(a.tolist(), b.tolist(), c.tolist(), got.tolist(), strict=True):
        exact = Fraction(x) * Fraction(y) + Fraction(z)
        near = torch.tensor(float(exact), dtype=torch.float32)
        candidates = [torch.nextafter(near, torch.tensor(v)) for v in (-math.inf, math.inf)] + [near]
        best = min(abs(Fraction(float(v)) - exact) for v in candidates)
        assert abs(Fraction(r) - exact) == best, (x, y, z)
    x = torch.rand(1 << 20, generator=g) * 50
    assert np.array_equal(rng.sqrt32(x).numpy().view(np.int32), np.sqrt(x.numpy()).view(np.int32))


DRAWS = """
import hashlib, sys, torch
from metarl.core import rng
from metarl.core.rule import RULES
keys = rng.individual_keys(2024, 0, 0, torch.arange(64))
t = torch.cat([rng.normal(keys, s, 3000).flatten() for s in (1, 4, 5)])
print(hashlib.sha256(t.numpy().tobytes()).hexdigest())
"""


@pytest.mark.slow
def test_normal_draws_do_not_depend_on_the_math_library_s_code_path() -> None:
    # MKL_CBWR and ATEN_CPU_CAPABILITY make torch's MKL and ATen take the code paths of other CPUs; torch's
    # own log and cos change under them, the draws must not.
    runs = [run_script("-c", DRAWS, env=env) for env in ({}, {"MKL_CBWR": "COMPATIBLE"},
                                                         {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "default"})]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    assert len({r.stdout for r in runs}) == 1


@needs_native
def test_the_kernel_draws_the_actor_s_numbers_and_is_checked_at_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = native.library(1, 8)
    keys = rng.individual_keys(5, 1, 0, torch.arange(37))  # not a multiple of any width
    assert torch.equal(native.normal(lib, keys, rng.STREAM_ACTOR_INIT, 113),
                       rng.normal(keys, rng.STREAM_ACTOR_INIT, 113))
    none = keys[:0]
    assert native.normal(lib, none, 1, 5).shape == rng.normal(none, 1, 5).shape == (0, 5)
    monkeypatch.setattr(rng, "normal", lambda k, s, n: torch.zeros(k.shape[0], n))  # another definition
    with pytest.raises(RuntimeError, match="differ from metarl.core.rng.normal"):
        native.normal(lib, keys, rng.STREAM_ACTOR_INIT, 113)
