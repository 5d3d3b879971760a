"""Does a rule really learn? The rule against baselines on the same random draws.

Every condition runs on the same individual keys, so episode ``i`` has the same initial
actor, environment parameters and sampling noise in all of them (common random numbers):

- ``learned``: the rule, as trained;
- ``no_plasticity``: the rule is never applied, the initial actor acts unchanged;
- ``reward_zeroed``: the rule runs but always sees reward 0 (is it reward-driven?);
- ``random_rule``: one genome per episode from the GA's initial distribution
  ``Normal(0, init_std^2)`` (is evolution better than chance?).

The score of an episode is its summed reward (the training fitness). ``lifetime_gain`` of
an episode is the mean reward per step in the last quarter of the lifetime *minus* the
mean in the first quarter: positive when the actor got better during its life. It is a
difference, not a ratio, because the first quarter's reward can be zero. Keys come from a
generation namespace that training never reaches, so evaluation episodes are unseen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from . import rng
from .actor import ActorState
from .config import Config
from .genome import GenomeLayout
from .lifetime import Conditions, Lifetime, ProgressFn, run_lifetimes, use_native

# Key namespaces (the ``generation`` argument of `rng.individual_keys`). Training uses
# generations 0, 1, 2, ...; these are far beyond any run, so the draws are never trained on.
EVAL_GENERATION = 0xE7A1_0000
REPLAY_GENERATION = 0xE7A1_0001
# `random_rule` genomes come from their own generator stream, distinct from the GA's
# initial population even when the evaluation seed equals the training seed.
RANDOM_RULE_STREAM = 1

CONDITIONS: dict[str, Conditions] = {
    "learned": Conditions(),
    "no_plasticity": Conditions(plastic=False),
    "reward_zeroed": Conditions(zero_reward=True),
    "random_rule": Conditions(),
}
GAIN_DEFINITION = "mean reward per step, last quarter of the lifetime minus first quarter (learned rule)"
Z95 = 1.96


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and normal-approximation 95% CI of ``n`` values."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: torch.Tensor) -> Summary:
        """Summary of ``values (n,)``."""
        v = values.detach().double().reshape(-1).cpu()
        std = float(v.std()) if v.numel() > 1 else 0.0
        return cls(float(v.mean()), std, int(v.numel()))

    @property
    def ci95(self) -> tuple[float, float]:
        """``mean -/+ 1.96 std / sqrt(n)``."""
        half = Z95 * self.std / math.sqrt(self.n)
        return self.mean - half, self.mean + half

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"mean", "std", "ci95": [lo, hi], "n"}``."""
        return {"mean": self.mean, "std": self.std, "ci95": list(self.ci95), "n": self.n}


@dataclass(frozen=True)
class Evaluation:
    """Per-episode results of every condition."""

    fitness: dict[str, torch.Tensor]  # condition -> summed reward per episode (N,) float64
    gain: torch.Tensor  # lifetime gain of the learned rule per episode (N,)
    baseline_gain: torch.Tensor  # the same for no_plasticity: what the dynamics alone give (N,)
    steps: int

    @property
    def summaries(self) -> dict[str, Summary]:
        """`Summary` of each condition, in `CONDITIONS` order."""
        return {name: Summary.of(values) for name, values in self.fitness.items()}

    @property
    def differences(self) -> dict[str, Summary]:
        """``learned - baseline`` per episode for each baseline: paired, so the shared draws cancel."""
        learned = self.fitness["learned"]
        return {f"learned - {name}": Summary.of(learned - values)
                for name, values in self.fitness.items() if name != "learned"}

    @property
    def ratio(self) -> float | None:
        """Mean of ``learned`` over mean of ``no_plasticity`` (None when the latter is 0)."""
        base = float(self.fitness["no_plasticity"].mean())
        return float(self.fitness["learned"].mean()) / base if base != 0 else None

    def to_dict(self) -> dict[str, Any]:
        """JSON form of the results (without the settings, which the caller knows)."""
        return {"conditions": {k: s.to_dict() for k, s in self.summaries.items()},
                "paired_differences": {k: s.to_dict() for k, s in self.differences.items()},
                "ratio_learned_no_plasticity": self.ratio,
                "lifetime_gain": {**Summary.of(self.gain).to_dict(), "definition": GAIN_DEFINITION},
                "lifetime_gain_no_plasticity": Summary.of(self.baseline_gain).to_dict()}


def evaluation_keys(seed: int, episodes: int, *, generation: int = EVAL_GENERATION, lifetime: int = 0
                    ) -> torch.Tensor:
    """Keys ``(episodes,)`` of evaluation (or replay) episodes; never used by training."""
    return rng.individual_keys(seed, generation, lifetime, torch.arange(episodes))


def random_rule_genomes(layout: GenomeLayout, episodes: int, init_std: float, seed: int) -> torch.Tensor:
    """Genomes ``(episodes, G)`` from the GA's initial distribution ``Normal(0, init_std^2)``."""
    gen = torch.Generator().manual_seed(rng.hash_ints(seed, EVAL_GENERATION, RANDOM_RULE_STREAM))
    return layout.random(episodes, init_std, gen)


def lifetime_gain(rewards: torch.Tensor) -> torch.Tensor:
    """Mean reward of the last quarter minus the first quarter, ``rewards (N, T) -> (N,)``."""
    quarter = max(1, rewards.shape[1] // 4)
    r = rewards.double()
    return r[:, -quarter:].mean(dim=1) - r[:, :quarter].mean(dim=1)


def evaluate_rule(genome: torch.Tensor, layout: GenomeLayout, config: Config, *, episodes: int, seed: int,
                  steps: int | None = None, sizes: list[int] | None = None,
                  device: torch.device | str = "cpu", progress: ProgressFn | None = None) -> Evaluation:
    """Run ``episodes`` lifetimes of ``genome (G,)`` in every condition on the same keys."""
    if genome.dim() != 1 or genome.shape[0] != layout.size:
        raise ValueError(f"genome must have shape ({layout.size},), got {tuple(genome.shape)}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    steps = config.ga.lifetime_steps if steps is None else steps
    keys = evaluation_keys(seed, episodes).to(device)
    learned = genome.to(device).expand(episodes, -1).contiguous()
    genomes = {name: learned for name in CONDITIONS}
    genomes["random_rule"] = random_rule_genomes(layout, episodes, config.rule.init_std, seed).to(
        device=device, dtype=learned.dtype)
    fitness, traces = {}, {}
    for name, conditions in CONDITIONS.items():
        total, rewards = run_lifetimes(genomes[name], layout, config, keys, steps=steps, conditions=conditions,
                                       sizes=sizes, trace=name in ("learned", "no_plasticity"),
                                       progress=progress)
        fitness[name] = total.cpu()
        traces[name] = rewards
    return Evaluation(fitness, lifetime_gain(traces["learned"]).cpu(),
                      lifetime_gain(traces["no_plasticity"]).cpu(), steps)


@dataclass(frozen=True)
class LifetimeSample:
    """Rewards and actors of a batch of lifetimes (for plots)."""

    rewards: torch.Tensor  # (N, T)
    initial: ActorState  # actors before the first step
    final: ActorState  # actors after the last step


def sample_lifetimes(genome: torch.Tensor, layout: GenomeLayout, config: Config, keys: torch.Tensor, *,
                     steps: int, conditions: Conditions = Conditions(), sizes: list[int] | None = None
                     ) -> LifetimeSample:
    """Run ``keys (N,)`` lifetimes of ``genome (G,)``, keeping the initial and final actors."""
    genomes = genome.to(keys.device).expand(keys.shape[0], -1).contiguous()
    with torch.no_grad():
        native = use_native(config, genomes.device, genomes.dtype, sizes)  # the path of run_lifetimes
        life = Lifetime(genomes, layout, config, keys, conditions=conditions, sizes=sizes, native=native)
        initial = life.actor.clone()
        rewards = torch.stack([life.step() for _ in range(steps)], dim=1)
    return LifetimeSample(rewards, initial, life.actor.clone())


def format_table(evaluation: Evaluation) -> str:
    """Readable table of the conditions, the learned/no_plasticity ratio and the lifetime gain."""
    lines = [f"{'condition':<15}{'mean':>11}{'std':>11}{'95% CI':>25}{'n':>7}"]
    for name, s in evaluation.summaries.items():
        lo, hi = s.ci95
        lines.append(f"{name:<15}{s.mean:>11.3f}{s.std:>11.3f}{f'[{lo:.3f}, {hi:.3f}]':>25}{s.n:>7}")
    lines.append(f"score = reward summed over a lifetime of {evaluation.steps} steps")
    lines.append("paired differences (same actors and environments, so luck cancels):")
    for name, s in evaluation.differences.items():
        lo, hi = s.ci95
        lines.append(f"  {name:<28}{s.mean:>+11.3f}  95% CI [{lo:+.3f}, {hi:+.3f}]")
    ratio = evaluation.ratio
    lines.append(f"learned / no_plasticity = {'n/a' if ratio is None else f'{ratio:.3f}'}")
    for label, values in (("learned", evaluation.gain), ("no_plasticity", evaluation.baseline_gain)):
        g = Summary.of(values)
        lo, hi = g.ci95
        lines.append(f"lifetime_gain ({label}) = {g.mean:+.4f}  95% CI [{lo:+.4f}, {hi:+.4f}]")
    lines.append(f"  ({GAIN_DEFINITION.replace(' (learned rule)', '')})")
    return "\n".join(lines)
