"""Lifetime backends: which code runs a chunk of lifetimes, chosen by one function.

Every backend runs the same step (observe, act, env step, learning rule) and must give the
numbers of the spec up to float rounding:

- ``spec``: the plain rule of `metarl.core.spec` with `metarl.core.actor`, eagerly in torch. The
  single Python definition of the step and the oracle of the others; any device and dtype.
- ``compiled``: the spec's own step (`metarl.core.step.transition`) under `torch.compile`. The torch
  path for CUDA (large populations); any rule declaration. NOT YET MEASURED ON A GPU.
- ``native``: the C++ kernel `metarl.backends.native`, float32 on CPU. The default on CPU, for any rule
  declaration and environment whose Python its code generator can vectorise (`metarl.backends.codegen`).

`select_backend` decides from the config and the rule alone (``runtime.native``,
``runtime.compile``, ``rule.declaration``), so every chunk, shard and lone re-evaluation under
one config runs the same code. A rule or environment the kernel cannot generate runs on the
torch step, with one warning line naming the op. Before a backend other than the spec first runs
for a config, `metarl.backends.lifetime` checks it against the spec (`metarl.backends.lifetime.self_check`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from .. import envs
from ..config import Config
from ..core.rule import RuleDeclaration, rule_named
from . import native as native_mod

# ``runtime.compile: null`` compiles only when a generation has at least this many individual-steps: compilation
# takes ~30 s once per process, which eager steps of tiny configs never repay.
COMPILE_MIN_WORK = 2_000_000
# Compiled chunks are padded to a multiple of this (the widest SIMD vector, 16 floats).
LANES = 16


@dataclass(frozen=True)
class Backend:
    """How one backend runs: its name, the chunk it runs at a time, and what it cannot run."""

    name: str
    cpu_chunk: int  # individuals per chunk on CPU (bounds memory; larger chunks are not faster)
    padded: bool  # every chunk has one size (the last padded with copies), so that one compilation serves all

    def why_not(self, config: Config, device: torch.device, dtype: torch.dtype, sizes: list[int],
                rule: RuleDeclaration | None = None) -> str | None:
        """Why this backend cannot run ``config`` (with ``rule``, default the config's) here, or None if it can."""
        return self.declines(config, rule) or self._cannot_run(config, device, dtype, sizes, rule)

    def _cannot_run(self, config: Config, device: torch.device, dtype: torch.dtype, sizes: list[int],
                    rule: RuleDeclaration | None = None) -> str | None:
        """`why_not` for what this backend implements: why it cannot run here (device, dtype, network, build)."""
        if self.name != "native":
            return None
        if torch.device(device).type != "cpu" or dtype != torch.float32:
            return "the native kernel runs float32 on CPU only"
        try:
            prog = native_mod.program(config_rule(config) if rule is None else rule, sample_env(config),
                                      config.rule.signal_dim)
        except native_mod.NativeUnavailable as e:
            return str(e)
        return native_mod.supported(sizes, prog, config.rule.signal_dim, config.rule.state_dim)

    def declines(self, config: Config, rule: RuleDeclaration | None = None) -> str | None:
        """Why this backend does not implement the rule or the environment of ``config`` (one line), or None.
        Only the native kernel declines: where its code generator (`metarl.backends.codegen`) meets an op with no
        vector form, it names it."""
        if self.name != "native":
            return None
        return native_mod.declines(config_rule(config) if rule is None else rule, sample_env(config),
                                   config.rule.signal_dim)

    def chunk_size(self, config: Config, device: torch.device, population: int) -> int:
        """Individuals per chunk: ``runtime.chunk_size``, else the backend's default (on a GPU: all)."""
        size = config.runtime.chunk_size
        if size is None:
            if torch.device(device).type == "cpu":
                size = self.cpu_chunk
            else:
                size = _round_up(config.ga.population_size, LANES) if self.padded else population
        if self.padded:
            size = min(size, _round_up(config.ga.population_size, LANES))
        return size


SPEC = Backend("spec", cpu_chunk=1024, padded=False)
COMPILED = Backend("compiled", cpu_chunk=512, padded=True)  # measured: 256-1024 within noise
NATIVE = Backend("native", cpu_chunk=2048, padded=False)  # the kernel works through 8 or 16 individuals at a time
BACKENDS = {b.name: b for b in (SPEC, COMPILED, NATIVE)}

_warned: set[str] = set()


def get(name: str) -> Backend:
    """The backend called ``name`` (``spec``, ``compiled`` or ``native``)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


def config_rule(config: Config) -> RuleDeclaration:
    """The rule declaration ``config`` names (``rule.declaration``, registered: `metarl.core.rule.register_rule`)."""
    return rule_named(config.rule.declaration)


def select_backend(config: Config, device: torch.device, dtype: torch.dtype = torch.float32,
                   sizes: list[int] | None = None, rule: RuleDeclaration | None = None) -> Backend:
    """The backend that runs ``config``'s lifetimes with ``rule`` (default: the config's declaration): the one
    place that decides (`metarl.backends.lifetime.run_lifetimes`, the scripts, the evaluation ask it).

    Native where it can run (``runtime.native``: true makes failure an error, null warns once and falls back,
    false never), else compiled when ``runtime.compile`` is true or (null) the generation is large enough
    to repay compiling, else the spec. A rule or environment the native kernel does not implement is not a
    failure: it warns once (the reason, in one line) and falls back, whatever ``runtime.native`` says. The
    first time a backend other than the spec is chosen for a config, device, dtype, network and rule in a
    process, it is checked against the spec (`metarl.backends.lifetime.self_check`; `SelfCheckError`)."""
    from .lifetime import self_check  # lifetime imports this module

    sizes = config.layer_sizes if sizes is None else list(sizes)
    rule = config_rule(config) if rule is None else rule
    backend = _decide(config, device, dtype, sizes, rule)
    if backend is not SPEC:
        key = (backend.name, repr(config.env), repr(config.actor), repr(config.rule), tuple(sizes),
               str(torch.device(device)), dtype, rule.signature())
        if key not in _checked:
            self_check(backend.name, config, device=device, dtype=dtype, sizes=sizes, rule=rule)
            _checked.add(key)
    return backend


_checked: set[tuple] = set()  # (backend, config, network, device, dtype, rule) checked in this process


def _decide(config: Config, device: torch.device, dtype: torch.dtype, sizes: list[int],
            rule: RuleDeclaration | None) -> Backend:
    """`select_backend` without its self-check (the rules it says)."""
    setting = config.runtime.native
    if setting is not False:
        declined = NATIVE.declines(config, rule)
        why = declined or NATIVE._cannot_run(config, device, dtype, sizes, rule)
        if why is None:
            return NATIVE
        if setting and declined is None:
            raise native_mod.NativeUnavailable(f"runtime.native is true but the native kernel cannot run: {why}")
        if torch.device(device).type == "cpu" and dtype == torch.float32 and why not in _warned:
            _warned.add(why)
            warnings.warn(f"native lifetime kernel not used ({why}); using the torch step", stacklevel=2)
    compile = config.runtime.compile
    if compile is None:
        compile = config.ga.population_size * config.ga.lifetime_steps >= COMPILE_MIN_WORK
    # On CPU torch.compile needs the C++ compiler as well: without one it would fail after ~20 s.
    if compile and torch.device(device).type == "cpu" and not native_mod.compiler_found():
        compile = False
    return COMPILED if compile else SPEC


def sample_env(config: Config) -> envs.BatchedEnv:
    """One environment of ``config`` (its class and options; the draws of the first key), for the code generator,
    which reads the class and the options only."""
    from ..core import rng
    from ..core.step import make_env  # imports the config, which imports this package
    return make_env(config, rng.individual_keys(0, 0, 0, torch.arange(1)))


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def use_threads(threads: int | None, default: int | None = None) -> None:
    """Set torch's CPU threads (which the native kernel uses too) to ``threads`` (``runtime.threads``),
    else to ``default`` if given; with neither, torch keeps its own default. The one place that sets them."""
    chosen = threads if threads is not None else default
    if chosen is not None:
        torch.set_num_threads(chosen)
