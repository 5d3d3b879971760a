"""Lifetimes: a freshly initialised actor learns with a rule in its environment.

The fitness of an individual is the reward summed over ``lifetime_steps`` steps. Every
random draw comes from the individual's key (`metarl.core.rng`), so the result for an
individual does not depend on which other individuals share its batch, chunk or process.
On CPU the population runs in cache-sized chunks, each through its whole lifetime.

A `Lifetime` holds the state of one chunk and advances it on one backend
(`metarl.backends`: the spec, the compiled torch step or the native kernel; the step
itself is `metarl.core.step`). `run_lifetimes` selects the backend from the config and, the
first time a backend runs for a config in a process, checks it against the spec
(`self_check`), so that a stale or wrong fast path is an error rather than silently
different numbers.
"""

from __future__ import annotations

import functools
import gc
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields, replace

import torch

from .. import backends
from ..config import Config
from ..core import actor as actor_mod
from ..core import rng
from ..core.actor import ActorState
from ..core.genome import GenomeLayout
from ..core.rule import STANDARD, RuleDeclaration, initial_rule_state
from ..core.step import Carry, Conditions, StepSpec, learning_rates, make_env, reset_episode, transition
from ..errors import UserError
from . import compiled
from . import native as native_mod

__all__ = ["Conditions", "Lifetime", "make_env", "run_lifetimes", "evaluate",
           "self_check", "max_difference", "SelfCheckError"]

PROGRESS_STEPS = 100  # run_lifetimes reports progress (and calls the native kernel) every this many steps
# The self-check: this many individuals for this many steps on the backend and on the spec, and the largest
# difference it accepts (absolute plus relative) in rewards and in the actor's learned parameters. Measured
# differences are 2e-7 to 4e-7 (native and compiled, shipped models' configs); a rule changed in one place and
# not the other moves the actor's parameters by ~learning_rate per step.
CHECK_INDIVIDUALS = 4
CHECK_STEPS = 20
CHECK_TOLERANCE = 1e-4


class SelfCheckError(UserError):
    """A backend disagrees with the spec (`self_check`): a stale kernel or a rule changed in one place only."""


class Lifetime:
    """One lifetime of a batch of individuals, advanced step by step on one backend.

    ``genomes (P, G)``, ``keys (P,)`` int64 (see `metarl.core.rng.individual_keys`); ``backend``:
    ``spec``, ``compiled`` or ``native`` (`metarl.backends`; the caller decides, see
    `metarl.backends.select_backend`). ``eager``: run the compiled backend's step without compiling it (its
    mathematics, for the self-check and tests).
    """

    def __init__(self, genomes: torch.Tensor, layout: GenomeLayout, config: Config, keys: torch.Tensor, *,
                 conditions: Conditions = Conditions(), sizes: list[int] | None = None, backend: str = "spec",
                 eager: bool = False) -> None:
        layout.check(genomes)
        if keys.shape != (genomes.shape[0],):
            raise ValueError(f"keys must have shape ({genomes.shape[0]},), got {tuple(keys.shape)}")
        self.backend = backends.get(backend).name
        self.genomes = genomes
        self.sizes = list(sizes) if sizes is not None else config.layer_sizes
        device, dtype, pop = genomes.device, genomes.dtype, genomes.shape[0]
        self.env = make_env(config, keys, dtype=dtype)
        self._keys = keys
        a = config.actor
        lib = prog = None
        if self.backend == "native":
            prog = native_mod.program(layout.rule, self.env, layout.signal_dim)
            lib = native_mod.library(layout.signal_dim, layout.state_dim, prog=prog)
        draw = None if lib is None else functools.partial(native_mod.normal, lib)  # the same numbers, faster
        actor = actor_mod.initial_actor(self.sizes, keys, weight_init=a.weight_init,
                                        weight_limit=a.weight_limit, sigma_init=a.sigma_init, dtype=dtype,
                                        normal=draw)
        # The native kernel's rule state is made feature-major (population last) directly: zeros either way.
        rule = initial_rule_state(self.sizes, pop, layout.state_dim, device=device, dtype=dtype,
                                  traces=layout.rule.traces, population_last=lib is not None)
        self._seen = conditions.seen_rewards
        if self._seen is not None and (self._seen.dim() != 2 or self._seen.shape[0] != pop):
            raise ValueError(f"seen_rewards must have shape ({pop}, T), got {tuple(self._seen.shape)}")
        self._no_height = torch.full((pop,), float("nan"), dtype=dtype, device=device)
        self._carry = Carry(torch.zeros((), dtype=torch.int64, device=device), self.env.state, self._no_height,
                            actor, rule)
        self.t = 0
        noise_keys = rng.stream_keys(keys, rng.STREAM_NOISE)
        obs_keys = rng.stream_keys(keys, rng.STREAM_OBS_NOISE) if self.env.options.obs_noise > 0 else None
        rate = learning_rates(config, self.env)  # a float, or (P,) where dt is drawn per individual
        self._native = None
        if lib is not None and prog is not None:
            self._native = native_mod.Runner(
                lib, prog, genomes, layout, self.env,
                native_mod.FeatureMajor.of(actor, rule, rule_population_last=True), noise_keys, learning_rate=rate,
                weight_limit=a.weight_limit, sigma_limit=a.sigma_limit, sigma_min=a.sigma_min,
                reward_mean_time=config.rule.reward_mean_time, lifetime_steps=config.ga.lifetime_steps,
                plastic=conditions.plastic,
                zero_reward=conditions.zero_reward,
                seen_rewards=self._seen, obs_keys=obs_keys)
            return
        spec = StepSpec(actor_mod.neuron_count(self.sizes), rate if isinstance(rate, float) else a.learning_rate,
                        a.weight_limit, a.sigma_limit, replace(conditions, seen_rewards=None), config.ga.lifetime_steps,
                        a.sigma_min, config.rule.reward_mean_time)
        self._step_args = (genomes, layout, noise_keys)
        # transition's last two arguments: the sensor-noise keys and the learning rates per individual, if any.
        self._step_extra: tuple[torch.Tensor | None, torch.Tensor | None] = (
            obs_keys, None if isinstance(rate, float) else rate)
        self._spec = spec
        compile = self.backend == "compiled" and not eager
        self._transition = compiled.compiled_transition(transition, self._specialisation()) if compile \
            else transition

    def _specialisation(self) -> tuple:
        """What the compiled step is specialised on (its compile-failure fallback is kept per this key,
        `metarl.backends.compiled`): the env's class and options, the rule, the actor's sizes, the population,
        dtype, device, the step's constants and which optional inputs it takes."""
        obs_keys, rates = self._step_extra
        return (type(self.env), repr(self.env.options), self._step_args[1], tuple(self.sizes),
                self.genomes.shape[0], self.genomes.dtype, str(self.genomes.device), self._spec,
                self._seen is not None, obs_keys is not None, rates is not None)

    @property
    def actor(self) -> ActorState:
        """The actors' plastic parameters and last activations (population-first; copies with ``native``)."""
        if self._native is not None:
            return self._native.state.actor_copy()
        return self._carry.actor

    @property
    def carry(self) -> Carry:
        """What the torch backends change from step to step: step number, env state, actor, rule state."""
        if self._native is not None:
            raise ValueError("the native backend keeps its state in the kernel's buffers")
        return self._carry

    @carry.setter
    def carry(self, carry: Carry) -> None:
        """Continue from ``carry`` (e.g. tensors that a CUDA graph updates in place, ``bench/gpu_check.py``)."""
        if self._native is not None:
            raise ValueError("the native backend keeps its state in the kernel's buffers")
        self._carry = carry
        self.env.restore(carry.state, carry.prev_height, self.t)

    def run(self, steps: int, fitness: torch.Tensor, rewards: torch.Tensor | None = None,
            states: torch.Tensor | None = None) -> None:
        """``steps`` steps: ``fitness (P,)`` (float64) += each reward, ``rewards (steps, P)`` receives them
        and ``states (steps, state_size, P)`` the env state after each step, if given."""
        if self._native is not None:
            episode = self.env.options.episode_steps
            done = 0
            while done < steps:  # one kernel call per episode (part)
                reset_episode(self.env, self._keys, self.t)
                count = steps - done if episode is None else min(steps - done, episode - self.t % episode)
                part = slice(done, done + count)
                self._native.run(count, self.t, fitness, None if rewards is None else rewards[part],
                                 None if states is None else states[part])
                self.t += count
                done += count
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
        reset_episode(env, self._keys, self.t)
        # The env object holds the physical state, so that assigning ``env.state`` takes effect.
        prev = env.prev_height if env.prev_height is not None else self._no_height
        carry = Carry(self._carry.t, env.state, prev, self._carry.actor, self._carry.rule)
        seen = None if self._seen is None else self._seen[:, self.t]
        self._carry, reward = self._transition(env, *self._step_args, carry, self._spec, seen, *self._step_extra)
        if self.backend == "compiled":
            # Compiled code may return views into a larger buffer: contiguous copies give the next step the
            # strides it was compiled for (else it compiles a second time).
            c = self._carry
            self._carry = Carry(c.t, c.state, c.prev_height, ActorState(*([t.contiguous() for t in getattr(
                c.actor, name)] for name in _ACTOR_FIELDS)), c.rule.map(torch.Tensor.contiguous))
        env.restore(self._carry.state, self._carry.prev_height, self.t + 1)
        self.t += 1
        return reward


ProgressFn = Callable[[int], None]
_ACTOR_FIELDS = tuple(f.name for f in fields(ActorState))

def self_check(backend: str, config: Config, *, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32, sizes: list[int] | None = None,
               spec_device: torch.device | str | None = None, spec_dtype: torch.dtype | None = None,
               eager: bool = True, individuals: int = CHECK_INDIVIDUALS, rule: RuleDeclaration = STANDARD) -> float:
    """Run a few individuals (random genomes far from linear) for a few steps on ``backend`` and on the
    spec; returns the largest difference in rewards and learned actor parameters, relative to
    ``1 + |spec value|``. Raises `SelfCheckError` if the backend computes something else.

    Within `CHECK_TOLERANCE` of the spec the check passes at once (the usual case: 2e-7 to 4e-7). Beyond
    it, the difference may be float32 rounding rather than a stale kernel: sums over large rules (state
    or signal of hundreds) round differently in another order, and a chaotic lifetime (extreme physics)
    amplifies any rounding. So the spec is also run in float64, the truth both float32 computations
    approximate, and the backend must be as close to it as the float32 spec is (within
    `DRIFT_FACTOR`): after the first step, where rounding has had no time to grow and a stale kernel
    already differs by about the learning rate, and after all steps. Where float32 itself breaks
    down (the float32 spec non-finite where float64 is finite) nothing can be compared: it passes.

    The spec runs on ``spec_device`` in ``spec_dtype`` (default: the backend's); ``bench/gpu_check.py``
    checks a GPU against the spec on the CPU in float64. The compiled backend is the spec's own step compiled:
    checked eagerly (the default: compiling for the check would cost a compilation) it is the spec itself,
    so only ``eager=False`` checks what the compiler made of it (``bench/gpu_check.py``). Costs
    ~0.1 s (mostly the spec's small products); the float64 run only when needed.
    """
    sizes = config.layer_sizes if sizes is None else list(sizes)
    spec_device = device if spec_device is None else spec_device
    spec_dtype = dtype if spec_dtype is None else spec_dtype
    layout = GenomeLayout(config.rule.signal_dim, config.rule.state_dim, rule)
    genomes = layout.random(individuals, 0.5, torch.Generator().manual_seed(0))
    keys = rng.individual_keys(0, 0, 0, torch.arange(individuals))

    def run(name: str, dev: torch.device | str, dt: torch.dtype, run_eagerly: bool = True
            ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return _check_run(name, genomes.to(device=dev, dtype=dt), layout, config, keys.to(dev), sizes, run_eagerly)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these tiny products are fastest, and never oversubscribed, on one thread
    try:
        with torch.no_grad():
            spec = run("spec", spec_device, spec_dtype)
            got = run(backend, device, dtype, eager)
            worst, first = max_difference(spec[1], got[1]), max_difference(spec[0], got[0])
            if max(worst, first) <= CHECK_TOLERANCE or spec_dtype == torch.float64:
                drift = None
            else:
                exact = run("spec", spec_device, torch.float64)
                drift = [(max_difference(exact[i], got[i]), max_difference(exact[i], spec[i])) for i in (0, 1)]
    finally:
        torch.set_num_threads(threads)
    if drift is None:
        if max(worst, first) <= CHECK_TOLERANCE:
            return worst
        stale = True
    else:
        # At each point: the backend's distance from float64 against what float32 rounding allows there.
        stale = any(not (b <= max(CHECK_TOLERANCE, DRIFT_FACTOR * f) or not math.isfinite(f)) for b, f in drift)
    if stale:
        where = "at the first step" if drift is not None and not drift[0][0] <= max(
            CHECK_TOLERANCE, DRIFT_FACTOR * drift[0][1]) else f"after {CHECK_STEPS} steps"
        rounding = "" if drift is None else (f"; float32 rounding explains {max(f for _, f in drift):.3g} "
                                             f"(the float32 spec against float64)")
        on = ""
        if torch.device(spec_device) != torch.device(device) or spec_dtype != dtype:
            on = (f" (the backend on {torch.device(device)} in {str(dtype).removeprefix('torch.')}, the spec on "
                  f"{torch.device(spec_device)} in {str(spec_dtype).removeprefix('torch.')})")
        raise SelfCheckError(f"self-check failed: the {backend} backend differs from the spec by "
                             f"{max(worst, first):.3g} (tolerance {CHECK_TOLERANCE:g}) {where} of {individuals} "
                             f"individuals{on}{rounding}; a stale kernel, or the rule changed in one place only "
                             f"(docs/architecture.md)")
    return worst


def max_difference(want: list[torch.Tensor], got: list[torch.Tensor]) -> float:
    """The largest ``|got - want| / (1 + |want|)`` over pairs of tensors (any devices and dtypes, compared in
    float64 on the CPU). Equal non-finite values (both NaN, the same infinity) count as equal, a non-finite
    value against a finite or another one as infinitely different."""
    worst = 0.0
    for w, g in zip(want, got, strict=True):
        w, g = w.detach().double().cpu(), g.detach().double().cpu()
        same = (g == w) | (torch.isnan(g) & torch.isnan(w))
        diff = ((g - w).abs() / (1 + w.abs())).masked_fill(same, 0.0)
        diff = torch.where(torch.isfinite(g) & torch.isfinite(w) | same, diff, torch.full_like(diff, math.inf))
        if diff.numel():
            worst = max(worst, float(diff.max()))
    return worst


# The backend may be this many times further from the float64 spec than the float32 spec is (another summation
# order rounds differently, by a similar amount) before the self-check calls the difference a stale kernel.
DRIFT_FACTOR = 10.0


def _check_run(backend: str, genomes: torch.Tensor, layout: GenomeLayout, config: Config, keys: torch.Tensor,
               sizes: list[int], eager: bool = True) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The rewards and learned actor parameters of the self-check's lifetimes after the first step and after
    `CHECK_STEPS` steps, in float64."""
    n, device = genomes.shape[0], genomes.device
    life = Lifetime(genomes, layout, config, keys, sizes=sizes, backend=backend, eager=eager)
    rewards = torch.zeros(CHECK_STEPS, n, dtype=genomes.dtype, device=device)
    fitness = torch.zeros(n, dtype=torch.float64, device=device)

    def snapshot(upto: int) -> list[torch.Tensor]:
        a = life.actor
        return [t.double().clone() for t in (rewards[:upto], *a.weights, *a.biases, *a.sigmas)]

    life.run(1, fitness, rewards[:1])
    first = snapshot(1)
    life.run(CHECK_STEPS - 1, fitness, rewards[1:])
    return first, snapshot(CHECK_STEPS)


def run_lifetimes(genomes: torch.Tensor, layout: GenomeLayout, config: Config, keys: torch.Tensor, *,
                  steps: int | None = None, chunk_size: int | None = None, trace: bool = False,
                  conditions: Conditions = Conditions(), backend: str | None = None,
                  sizes: list[int] | None = None, progress: ProgressFn | None = None,
                  states: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Summed reward ``(P,)`` of one lifetime per individual, and optionally the per-step rewards ``(P, T)``.

    ``states (P, T, state_size)``, if given, receives the env state after every step.
    ``progress(n)`` is called with individual-steps done, every 100 steps. ``backend``: a backend's
    name (`metarl.backends`; e.g. ``spec`` for the plain reference), default `metarl.backends.select_backend`.
    """
    steps = config.ga.lifetime_steps if steps is None else steps
    pop = genomes.shape[0]
    # A genome with a NaN or infinite gene scores NaN on every backend: it never ranks or is saved. It is run as
    # zeros, so that no backend (the native kernel clamps, and would give it a finite score) ever sees it.
    # (A finite sum means every gene is finite: an infinite or NaN gene makes the sum infinite or NaN. The sum is
    # the cheap pass; only where it is not finite, or overflows, are the genomes checked one by one.)
    finite = genomes.numel() == 0 or bool(torch.isfinite(genomes.sum()))
    broken = torch.zeros(pop, dtype=torch.bool, device=genomes.device) if finite \
        else ~torch.isfinite(genomes).all(dim=1)
    if bool(broken.any()):
        genomes = genomes.masked_fill(broken[:, None], 0.0)
    chosen = backends.select_backend(config, genomes.device, genomes.dtype, sizes, layout.rule) if backend is None \
        else backends.get(backend)
    if chunk_size is None:
        chunk_size = chosen.chunk_size(config, genomes.device, pop)
    # A padded backend runs every chunk at one size (the last padded with copies of its last
    # individual): one compilation, and the same kernel for every individual.
    padded = chosen.padded
    fitness = torch.zeros(pop, dtype=torch.float64, device=genomes.device)
    rewards = torch.zeros(pop, steps, dtype=genomes.dtype, device=genomes.device) if trace else None
    seen = conditions.seen_rewards

    def pad(t: torch.Tensor, n: int) -> torch.Tensor:
        return torch.cat((t, t[-1:].expand(chunk_size - n, *t.shape[1:]))) if padded and n < chunk_size else t

    # The native kernel runs its own threads (torch's thread count); torch's own small operations between its calls
    # run on one, so that no OpenMP worker spins beside the kernel's threads after them, whether or not torch was
    # imported before metarl (whose import asks OpenMP for passive workers: read once, when torch loads).
    threads = torch.get_num_threads()
    around_kernel = chosen.name == backends.NATIVE.name and genomes.device.type == "cpu" and threads > 1
    with torch.no_grad(), _without_gc(), _torch_threads(1 if around_kernel else threads):
        for start in range(0, pop, chunk_size):
            sl = slice(start, min(start + chunk_size, pop))
            n = sl.stop - sl.start
            g, k = pad(genomes[sl], n), pad(keys[sl], n)
            cond = conditions if seen is None else replace(conditions, seen_rewards=pad(seen[sl], n))
            life = Lifetime(g, layout, config, k, conditions=cond, sizes=sizes, backend=chosen.name)
            total = torch.zeros(g.shape[0], dtype=torch.float64, device=genomes.device)
            chunk_rewards = torch.zeros(steps, g.shape[0], dtype=genomes.dtype, device=genomes.device) \
                if trace else None
            chunk_states = torch.zeros(steps, life.env.state_size(), g.shape[0], dtype=genomes.dtype,
                                       device=genomes.device) if states is not None else None
            for t0 in range(0, steps, PROGRESS_STEPS):
                count = min(PROGRESS_STEPS, steps - t0)
                with _torch_threads(threads):
                    life.run(count, total, None if chunk_rewards is None else chunk_rewards[t0:t0 + count],
                             None if chunk_states is None else chunk_states[t0:t0 + count])
                if progress is not None:
                    progress(count * n)
            fitness[sl] = total[:n]
            if rewards is not None:
                assert chunk_rewards is not None  # made whenever rewards is (trace)
                rewards[sl] = chunk_rewards[:, :n].t()
            if states is not None:
                assert chunk_states is not None  # made whenever states is given
                states[sl] = chunk_states[:, :, :n].permute(2, 0, 1)
    if bool(broken.any()):
        fitness[broken] = float("nan")
        if rewards is not None:
            rewards[broken] = float("nan")
        if states is not None:
            states[broken] = float("nan")
    return fitness, rewards


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """torch's CPU threads set to ``threads`` inside, put back after (never changes a result)."""
    before = torch.get_num_threads()
    if threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


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


def evaluate(genomes: torch.Tensor, layout: GenomeLayout, config: Config, *, seed: int, generation: int,
             indices: torch.Tensor | None = None, progress: ProgressFn | None = None) -> torch.Tensor:
    """Fitness ``(P,)`` (float64): summed reward averaged over ``evals_per_individual`` lifetimes.

    ``indices`` are the individuals' positions in the whole population (default
    ``0..P-1``); with common random numbers every individual gets the same draws.
    """
    if config.ga.fitness == "worst_motor":  # the same lifetimes as the mean's, split by motor direction
        return torch.minimum(*(evaluate(genomes, layout, c, seed=seed, generation=generation, indices=indices,
                                        progress=progress) for c in motor_directions(config)))
    pop = genomes.shape[0]
    if indices is None:
        indices = torch.arange(pop)
    indices = indices.to(device=genomes.device, dtype=torch.int64)
    if config.ga.common_random_numbers:
        indices = torch.zeros_like(indices)
    total = torch.zeros(pop, dtype=torch.float64, device=genomes.device)
    group = antithetic_configs(config)
    for e in range(config.ga.evals_per_individual):
        # Antithetic: groups of lifetimes with identical draws and the flipped signs in every combination.
        keys = rng.individual_keys(seed, generation, e // len(group), indices)
        fitness, _ = run_lifetimes(genomes, layout, group[e % len(group)], keys, progress=progress)
        total += fitness
    return total / config.ga.evals_per_individual


def motor_directions(config: Config) -> list[Config]:
    """``config`` (antithetic over the motor, alone or with the goal) as two configs, one per motor direction
    (``config``'s first), each with the rest of the group and half the lifetimes, on the same draws as the
    whole group's: what ``ga.fitness: worst_motor`` takes the lower mean of."""
    if "action_sign" not in config.ga.flips:
        raise ValueError(f"motor_directions: ga.antithetic {config.ga.antithetic!r} does not flip the motor")
    rest = "goal" if "goal" in config.ga.flips else False
    ga = replace(config.ga, antithetic=rest, fitness="mean", evals_per_individual=config.ga.evals_per_individual // 2)
    return [config.replace(env=replace(config.env, action_sign=sign * config.env.action_sign), ga=ga)
            for sign in (1, -1)]


def antithetic_configs(config: Config) -> list[Config]:
    """The configs of one antithetic group, ``config`` first: every combination of the signs that
    ``ga.antithetic`` flips (motor direction and/or hidden goal) reversed; ``[config]`` without antithetic."""
    configs = [config]
    for name in config.ga.flips:
        configs += [c.replace(env=replace(c.env, **{name: -getattr(c.env, name)})) for c in configs]
    return configs
