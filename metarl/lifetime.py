"""Lifetimes: a freshly initialised actor learns with a rule in its environment.

The fitness of an individual is the reward summed over ``lifetime_steps`` steps. Every
random draw comes from the individual's key (`metarl.rng`), so the result for an
individual does not depend on which other individuals share its batch, chunk or process.
On CPU the population runs in cache-sized chunks, each through its whole lifetime.

One step (observe, act, env step, learning rule) is the pure function `transition`.
Eagerly it runs `metarl.actor` and `metarl.rule` (batched `torch.bmm` products); with
``runtime.compile`` it runs their feature-major twins in `metarl.fused`, compiled by
`torch.compile` into a few loops that vectorise across individuals (`metarl.compiled`).
On CPU, `run_lifetimes` uses the native kernel (`metarl.native`) by default: the same
step in C++, many steps per call (``runtime.native``).
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch

from . import actor as actor_mod
from . import compiled, envs, fused, rng
from . import native as native_mod
from .actor import ActorState
from .config import Config
from .envs.base import BatchedEnv
from .genome import GenomeLayout
from .reference import reference_rule_step
from .rule import RuleParams, RuleState, initial_rule_state, rule_params, rule_step

DEFAULT_CPU_CHUNK = 1024
DEFAULT_COMPILED_CPU_CHUNK = 512  # measured: 256-1024 within noise; smaller pays more per-call overhead
DEFAULT_NATIVE_CHUNK = 2048  # only bounds memory: the kernel works through 16 individuals at a time
PROGRESS_STEPS = 100  # run_lifetimes reports progress (and calls the native kernel) every this many steps
# ``runtime.compile: null`` compiles only when a generation has at least this many individual-steps: compilation
# takes ~30 s once per process, which eager steps of tiny configs never repay.
COMPILE_MIN_WORK = 2_000_000
# Compiled chunks are padded to a multiple of this (the widest SIMD vector, 16 floats).
LANES = 16


@dataclass(frozen=True)
class Conditions:
    """Ablations of a lifetime (used to measure whether a rule really learns)."""

    plastic: bool = True  # False: the rule is never applied; the initial actor acts unchanged
    zero_reward: bool = False  # True: the rule always sees reward 0
    # The rule sees these rewards ``(P, T)`` (e.g. another lifetime's) instead of its own; None = its own.
    seen_rewards: torch.Tensor | None = field(default=None, compare=False, hash=False)


@dataclass(frozen=True)
class StepSpec:
    """Everything constant about a step: a compiled step is specialised on it."""

    neurons: int  # actor neurons with noise
    learning_rate: float
    weight_limit: float
    sigma_limit: float
    conditions: Conditions
    reference: bool  # plain rule step of `metarl.reference`
    fused: bool  # feature-major tensors and `metarl.fused` (the compiled path)


@dataclass
class Carry:
    """What changes from step to step."""

    t: torch.Tensor  # 0-d int64: the step number (a tensor, so compiled code does not specialise on it)
    state: torch.Tensor  # (P, 2 * links) env state
    prev_height: torch.Tensor  # (P,) height after the last step; NaN before the first
    actor: ActorState | fused.FusedActor
    rule: RuleState  # feature-major when the actor is


def transition(env: BatchedEnv, params: RuleParams | None, genomes: torch.Tensor, layout: GenomeLayout,
               noise_keys: torch.Tensor, carry: Carry, spec: StepSpec, seen: torch.Tensor | None = None
               ) -> tuple[Carry, torch.Tensor]:
    """One step of a lifetime; returns the next carry and the reward ``(P,)``. Pure.

    ``env`` supplies the physics (its own state is not used), ``params`` the split genome
    (None with ``spec.reference``), ``noise_keys (P,)`` the sampling-noise stream; ``seen (P,)``,
    if given, is the reward the rule sees instead of its own (`Conditions`).
    """
    x = env.observation(carry.state)
    if spec.sigma_limit == 0:
        noise = x.new_zeros(x.shape[0], spec.neurons)
    else:
        noise = rng.normal_at(noise_keys, carry.t * spec.neurons, spec.neurons, dtype=x.dtype)
    if spec.fused:
        x, noise = x.t(), noise.t()
        actor = fused.forward(carry.actor, x, noise)
        action = actor.outputs[-1][0]
    else:
        actor = actor_mod.forward(carry.actor, x, noise)
        action = actor.outputs[-1][:, 0]
    state = env.advance(carry.state, action)
    height = env.height(state)
    reward = env.reward(state, height, carry.prev_height, carry.t)
    rule = carry.rule
    if spec.conditions.plastic:
        if spec.conditions.zero_reward:
            seen = torch.zeros_like(reward)
        elif seen is None:
            seen = reward
        kw = {"learning_rate": spec.learning_rate, "weight_limit": spec.weight_limit,
              "sigma_limit": spec.sigma_limit}
        if spec.reference:
            rule, actor = reference_rule_step(genomes, layout, rule, actor, x, seen, **kw)
        elif spec.fused:
            rule, actor = fused.rule_step(params, rule, actor, x, seen, **kw)
        else:
            rule, actor = rule_step(params, rule, actor, x, seen, **kw)
    if spec.fused:
        # Contiguous outputs: the next step's inputs then have the layout the compiled code was made for.
        actor = fused.FusedActor.of(actor, torch.Tensor.contiguous)
        rule = fused.map_rule_state(rule, torch.Tensor.contiguous)
    return Carry(carry.t + 1, state, height, actor, rule), reward


def make_env(config: Config, keys: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> BatchedEnv:
    """The environments of the lifetimes with ``keys (P,)``: parameters, initial state, motor
    direction and goal drawn from each key's env stream (on the keys' device)."""
    offset = [0]

    def sampler(count: int) -> torch.Tensor:
        u = rng.uniform(keys, rng.STREAM_ENV_PARAMS, count, offset=offset[0], dtype=dtype)
        offset[0] += count
        return u

    return envs.make(config.env.name, keys.shape[0], device=keys.device, dtype=dtype, sampler=sampler,
                     **config.env.make_kwargs())


class Lifetime:
    """One lifetime of a batch of individuals, advanced step by step.

    ``genomes (P, G)``, ``keys (P,)`` int64 (see `metarl.rng.individual_keys`).
    ``compile``: run the step compiled (`metarl.compiled`); ``native``: run it in the native
    kernel (`metarl.native`, CPU float32). The caller decides, see `use_compile` and `use_native`.
    """

    def __init__(self, genomes: torch.Tensor, layout: GenomeLayout, config: Config, keys: torch.Tensor, *,
                 conditions: Conditions = Conditions(), reference: bool = False,
                 sizes: list[int] | None = None, compile: bool = False, native: bool = False) -> None:
        layout.check(genomes)
        if keys.shape != (genomes.shape[0],):
            raise ValueError(f"keys must have shape ({genomes.shape[0]},), got {tuple(keys.shape)}")
        if (compile or native) and reference:
            raise ValueError("the reference rule step is never compiled")
        if compile and native:
            raise ValueError("choose one of compile and native")
        self.config = config
        self.layout = layout
        self.genomes = genomes
        self.keys = keys
        self.conditions = conditions
        self.reference = reference
        self.compile = compile
        self.sizes = list(sizes) if sizes is not None else config.layer_sizes
        device, dtype, pop = genomes.device, genomes.dtype, genomes.shape[0]
        self.env = make_env(config, keys, dtype=dtype)
        a = config.actor
        actor = actor_mod.initial_actor(self.sizes, keys, weight_init=a.weight_init,
                                        weight_limit=a.weight_limit, sigma_init=a.sigma_init, dtype=dtype)
        rule = initial_rule_state(self.sizes, pop, layout.state_dim, device=device, dtype=dtype)
        self.params = None if reference or native else rule_params(genomes, layout)
        self.neurons = actor_mod.neuron_count(self.sizes)
        self._seen = conditions.seen_rewards
        if self._seen is not None and (self._seen.dim() != 2 or self._seen.shape[0] != pop):
            raise ValueError(f"seen_rewards must have shape ({pop}, T), got {tuple(self._seen.shape)}")
        conditions = replace(conditions, seen_rewards=None)  # the spec holds no tensors (compiled code guards on it)
        self.spec = StepSpec(self.neurons, a.learning_rate, a.weight_limit, a.sigma_limit, conditions,
                             reference, fused=compile or native)
        self._no_height = torch.full((pop,), float("nan"), dtype=dtype, device=device)
        if compile or native:
            actor = fused.FusedActor.of(actor)
            rule = fused.map_rule_state(rule, fused.feature_major)
        if compile:
            self.params = fused.map_params(self.params, fused.feature_major)
        self._carry = Carry(torch.zeros((), dtype=torch.int64, device=device), self.env.state, self._no_height,
                            actor, rule)
        self.t = 0
        self._noise_keys = rng.stream_keys(keys, rng.STREAM_NOISE)
        self._transition = compiled.compiled_transition(transition) if compile else transition
        self._native = None
        if native:
            self._native = native_mod.Runner(
                native_mod.library(layout.signal_dim, layout.state_dim), genomes, self.env, actor, rule,
                self._noise_keys, learning_rate=a.learning_rate, weight_limit=a.weight_limit,
                sigma_limit=a.sigma_limit, plastic=conditions.plastic, zero_reward=conditions.zero_reward,
                seen_rewards=self._seen)

    @property
    def actor(self) -> ActorState:
        """The actors' plastic parameters and last activations (population-first; copies with ``native``)."""
        actor = self._carry.actor
        if self._native is not None:
            return native_mod.copy_actor(actor)
        return actor.view() if isinstance(actor, fused.FusedActor) else actor

    @property
    def rule_state(self) -> RuleState:
        """Recurrent states of the rule's cells (population-first; copies with ``native``)."""
        rule = self._carry.rule
        if self._native is not None:
            return fused.map_rule_state(rule, lambda t: fused.population_major(t).clone())
        return fused.map_rule_state(rule, fused.population_major) if self.spec.fused else rule

    @property
    def obs(self) -> torch.Tensor:
        """The observation ``(P, n_0)`` the actors see next."""
        return self.env.observe()

    def run(self, steps: int, fitness: torch.Tensor, rewards: torch.Tensor | None = None,
            states: torch.Tensor | None = None) -> None:
        """``steps`` steps: ``fitness (P,)`` (float64) += each reward, ``rewards (steps, P)`` receives them
        and ``states (steps, 2 * links, P)`` the env state after each step, if given."""
        if self._native is not None:
            self._native.run(steps, self.t, fitness, rewards, states)
            self.t += steps
            return
        for t in range(steps):
            r = self.step()
            fitness += r
            if rewards is not None:
                rewards[t] = r
            if states is not None:
                states[t] = self.env.state.t()

    def step(self) -> torch.Tensor:
        """Act, step the env, apply the rule; returns the reward ``(P,)``."""
        if self._native is not None:
            reward = torch.empty(1, self.genomes.shape[0], dtype=self.genomes.dtype)
            self.run(1, torch.zeros(self.genomes.shape[0], dtype=torch.float64), reward)
            return reward[0]
        env = self.env
        # The env object holds the physical state, so that assigning ``env.state`` takes effect.
        prev = env.prev_height if env.prev_height is not None else self._no_height
        carry = Carry(self._carry.t, env.state, prev, self._carry.actor, self._carry.rule)
        seen = None if self._seen is None else self._seen[:, self.t]
        self._carry, reward = self._transition(env, self.params, self.genomes, self.layout, self._noise_keys,
                                               carry, self.spec, seen)
        env.restore(self._carry.state, self._carry.prev_height, self.t + 1)
        self.t += 1
        return reward


ProgressFn = Callable[[int], None]


def use_compile(config: Config) -> bool:
    """Whether `run_lifetimes` compiles the step (when it does not use the native kernel):
    ``runtime.compile`` true, or null (auto) and enough work per generation to repay the compilation.

    Decided from the config alone, so every chunk, shard and lone re-evaluation of an
    individual under one config runs the same code.
    """
    if config.runtime.compile is None:
        return config.ga.population_size * config.ga.lifetime_steps >= COMPILE_MIN_WORK
    return bool(config.runtime.compile)


def use_native(config: Config, device: torch.device, dtype: torch.dtype, sizes: list[int] | None = None) -> bool:
    """Whether `run_lifetimes` uses the native kernel: ``runtime.native`` not false, float32 on
    CPU, a network the kernel handles, and (the first time) a successful build.

    ``runtime.native: true`` makes a failure an error; null (auto) warns once and falls back.
    """
    setting = config.runtime.native
    if setting is False:
        return False
    sizes = config.layer_sizes if sizes is None else sizes
    if torch.device(device).type != "cpu" or dtype != torch.float32:
        if setting:
            raise native_mod.NativeUnavailable("runtime.native is true but the native kernel runs float32 on CPU only")
        return False
    why = native_mod.supported(sizes, config.env.obs_dim // 3)
    if why is None:
        try:
            native_mod.library(config.rule.signal_dim, config.rule.state_dim)
        except native_mod.NativeUnavailable as e:
            why = str(e)
    if why is None:
        return True
    if setting:
        raise native_mod.NativeUnavailable(f"runtime.native is true but the native kernel cannot run: {why}")
    if why not in _warned:
        _warned.add(why)
        warnings.warn(f"native lifetime kernel not used ({why}); using the torch step", stacklevel=2)
    return False


_warned: set[str] = set()


def step_path(config: Config, device: torch.device, dtype: torch.dtype = torch.float32,
              sizes: list[int] | None = None) -> str:
    """Which step `run_lifetimes` runs for ``config``: ``native``, ``compiled`` or ``eager``."""
    if use_native(config, device, dtype, sizes):
        return "native"
    # On CPU torch.compile needs the C++ compiler as well: without one it would fail after ~20 s.
    if use_compile(config) and (torch.device(device).type != "cpu" or native_mod.compiler_found()):
        return "compiled"
    return "eager"


def run_lifetimes(genomes: torch.Tensor, layout: GenomeLayout, config: Config, keys: torch.Tensor, *,
                  steps: int | None = None, chunk_size: int | None = None, trace: bool = False,
                  conditions: Conditions = Conditions(), reference: bool = False,
                  sizes: list[int] | None = None, progress: ProgressFn | None = None,
                  states: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Summed reward ``(P,)`` of one lifetime per individual, and optionally the per-step rewards ``(P, T)``.

    ``states (P, T, 2 * links)``, if given, receives the env state after every step.
    ``progress(n)`` is called with individual-steps done, every 100 steps.
    """
    steps = config.ga.lifetime_steps if steps is None else steps
    pop = genomes.shape[0]
    path = "reference" if reference else step_path(config, genomes.device, genomes.dtype, sizes)
    native, compile = path == "native", path == "compiled"
    if chunk_size is None:
        chunk_size = config.runtime.chunk_size
    if chunk_size is None:
        if genomes.device.type != "cpu":
            chunk_size = _round_up(config.ga.population_size, LANES) if compile else pop
        elif native:
            chunk_size = DEFAULT_NATIVE_CHUNK
        else:
            chunk_size = DEFAULT_COMPILED_CPU_CHUNK if compile else DEFAULT_CPU_CHUNK
    if compile:
        # Every compiled chunk has the same size (the last one padded with copies of its last
        # individual): one compilation, and the same kernel for every individual.
        chunk_size = min(chunk_size, _round_up(config.ga.population_size, LANES))
    fitness = torch.zeros(pop, dtype=torch.float64, device=genomes.device)
    rewards = torch.zeros(pop, steps, dtype=genomes.dtype, device=genomes.device) if trace else None
    seen = conditions.seen_rewards

    def pad(t: torch.Tensor, n: int) -> torch.Tensor:
        return torch.cat((t, t[-1:].expand(chunk_size - n, *t.shape[1:]))) if compile and n < chunk_size else t

    with torch.no_grad(), _without_gc():
        for start in range(0, pop, chunk_size):
            sl = slice(start, min(start + chunk_size, pop))
            n = sl.stop - sl.start
            g, k = pad(genomes[sl], n), pad(keys[sl], n)
            cond = conditions if seen is None else replace(conditions, seen_rewards=pad(seen[sl], n))
            life = Lifetime(g, layout, config, k, conditions=cond, reference=reference, sizes=sizes,
                            compile=compile, native=native)
            total = torch.zeros(g.shape[0], dtype=torch.float64, device=genomes.device)
            chunk_rewards = torch.zeros(steps, g.shape[0], dtype=genomes.dtype, device=genomes.device) \
                if trace else None
            chunk_states = torch.zeros(steps, 2 * life.env.links, g.shape[0], dtype=genomes.dtype,
                                       device=genomes.device) if states is not None else None
            for t0 in range(0, steps, PROGRESS_STEPS):
                count = min(PROGRESS_STEPS, steps - t0)
                life.run(count, total, None if chunk_rewards is None else chunk_rewards[t0:t0 + count],
                         None if chunk_states is None else chunk_states[t0:t0 + count])
                if progress is not None:
                    progress(count * n)
            fitness[sl] = total[:n]
            if rewards is not None:
                rewards[sl] = chunk_rewards[:, :n].t()
            if states is not None:
                states[sl] = chunk_states[:, :, :n].permute(2, 0, 1)
    return fitness, rewards


@contextmanager
def _without_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: the step loop makes many short-lived Python objects,
    and scanning them every few hundred steps cost ~10% of a compiled step, for nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def evaluate(genomes: torch.Tensor, layout: GenomeLayout, config: Config, *, seed: int, generation: int,
             indices: torch.Tensor | None = None, progress: ProgressFn | None = None) -> torch.Tensor:
    """Fitness ``(P,)`` (float64): summed reward averaged over ``evals_per_individual`` lifetimes.

    ``indices`` are the individuals' positions in the whole population (default
    ``0..P-1``); with common random numbers every individual gets the same draws.
    """
    pop = genomes.shape[0]
    if indices is None:
        indices = torch.arange(pop)
    indices = indices.to(device=genomes.device, dtype=torch.int64)
    if config.ga.common_random_numbers:
        indices = torch.zeros_like(indices)
    total = torch.zeros(pop, dtype=torch.float64, device=genomes.device)
    reversed_config = antithetic_config(config) if config.ga.antithetic else config
    for e in range(config.ga.evals_per_individual):
        if config.ga.antithetic:
            # Pairs of lifetimes with identical draws and opposite motor directions.
            keys = rng.individual_keys(seed, generation, e // 2, indices)
            cfg = reversed_config if e % 2 else config
        else:
            keys = rng.individual_keys(seed, generation, e, indices)
            cfg = config
        fitness, _ = run_lifetimes(genomes, layout, cfg, keys, progress=progress)
        total += fitness
    return total / config.ga.evals_per_individual


def antithetic_config(config: Config) -> Config:
    """``config`` with the sign that ``ga.antithetic`` flips (motor direction or hidden goal) reversed:
    the second lifetime of an antithetic pair."""
    name = config.ga.flipped or "action_sign"
    return config.replace(env=replace(config.env, **{name: -getattr(config.env, name)}))
