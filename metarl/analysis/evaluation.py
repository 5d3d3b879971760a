"""Does a rule really learn? The rule against baselines on the same random draws.

Every condition runs on the same individual keys, so episode ``i`` has the same initial
actor, environment parameters and sampling noise in all of them (common random numbers):

- ``learned``: the rule, as trained;
- ``no_plasticity``: the rule is never applied, the initial actor acts unchanged;
- ``reward_zeroed``: the rule runs but always sees reward 0 (is it reward-driven?);
- ``random_rule``: one genome per episode from the GA's initial distribution
  ``Normal(0, init_std^2)`` (is evolution better than chance?);
- ``reward_shuffled``: the rule runs but sees the rewards of another episode's ``learned``
  lifetime (a fixed derangement), so it gets a reward signal with realistic statistics that
  carries no information about its own lifetime;
- ``reference``: a classic controller that knows the physics and the goal
  (`metarl.analysis.controllers`), the bar a learned rule is held against.

The score of an episode is its summed reward (the training fitness). Every episode is run with each hidden goal
and each motor direction that training drew, and its score is their mean, as in training: with a hidden goal
(``ga.antithetic: goal`` or ``env.goal: random``) once with each goal (+1 and -1); with both motor directions
(``ga.antithetic: true``/``motor`` or ``env.action_sign: random``) once with each (the configured sign and its
opposite; +1 and -1 for random); the scores per goal and per motor direction are reported too. A fixed
``env.action_sign`` without antithetic motor pairs (``--set env.action_sign=1`` on a model trained with the motor
random) evaluates that direction only. The task is the config given (`metarl.config.evaluation_task` makes it
from a model's recorded ``evaluation`` section). With a reversal (``env.goal_switch`` within the lifetime) the
reward summed from the switch on (the *second half*) is reported per motor direction (``action_sign`` +1 and -1)
and, for a hidden goal, per reversal (+1 -> -1, -1 -> +1), for every condition: a rule that follows the reversal
both ways scores there as the reference controller does (a training mix, ``env.goal_switch_probability``
below 1, is evaluated with every lifetime reversed). ``last_quarter_height`` is the mean height per link
(0 hanging, 2 upright) over the last quarter of the lifetime; an episode is *balanced* when that height stays above
``BALANCED_HEIGHT`` (0.9 of the maximum) for at least ``BALANCED_SHARE`` of the last quarter. ``lifetime_gain`` of
an episode is the mean reward per step in the last quarter of the lifetime *minus* the
mean in the first quarter: positive when the actor got better during its life. It is a
difference, not a ratio, because the first quarter's reward can be zero. Keys come from a
generation namespace that training never reaches, so evaluation episodes are unseen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .. import envs
from ..backends import select_backend
from ..backends.lifetime import Conditions, Lifetime, ProgressFn, evaluate, make_env, motor_directions, run_lifetimes
from ..config import Config
from ..core import rng
from ..core.actor import ActorState
from ..core.genome import GenomeLayout, layout_of
from .controllers import run_reference
from .defaults import RESCORE_EPISODES  # noqa: F401 - evaluation.RESCORE_EPISODES, as before

# Key namespaces (the ``generation`` argument of `rng.individual_keys`). Training uses
# generations 0, 1, 2, ...; these are far beyond any run, so the draws are never trained on.
EVAL_GENERATION = 0xE7A1_0000
REPLAY_GENERATION = 0xE7A1_0001
# Re-scoring candidates (`rescore`) uses its own namespace, so that choosing a model by it does not
# bias the evaluation reported for that model.
VALIDATION_GENERATION = 0xE7A1_0002
# `random_rule` genomes come from their own generator stream, distinct from the GA's
# initial population even when the evaluation seed equals the training seed.
RANDOM_RULE_STREAM = 1

CONDITIONS: dict[str, Conditions] = {
    "learned": Conditions(),
    "no_plasticity": Conditions(plastic=False),
    "reward_zeroed": Conditions(zero_reward=True),
    "random_rule": Conditions(),
    "reward_shuffled": Conditions(),  # seen_rewards filled in from the learned episodes
}
# Conditions run by a controller, not by the rule.
CONTROLLERS = ("reference",)
ALL_CONDITIONS = (*CONDITIONS, *CONTROLLERS)
# `reward_shuffled` derangement: its own generator stream.
SHUFFLE_STREAM = 2
BALANCED_HEIGHT = 0.9 * 2.0  # per link: 0.9 of the maximum height
BALANCED_SHARE = 0.9
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

    fitness: dict[str, torch.Tensor]  # condition -> summed reward per episode (N,) float64 (mean over goals)
    gain: torch.Tensor  # lifetime gain of the learned rule per episode (N,)
    baseline_gain: torch.Tensor  # the same for no_plasticity: what the dynamics alone give (N,)
    steps: int
    # condition -> mean height per link over the last quarter, per episode (N,) (mean over goals)
    last_quarter_height: dict[str, torch.Tensor]
    balanced: dict[str, torch.Tensor]  # condition -> share of the episode's lifetimes (goals) balanced (N,)
    height_curve: dict[str, torch.Tensor]  # condition -> mean height per link at every step, per goal (goals, T)
    per_goal: dict[str, dict[int, torch.Tensor]]  # condition -> goal -> score per episode (N,); hidden goals only
    # Both motor directions only: condition -> motor direction -> score per episode (N,) (mean over goals), and the
    # share of the episode's lifetimes (goals) balanced with that direction.
    per_motor: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)
    balanced_per_motor: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)
    # Hidden goals only: condition -> goal -> whether each episode's lifetimes with that goal balance (N,).
    balanced_per_goal: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)
    # Lifetimes of several episodes (env.episode_steps) only: condition -> reward summed over each of the
    # lifetime's episodes (N, E) (mean over goals); a rule that learns across resets does better in later ones.
    per_episode: dict[str, torch.Tensor] = field(default_factory=dict)
    # Reversal (env.goal_switch within the lifetime) only: the step the goal flips at (or the range [first, last]
    # each lifetime draws its step from), condition -> reward summed from the lifetime's step on per goal and motor
    # variant (goals, motors, N) (one goal row without a hidden goal, one motor column without both motor
    # directions), and each lifetime's motor direction per motor variant (motors, N).
    switch: int | list[int] | None = None
    after_switch: dict[str, torch.Tensor] = field(default_factory=dict)
    action_sign: torch.Tensor | None = None

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

    def balanced_fraction(self, name: str) -> float:
        """Share of condition ``name``'s lifetimes that balance (see the module docstring)."""
        return float(self.balanced[name].double().mean())

    def condition_dict(self, name: str) -> dict[str, Any]:
        """JSON form of one condition: summary, height metrics and (hidden goals) the score per goal."""
        out = {**Summary.of(self.fitness[name]).to_dict(),
               "last_quarter_height": Summary.of(self.last_quarter_height[name]).to_dict(),
               "balanced_fraction": self.balanced_fraction(name)}
        if name in self.per_goal:
            out["per_goal"] = {f"{g:+d}": {**Summary.of(v).to_dict(),
                                           "balanced_fraction": float(self.balanced_per_goal[name][g].mean())}
                               for g, v in self.per_goal[name].items()}
        if name in self.per_motor:
            out["per_motor"] = {f"{m:+d}": {**Summary.of(v).to_dict(),
                                            "balanced_fraction": float(self.balanced_per_motor[name][m].mean())}
                                for m, v in self.per_motor[name].items()}
        if name in self.per_episode:
            out["per_episode"] = [Summary.of(v).to_dict() for v in self.per_episode[name].unbind(1)]
        return out

    def reversal(self) -> dict[str, dict[str, torch.Tensor]]:
        """The second-half score per group of lifetimes: ``"motor +1"``, ``"motor -1"`` (mean over the goals)
        and, for a hidden goal, ``"goal +1->-1"``, ``"goal -1->+1"`` and each motor direction with each;
        group -> condition -> score per lifetime of the group. Empty without a reversal."""
        if self.switch is None or self.action_sign is None:
            return {}
        goals = tuple(self.per_goal["learned"]) if self.per_goal else None
        signs = self.action_sign  # (motors, N)

        def pick(values: torch.Tensor, sign: int) -> torch.Tensor:
            """The lifetimes of ``values (motors, N)`` with motor direction ``sign``, every motor variant's."""
            return torch.cat([values[m][signs[m] == sign] for m in range(signs.shape[0])])

        groups: dict[str, dict[str, torch.Tensor]] = {}
        for sign in (1, -1):
            if bool((signs == sign).any()):
                groups[f"motor {sign:+d}"] = {n: pick(v.mean(dim=0), sign) for n, v in self.after_switch.items()}
        for i, goal in enumerate(goals or ()):
            groups[f"goal {goal:+d}->{-goal:+d}"] = {n: v[i].reshape(-1) for n, v in self.after_switch.items()}
            for sign in (1, -1):
                if bool((signs == sign).any()):
                    groups[f"motor {sign:+d}, goal {goal:+d}->{-goal:+d}"] = {
                        n: pick(v[i], sign) for n, v in self.after_switch.items()}
        return groups

    def reversal_dict(self) -> dict[str, Any]:
        """JSON form of `reversal`: per group, each condition's summary, the learned / reference ratio of the
        means and the paired difference learned - reference."""
        after = ([self.steps - self.switch[1], self.steps - self.switch[0]] if isinstance(self.switch, list)
                 else self.steps - (self.switch or 0))
        out: dict[str, Any] = {"switch": self.switch, "steps_after": after, "groups": {}}
        for group, values in self.reversal().items():
            ref = float(values["reference"].mean())
            out["groups"][group] = {
                "conditions": {n: Summary.of(v).to_dict() for n, v in values.items()},
                "ratio_learned_reference": float(values["learned"].mean()) / ref if ref != 0 else None,
                "learned - reference": Summary.of(values["learned"] - values["reference"]).to_dict()}
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON form of the results (without the settings, which the caller knows)."""
        out = {"conditions": {k: self.condition_dict(k) for k in self.fitness},
               "paired_differences": {k: s.to_dict() for k, s in self.differences.items()},
               "ratio_learned_no_plasticity": self.ratio,
               "lifetime_gain": {**Summary.of(self.gain).to_dict(), "definition": GAIN_DEFINITION},
               "lifetime_gain_no_plasticity": Summary.of(self.baseline_gain).to_dict()}
        if self.switch is not None:
            out["reversal"] = self.reversal_dict()
        return out


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


def episode_sums(rewards: torch.Tensor, episode_steps: int) -> torch.Tensor:
    """Reward summed over each episode, ``rewards (N, T) -> (N, ceil(T / episode_steps))`` float64
    (the last episode may be cut short by the end of the lifetime)."""
    r = rewards.double()
    return torch.stack([part.sum(dim=1) for part in r.split(episode_steps, dim=1)], dim=1)


def goals_of(config: Config) -> tuple[int, ...] | None:
    """The goals every evaluation episode is run with: (1, -1) for a hidden-goal task, else None."""
    if "goal" in config.ga.flips or config.env.goal == "random":
        return (1, -1)
    return None


def motors_of(config: Config) -> tuple[int, ...] | None:
    """The motor directions every evaluation episode is run with: the configured sign and its opposite where
    training drew both (antithetic motor pairs), (1, -1) for a motor drawn per lifetime, else None (the config's
    one direction)."""
    if "action_sign" in config.ga.flips:
        sign = int(config.env.action_sign)
        return (sign, -sign)
    if config.env.action_sign == "random":
        return (1, -1)
    return None


def variants_of(config: Config) -> list[tuple[int | None, int | None]]:
    """``(goal, motor)`` of each lifetime an evaluation episode is run as (None: the config's own), goals outer."""
    return [(g, m) for g in goals_of(config) or (None,) for m in motors_of(config) or (None,)]


def task_line(config: Config, steps: int) -> str:
    """One line naming the task an evaluation runs: physics, noise, goals, motor directions, reversal, length."""
    env = config.env
    goals, motors = goals_of(config), motors_of(config)
    goal = "+1 and -1 (hidden), each episode with both" if goals else f"{env.goal}"
    motor = (f"{motors[0]:+d} and {motors[1]:+d}, each episode with both" if motors else f"{int(env.action_sign):+d}")
    switch = "none" if env.goal_switch is None else f"at {env.goal_switch} in every lifetime"
    params = ", ".join(f"{k} {v}" for k, v in env.params.items()) or "default"
    return (f"task: {env.name}, params {params}, sensor noise {env.obs_noise}, dt {env.dt}, max torque "
            f"{env.max_torque}, init {env.init}, goal {goal}, motor {motor}, goal switch {switch}, {steps} steps")


def heights(states: torch.Tensor) -> torch.Tensor:
    """Mean height per link ``(N, T)`` of states ``(N, T, 2 * links)`` (0 hanging, 2 upright)."""
    theta = states[..., 0::2].double()
    return (1 - torch.cos(theta)).mean(dim=-1)


def balanced_lifetimes(height: torch.Tensor) -> torch.Tensor:
    """Whether each lifetime balances, ``height (N, T)`` (mean height per link) -> ``(N,)`` float64 of 0/1: above
    `BALANCED_HEIGHT` for at least `BALANCED_SHARE` of the last quarter."""
    quarter = max(1, height.shape[1] // 4)
    return ((height[:, -quarter:] > BALANCED_HEIGHT).double().mean(dim=1) >= BALANCED_SHARE).double()


def derangement(n: int, seed: int) -> torch.Tensor:
    """A seeded permutation of ``range(n)`` without fixed points (for n >= 2)."""
    gen = torch.Generator().manual_seed(rng.hash_ints(seed, EVAL_GENERATION, SHUFFLE_STREAM))
    order = torch.randperm(n, generator=gen)
    out = torch.empty(n, dtype=torch.int64)
    out[order] = order.roll(-1)  # each episode takes the next one's in a random cycle
    return out


def evaluate_rule(genome: torch.Tensor, layout: GenomeLayout, config: Config, *, episodes: int, seed: int,
                  steps: int | None = None, sizes: list[int] | None = None,
                  device: torch.device | str = "cpu", progress: ProgressFn | None = None) -> Evaluation:
    """Run ``episodes`` lifetimes of ``genome (G,)`` in every condition on the same keys."""
    if genome.dim() != 1 or genome.shape[0] != layout.size:
        raise ValueError(f"genome must have shape ({layout.size},), got {tuple(genome.shape)}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    steps = config.ga.lifetime_steps if steps is None else steps
    if config.env.switch_drawn:  # a training mix of lifetimes with and without a reversal: reverse every one
        config = config.replace(env=replace(config.env, goal_switch_probability=1.0))
    goals, motors = goals_of(config), motors_of(config)
    variants = variants_of(config)

    def variant_config(goal: int | None, motor: int | None) -> Config:
        env = config.env if goal is None else replace(config.env, goal=goal)
        return config.replace(env=env if motor is None else replace(env, action_sign=motor))

    configs = [variant_config(g, m) for g, m in variants]
    keys = evaluation_keys(seed, episodes).to(device)
    learned = genome.to(device).expand(episodes, -1).contiguous()
    genomes = {name: learned for name in CONDITIONS}
    genomes["random_rule"] = random_rule_genomes(layout, episodes, config.rule.init_std, seed).to(
        device=device, dtype=learned.dtype)
    state_size = envs.env_class(config.env.name).state_size()
    # Per condition, one (fitness, rewards, heights) per variant (goal and motor direction).
    runs: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
    for name, conditions in CONDITIONS.items():
        if name == "reward_shuffled":
            pooled = torch.cat([r for _, r, _ in runs["learned"]])  # every learned lifetime, all variants
            seen = pooled[derangement(pooled.shape[0], seed)]
        runs[name] = []
        for i, cfg in enumerate(configs):
            cond = conditions
            if name == "reward_shuffled":
                cond = replace(conditions, seen_rewards=seen[i * episodes:(i + 1) * episodes])
            states = torch.zeros(episodes, steps, state_size, dtype=learned.dtype, device=device)
            total, rewards = run_lifetimes(genomes[name], layout, cfg, keys, steps=steps, conditions=cond,
                                           sizes=sizes, trace=True, progress=progress, states=states)
            assert rewards is not None  # trace=True
            runs[name].append((total.cpu(), rewards, heights(states).cpu()))
    signs = []  # per variant: each lifetime's motor direction (N,)
    switch_steps = []  # per variant: the step each lifetime's goal flips at (an int for all, a tensor, or None)
    for cfg in configs:
        env = make_env(cfg, keys)
        signs.append(env.action_sign.cpu() * torch.ones(episodes, dtype=torch.int64))
        switch_steps.append(env.switch_step)
        total, rewards, states = run_reference(env, steps, keys)
        runs.setdefault("reference", []).append((total.cpu(), rewards, heights(states).cpu()))
        if progress is not None:
            progress(episodes * steps)
    quarter = max(1, steps // 4)

    def mean_over(values: list[torch.Tensor], goal: int | None = None, motor: int | None = None) -> torch.Tensor:
        """The mean over the variants (those of ``goal`` and/or ``motor`` when given) of per-variant values."""
        chosen = [v for v, (g, m) in zip(values, variants, strict=True)
                  if (goal is None or g == goal) and (motor is None or m == motor)]
        return torch.stack(chosen).mean(dim=0)

    scores = {n: [f for f, _, _ in r] for n, r in runs.items()}
    balanced_runs = {n: [balanced_lifetimes(h) for _, _, h in r] for n, r in runs.items()}
    fitness = {n: mean_over(v) for n, v in scores.items()}
    last = {n: mean_over([h[:, -quarter:].mean(dim=1) for _, _, h in r]) for n, r in runs.items()}
    balanced = {n: mean_over(v) for n, v in balanced_runs.items()}
    curve = {n: torch.stack([mean_over([h.mean(dim=0) for _, _, h in r], goal=g) for g in goals or (None,)])
             for n, r in runs.items()}
    per_goal = {} if goals is None else {n: {g: mean_over(v, goal=g) for g in goals} for n, v in scores.items()}
    per_motor = {} if motors is None else {n: {m: mean_over(v, motor=m) for m in motors} for n, v in scores.items()}
    balanced_per_motor = {} if motors is None else {n: {m: mean_over(v, motor=m) for m in motors}
                                                    for n, v in balanced_runs.items()}
    balanced_per_goal = {} if goals is None else {n: {g: mean_over(v, goal=g) for g in goals}
                                                  for n, v in balanced_runs.items()}
    per_episode = {}
    if config.env.episode_steps is not None:
        per_episode = {n: mean_over([episode_sums(rw, config.env.episode_steps).cpu() for _, rw, _ in r])
                       for n, r in runs.items()}
    gain = mean_over([lifetime_gain(rw).cpu() for _, rw, _ in runs["learned"]])
    base_gain = mean_over([lifetime_gain(rw).cpu() for _, rw, _ in runs["no_plasticity"]])
    switch = config.env.goal_switch
    if switch is not None and config.env.switch_range[0] >= steps:
        switch = None  # no reversal within the lifetime

    def summed_after(rewards: torch.Tensor, step: int | torch.Tensor | None) -> torch.Tensor:
        """Each lifetime's reward (N, T) summed from its switch step on (N,)."""
        assert step is not None  # a reversal: every env has its step
        if isinstance(step, int):
            return rewards[:, step:].double().sum(dim=1).cpu()
        after = torch.arange(rewards.shape[1], device=rewards.device) >= step.to(rewards.device)[:, None]
        # where, not a product with the mask: a non-finite reward before the step must not reach the sum (inf * 0)
        return torch.where(after, rewards.double(), 0.0).sum(dim=1).cpu()

    shape = (len(goals or (None,)), len(motors or (None,)), episodes)  # variants are goals outer, motors inner
    after = {} if switch is None else {
        n: torch.stack([summed_after(rw, step) for (_, rw, _), step in zip(r, switch_steps, strict=True)]
                       ).reshape(shape) for n, r in runs.items()}
    motor_signs = torch.stack(signs).reshape(shape)[0]  # (motors, N): the same under every goal
    return Evaluation(fitness, gain, base_gain, steps, last, balanced, curve, per_goal, per_motor=per_motor,
                      balanced_per_motor=balanced_per_motor, balanced_per_goal=balanced_per_goal,
                      per_episode=per_episode, switch=switch, after_switch=after,
                      action_sign=motor_signs if switch is not None else None)


def no_plasticity_level(config: Config, *, episodes: int, seed: int, sizes: list[int] | None = None) -> float:
    """The mean score of a fresh random actor that never learns (the rule off, so any rule gives it) on
    ``config``'s task, every lifetime with each goal and motor direction training drew, as `evaluate_rule`'s
    ``no_plasticity``: the level a learned rule starts from."""
    layout = layout_of(config)
    genomes = torch.zeros(episodes, layout.size)
    keys = evaluation_keys(seed, episodes)
    scores = []
    for goal, motor in variants_of(config):
        env = config.env if goal is None else replace(config.env, goal=goal)
        cfg = config.replace(env=env if motor is None else replace(env, action_sign=motor))
        total, _ = run_lifetimes(genomes, layout, cfg, keys, conditions=Conditions(plastic=False), sizes=sizes)
        scores.append(float(total.mean()))
    return sum(scores) / len(scores)


def rescore_best(candidates: torch.Tensor, layout: GenomeLayout, config: Config, *, episodes: int, seed: int,
                 progress: ProgressFn | None = None) -> tuple[torch.Tensor, int]:
    """The held-out scores (`rescore`) of ``candidates (K, G)`` (a searcher's `candidates`: the GA's elites best
    first, or CMA-ES's mean and its last generation's best) and the index of the best (the earlier candidate on
    a tie): ``(scores (K,), best)``."""
    scores = rescore(candidates, layout, config, episodes=episodes, seed=seed, progress=progress)
    best = int(torch.argsort(scores, descending=True, stable=True)[0])
    return scores, best


def rescore(genomes: torch.Tensor, layout: GenomeLayout, config: Config, *, episodes: int, seed: int,
            progress: ProgressFn | None = None) -> torch.Tensor:
    """Mean fitness ``(K,)`` float64 of each of ``genomes (K, G)`` over the same ``episodes`` held-out
    lifetimes (antithetic groups as in training), for choosing which candidate to ship.

    One generation's best is partly luck (it is the maximum of many noisy scores); scoring the
    GA's elites again on many unseen lifetimes picks the one that is really best.
    """
    if config.ga.fitness == "worst_motor":  # the lower of the two motor directions' means, as in training
        return torch.minimum(*(rescore(genomes, layout, c, episodes=episodes, seed=seed, progress=progress)
                               for c in motor_directions(config)))
    k = genomes.shape[0]
    cfg = config.replace(ga=replace(config.ga, evals_per_individual=config.ga.group, common_random_numbers=False))
    indices = torch.arange(episodes).repeat(k)  # candidate i, episode j -> the key of episode j
    fitness = evaluate(genomes.repeat_interleave(episodes, dim=0), layout, cfg, seed=seed,
                       generation=VALIDATION_GENERATION, indices=indices, progress=progress)
    return fitness.reshape(k, episodes).mean(dim=1)


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
        backend = select_backend(config, genomes.device, genomes.dtype, sizes).name  # the backend of run_lifetimes
        life = Lifetime(genomes, layout, config, keys, conditions=conditions, sizes=sizes, backend=backend)
        initial = life.actor.clone()
        rewards = torch.stack([life.step() for _ in range(steps)], dim=1)
    return LifetimeSample(rewards, initial, life.actor.clone())


def format_table(evaluation: Evaluation) -> str:
    """Readable table of the conditions, the learned/no_plasticity ratio and the lifetime gain."""
    per_goal = bool(evaluation.per_goal)
    goal_head = "".join(f"{f'goal {g:+d}':>11}" for g in next(iter(evaluation.per_goal.values()), {})) \
        if per_goal else ""
    per_motor = bool(evaluation.per_motor)
    motor_head = "".join(f"{f'motor {m:+d}':>11}" for m in next(iter(evaluation.per_motor.values()), {})) \
        if per_motor else ""
    lines = [f"{'condition':<16}{'mean':>11}{'std':>11}{'95% CI':>25}{'n':>7}{'lq_height':>11}{'balanced':>10}"
             + goal_head + motor_head]
    for name, s in evaluation.summaries.items():
        lo, hi = s.ci95
        goals = "".join(f"{float(v.mean()):>11.3f}" for v in evaluation.per_goal[name].values()) if per_goal else ""
        motors = "".join(f"{float(v.mean()):>11.3f}" for v in evaluation.per_motor[name].values()) \
            if per_motor else ""
        lines.append(f"{name:<16}{s.mean:>11.3f}{s.std:>11.3f}{f'[{lo:.3f}, {hi:.3f}]':>25}{s.n:>7}"
                     f"{float(evaluation.last_quarter_height[name].mean()):>11.3f}"
                     f"{evaluation.balanced_fraction(name):>10.3f}{goals}{motors}")
    both = [what for what, given in (("the two goals", per_goal), ("the two motor directions", per_motor)) if given]
    lines.append(f"score = reward summed over a lifetime of {evaluation.steps} steps"
                 + (f" (each episode's mean over {' and '.join(both)})" if both else ""))
    for what, by in (("goal", evaluation.balanced_per_goal), ("motor", evaluation.balanced_per_motor)):
        if by:
            shares = ", ".join(f"{what} {k:+d} {float(v.mean()):.3f}" for k, v in by["learned"].items())
            lines.append(f"learned balanced per {what}: {shares}")
    lines.append("lq_height = mean height per link over the last quarter (2 = upright); balanced = share of "
                 "lifetimes above 0.9 of the maximum for >= 90% of the last quarter")
    if evaluation.per_episode:
        lines.append("score per episode (the env resets, the actor keeps what it learned):")
        for name in ("learned", "no_plasticity", "reference"):
            shown = [f"{v:.1f}" for v in evaluation.per_episode[name].mean(dim=0).tolist()]
            if len(shown) > 12:
                shown = shown[:6] + ["..."] + shown[-5:]
            lines.append(f"  {name:<16}" + " ".join(shown))
    if evaluation.switch is not None:
        if isinstance(evaluation.switch, list):
            first, last = evaluation.switch
            lines.append(f"reversal: the goal flips at a step drawn per lifetime in {first}-{last}; second-half "
                         f"score (from that step to {evaluation.steps - 1}), mean [95% CI]:")
        else:
            lines.append(f"reversal: the goal flips at step {evaluation.switch}; second-half score (steps "
                         f"{evaluation.switch}-{evaluation.steps - 1}), mean [95% CI]:")
        columns = ("learned", "reward_zeroed", "reference")
        lines.append(f"  {'lifetimes':<24}{'n':>5}" + "".join(f"{n:>26}" for n in columns) + f"{'learned/ref':>13}")
        for group, scores in evaluation.reversal().items():
            cells = ""
            for n in columns:
                lo, hi = Summary.of(scores[n]).ci95
                cells += f"{f'{float(scores[n].mean()):.1f} [{lo:.1f}, {hi:.1f}]':>26}"
            ref = float(scores["reference"].mean())
            share = "n/a" if ref == 0 else f"{float(scores['learned'].mean()) / ref:.3f}"
            lines.append(f"  {group:<24}{scores['learned'].numel():>5}{cells}{share:>13}")
        lines.append("  (learned/ref reads as a share where the reference scores > 0; below 0, higher is worse)")
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
