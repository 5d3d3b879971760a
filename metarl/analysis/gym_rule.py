"""A rule's actor on Gymnasium's own ``Pendulum-v1``, over lifetimes of several episodes.

    from metarl.analysis.gym_rule import run_rule_on_gymnasium
    returns = run_rule_on_gymnasium("pendulum_balance", "Pendulum-v1", episodes=10, lifetimes=64, seed=0)
    returns.shape                                   # (64, 10): the return of every episode of every lifetime

A *lifetime* is ``episodes`` episodes of one ``gymnasium.make(env_id)`` env (200 steps each, its
``TimeLimit``), run one after the other by ``env.reset()``: the actor and the rule's state persist
across the resets, as over metarl's own episodes (`metarl.core.step.reset_episode`). The ``lifetimes``
run side by side, one env each, and their actors and rules are stepped as one batch with metarl's
own step: `metarl.core.step.act` (the actor's forward pass) on the observation, ``env.step``, then
`metarl.core.step.learn` (the rule, `metarl.core.spec.reference_rule_step`: the spec) on the reward
that followed. Nothing of the rule is reimplemented here.

The mapping between the two conventions (`metarl_observation`, `gymnasium_action`):

- Pendulum-v1 measures ``th`` from upright and observes ``[cos th, sin th, thdot]``; metarl measures
  ``theta`` from hanging down and its actor was trained on ``[sin theta, cos theta, omega]``. So
  ``theta = th + pi``: ``sin theta = -sin th``, ``cos theta = -cos th``, ``omega = thdot`` (both angles
  grow the same way, and a positive torque speeds both up).
- The actor's action is in [-1, 1]; Pendulum-v1 takes a torque in [-2, 2] N·m: ``torque = 2 * action``
  (metarl's envs multiply by ``max_torque`` the same way).

What the rule sees as its reward (``reward``): ``"env"``, the env's own reward (Pendulum-v1's
``-(th^2 + 0.1 thdot^2 + 0.001 u^2)``, at most 0, of the state *before* the step); or ``"height"``,
metarl's height reward ``1 - cos theta = 1 + cos th`` (0 hanging, 2 upright) of the state *after*
the step, computed from the next observation: what the shipped rules were evolved on. The returns
reported are always the env's.

Policies (``policy``): ``"learned"``, the rule as evolved; ``"no_plasticity"``, the same fresh actor
never changed by the rule; ``"random"``, uniform random torques (``env.action_space.sample()``),
through the same loop. Every policy sees the same episode starts: lifetime ``k``'s env is reset
with seed `lifetime_seed` ``(seed, k)`` for its first episode and unseeded after (its generator
runs on), and its actor is drawn from evaluation key ``k`` of the namespace `GYMNASIUM_GENERATION`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import Config
from ..core import actor as actor_mod
from ..core import rng
from ..core.rule import initial_rule_state
from ..core.step import Conditions, StepSpec, act, learn
from ..errors import UserError
from ..runs.io import SavedModel, load_model
from .defaults import RULE_REWARDS

ENV_IDS = ("Pendulum-v1", "metarl/Pendulum-v0")  # the latter made with dynamics="gymnasium": Pendulum-v1 again
POLICIES = ("learned", "no_plasticity", "random")
MAX_TORQUE = 2.0  # Pendulum-v1's torque limit (N·m): an action of 1 is this torque
GYM_DT = 0.05  # Pendulum-v1's time step (s): what a rule's traces (e.g. the reward's running mean) are timed by
GYMNASIUM_GENERATION = 0xE7A1_0003  # key namespace of the actors (beside evaluation's; never trained on)
Z95 = 1.96


def metarl_observation(obs: np.ndarray) -> np.ndarray:
    """``[cos th, sin th, thdot]`` (Pendulum-v1, ``th`` from upright) -> ``[sin theta, cos theta, omega]``
    (metarl, ``theta = th + pi`` from hanging down), over the last axis."""
    obs = np.asarray(obs)
    return np.stack((-obs[..., 1], -obs[..., 0], obs[..., 2]), axis=-1)


def gymnasium_action(action: np.ndarray) -> np.ndarray:
    """The actor's action in [-1, 1] -> Pendulum-v1's torque in [-2, 2] N·m, float32 ``(..., 1)``."""
    return (MAX_TORQUE * np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0))[..., None]


def height(metarl_obs: np.ndarray) -> np.ndarray:
    """metarl's height reward ``1 - cos theta`` (0 hanging, 2 upright) of a mapped observation."""
    return 1.0 - np.asarray(metarl_obs)[..., 1]


def lifetime_seed(seed: int, lifetime: int) -> int:
    """The seed of lifetime ``lifetime``'s first ``env.reset``."""
    return rng.hash_ints(seed, GYMNASIUM_GENERATION, lifetime)


class RuleActor:
    """The actors of ``keys (K,)`` lifetimes under a rule, stepped from outside an env.

    `act` runs the actors on an observation (metarl's convention) and returns their actions;
    `learn` applies the rule once with the reward that followed. Both are `metarl.core.step`'s, on the
    spec's population-major tensors: the same numbers as a ``Lifetime(..., backend="spec")``.
    """

    def __init__(self, model: SavedModel, keys: torch.Tensor, *, config: Config | None = None,
                 sizes: list[int] | None = None, plastic: bool = True) -> None:
        config = model.config if config is None else config
        self.sizes = list(config.layer_sizes if sizes is None else sizes)
        a = config.actor
        dtype = model.genome.dtype
        self.layout = model.layout
        self.genomes = model.genome[None].expand(keys.shape[0], -1).contiguous()
        self.actor = actor_mod.initial_actor(self.sizes, keys, weight_init=a.weight_init, weight_limit=a.weight_limit,
                                             sigma_init=a.sigma_init, dtype=dtype)
        self.rule = initial_rule_state(self.sizes, keys.shape[0], model.layout.state_dim, dtype=dtype,
                                       traces=model.layout.rule.traces)
        self.spec = StepSpec(actor_mod.neuron_count(self.sizes), a.learning_rate, a.weight_limit, a.sigma_limit,
                             Conditions(plastic=plastic), config.ga.lifetime_steps, a.sigma_min,
                             config.rule.reward_mean_time)
        self.noise_keys = rng.stream_keys(keys, rng.STREAM_NOISE)
        self.t = torch.zeros((), dtype=torch.int64)
        self._x: torch.Tensor | None = None

    def act(self, x: torch.Tensor) -> torch.Tensor:
        """Actions ``(K,)`` in [-1, 1] for observations ``x (K, obs)`` ``[sin theta, cos theta, omega]``."""
        self._x = x.to(self.genomes.dtype)
        self.actor, action = act(self.actor, self._x, self.t, self.noise_keys, self.spec)
        return action

    def learn(self, reward: torch.Tensor) -> None:
        """The rule, once, after `act`: ``reward (K,)`` is what followed the actions."""
        if self._x is None:
            raise RuntimeError("learn() needs an act() first")
        self.rule, self.actor = learn(self.genomes, self.layout, self.rule, self.actor, self._x,
                                      reward.to(self.genomes.dtype), self.t, self.spec, dt=GYM_DT)
        self._x = None
        self.t = self.t + 1


def _model(model: SavedModel | str | os.PathLike) -> SavedModel:
    if isinstance(model, SavedModel):
        return model
    from ..shipped import model as shipped_model

    return load_model(shipped_model(model))


def make_env(env_id: str) -> Any:
    """``gymnasium.make(env_id)`` for the ids in `ENV_IDS`; one-line `UserError` otherwise."""
    try:
        import gymnasium
    except ImportError:
        raise UserError("running on Gymnasium needs gymnasium: pip install gymnasium (or pip install "
                        "\".[gymnasium]\")") from None
    if env_id not in ENV_IDS:
        from ..config.schema import _clip

        raise UserError(f"Gymnasium env {_clip(repr(env_id))}: a rule's pendulum actor runs on {' or '.join(ENV_IDS)} "
                        f"only")
    if env_id == "metarl/Pendulum-v0":
        from ..gym import register

        register()
        return gymnasium.make(env_id, dynamics="gymnasium")
    return gymnasium.make(env_id)


def check_counts(episodes: int, lifetimes: int) -> None:
    """One-line `UserError` for counts below 1."""
    for name, value in (("episodes per lifetime", episodes), ("lifetimes", lifetimes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{name} must be an integer >= 1, got {value!r}")


def check_model(config: Config, sizes: list[int] | None = None) -> None:
    """One-line `UserError` unless the config's actor is for one pendulum (3 observations)."""
    obs_dim = (config.layer_sizes if sizes is None else sizes)[0]
    if config.env.name != "Pendulum" or obs_dim != 3:
        raise UserError(f"the model's actor is for {config.env.name} ({obs_dim} observations); Pendulum-v1 "
                        f"has one pendulum (3 observations)")


def run_rule_on_gymnasium(model: SavedModel | str | os.PathLike, env_id: str = "Pendulum-v1", *,
                          episodes: int = 10, lifetimes: int = 64, seed: int = 0, reward: str = "env",
                          policy: str = "learned", config: Config | None = None,
                          sizes: list[int] | None = None) -> np.ndarray:
    """The env's return of every episode ``(lifetimes, episodes)`` float64 of ``lifetimes`` lifetimes of
    ``episodes`` episodes each of ``model`` (a `SavedModel`, a model file or a shipped model's name) on
    ``gymnasium.make(env_id)`` (see the module docstring). ``reward``: what the rule sees, ``"env"`` or
    ``"height"``; ``policy``: ``"learned"``, ``"no_plasticity"`` or ``"random"``; ``config``: the actor's
    settings (default the model's); ``sizes``: the actor's layer sizes (default the config's)."""
    check_counts(episodes, lifetimes)
    if reward not in RULE_REWARDS:
        raise UserError(f"reward must be one of {', '.join(RULE_REWARDS)}, got {reward!r}")
    if policy not in POLICIES:
        raise UserError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    envs = [make_env(env_id) for _ in range(lifetimes)]
    model = _model(model)
    config = model.config if config is None else config
    check_model(config, sizes)
    keys = rng.individual_keys(seed, GYMNASIUM_GENERATION, 0, torch.arange(lifetimes))
    agent = None
    if policy != "random":
        agent = RuleActor(model, keys, config=config, sizes=sizes, plastic=policy == "learned")
    returns = np.zeros((lifetimes, episodes), dtype=np.float64)
    try:
        with torch.no_grad():
            for k, env in enumerate(envs):
                env.action_space.seed(lifetime_seed(seed, k))
            for e in range(episodes):
                first = [env.reset(seed=lifetime_seed(seed, k) if e == 0 else None)[0] for k, env in enumerate(envs)]
                x = metarl_observation(np.stack(first))
                done = False
                while not done:
                    if agent is None:
                        torques = np.stack([env.action_space.sample() for env in envs])
                    else:
                        torques = gymnasium_action(agent.act(torch.from_numpy(x)).numpy())
                    steps = [env.step(torque) for env, torque in zip(envs, torques, strict=True)]
                    x = metarl_observation(np.stack([s[0] for s in steps]))
                    r = np.array([s[1] for s in steps], dtype=np.float64)
                    returns[:, e] += r
                    ended = np.array([s[2] or s[3] for s in steps])
                    if ended.any() and not ended.all():
                        raise UserError(f"{env_id}: episodes of different lengths (a lifetime's episodes run "
                                        f"side by side and must end together)")
                    done = bool(ended.all())
                    if agent is not None:
                        agent.learn(torch.from_numpy(r if reward == "env" else height(x)))
    finally:
        for env in envs:
            env.close()
    return returns


@dataclass(frozen=True)
class EpisodeSummary:
    """Mean and normal-approximation 95% CI of one episode's return over the lifetimes."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: np.ndarray) -> EpisodeSummary:
        v = np.asarray(values, dtype=np.float64)
        half = Z95 * float(v.std(ddof=1)) / math.sqrt(v.size) if v.size > 1 else 0.0
        mean = float(v.mean())
        return cls(mean, mean - half, mean + half, int(v.size))

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "ci95": [self.low, self.high], "n": self.n}


def summaries(returns: np.ndarray) -> list[EpisodeSummary]:
    """`EpisodeSummary` of every episode of ``returns (lifetimes, episodes)``."""
    return [EpisodeSummary.of(returns[:, e]) for e in range(returns.shape[1])]


def format_table(results: dict[str, np.ndarray]) -> str:
    """Return per episode, mean and 95% CI over the lifetimes, one column per policy."""
    width = 30
    lines = [f"{'episode':>7}" + "".join(f"{name:>{width}}" for name in results)]
    columns = {name: summaries(r) for name, r in results.items()}
    episodes = next(iter(results.values())).shape[1]

    def cell(s: EpisodeSummary) -> str:
        return f"{s.mean:.1f} [{s.low:.1f}, {s.high:.1f}]"

    for e in range(episodes):
        lines.append(f"{e + 1:>7}" + "".join(f"{cell(col[e]):>{width}}" for col in columns.values()))
    overall = {name: EpisodeSummary.of(r.mean(axis=1)) for name, r in results.items()}
    lines.append(f"{'all':>7}" + "".join(f"{cell(s):>{width}}" for s in overall.values()))
    return "\n".join(lines)
