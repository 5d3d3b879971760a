"""Batched environments: `make(name, batch_size, ...)` builds one; `register(name, cls)` adds one.

The registry `ENVS` maps the config's ``env.name`` to the class (the environment protocol:
`metarl.envs.base.BatchedEnv`, docs/extending.md, "Add an environment"). The pendulums are registered here; a new
task registers itself, from any file, before its config is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch

from .base import (
    INITS,
    RANDOM_INITS,
    REWARDS,
    BatchedEnv,
    EnvOptions,
    ParamValue,
    Sampler,
    option_names,
    resolve_params,
)
from .double_pendulum import DoublePendulum
from .pendulum import Pendulum

ENVS: dict[str, type[BatchedEnv]] = {}

__all__ = ["ENVS", "BatchedEnv", "DoublePendulum", "EnvOptions", "Pendulum", "env_class", "make", "register"]


def register(name: str, cls: type[BatchedEnv]) -> type[BatchedEnv]:
    """Make ``cls`` the environment called ``name`` (its ``cls.name``): `make`, the config's ``env.name``
    and the torch backends then take it. Registering the same class again does nothing; another class
    under a taken name is refused (configs and saved models name an env by its name). Returns ``cls``."""
    if not (isinstance(cls, type) and issubclass(cls, BatchedEnv)):
        raise TypeError(f"register({name!r}, ...): an environment is a subclass of metarl.envs.BatchedEnv, "
                        f"got {cls!r}")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"an environment's name is an identifier (letters, digits, _), got {name!r}")
    if cls.name != name:
        raise ValueError(f"register({name!r}, {cls.__name__}): the class's name attribute is {cls.name!r}")
    known = ENVS.get(name)
    if known is not None and known is not cls:
        raise ValueError(f"an environment {name!r} is registered already ({known.__module__}.{known.__qualname__})")
    problems = [f"{attr} {bad!r} unknown (known: {', '.join(allowed)})"
                for attr, allowed in (("rewards", REWARDS), ("inits", INITS))
                for bad in getattr(cls, attr) if bad not in allowed]
    problems += [f"may_be_zero names {p!r}, not a parameter" for p in cls.may_be_zero if p not in cls.param_defaults]
    if cls.state_size() < 1 or cls.observation_size() < 1:
        problems.append(f"state_size {cls.state_size()} and observation_size {cls.observation_size()} must be >= 1")
    if problems:
        raise ValueError(f"register({name!r}, {cls.__name__}): " + "; ".join(problems))
    ENVS[name] = cls
    return cls


register("Pendulum", Pendulum)
register("DoublePendulum", DoublePendulum)


def env_class(name: str) -> type[BatchedEnv]:
    """The environment class called ``name``; an unknown name lists the known ones."""
    try:
        return ENVS[name]
    except KeyError:
        raise ValueError(f"unknown environment {name!r}; known: {', '.join(ENVS)}") from None


def make(name: str, batch_size: int, *, device: torch.device | str = "cpu",
         dtype: torch.dtype = torch.float32, generator: torch.Generator | None = None,
         sampler: Sampler | None = None, params: Mapping[str, ParamValue] | None = None,
         **options: object) -> BatchedEnv:
    """Build ``batch_size`` environments ``name``.

    ``options`` are the fields of `EnvOptions` (the config's ``env`` keys ``dt`` ... ``obs_noise``; ``dt`` may be
    a ``[min, max]`` range)
    and physical parameters by name (``length=1.3``, ``damping=[0.0, 0.2]``); ``params`` may
    hold the latter as a mapping too. Ranges and the `random` init draw from ``sampler``
    (``count -> (B, count)`` uniforms) if given, else from ``generator`` (seeded with 0 when omitted).
    """
    cls = env_class(name)
    # The values are checked where they are used: by EnvOptions and by resolve_params.
    sim: dict[str, Any] = {k: options.pop(k) for k in list(options) if k in option_names()}
    physical: dict[str, ParamValue] = dict(params or {})
    physical.update(cast(dict[str, ParamValue], options))
    if sampler is None:
        gen = generator if generator is not None else torch.Generator().manual_seed(0)

        def sampler(count: int) -> torch.Tensor:
            return torch.rand(batch_size, count, generator=gen, device=gen.device)

    values = resolve_params(cls.param_defaults, physical, batch_size, sampler, device=device, dtype=dtype)
    init_uniform = sampler(cls.state_size()) if sim.get("init") in RANDOM_INITS else None
    sign_uniform = sampler(1) if sim.get("action_sign") == "random" else None
    goal_uniform = sampler(1) if sim.get("goal") == "random" else None
    # Drawn last, so that a dt range leaves every other draw of a lifetime as it was.
    dt_uniform = sampler(1) if isinstance(sim.get("dt"), (list, tuple)) else None
    env_options = EnvOptions(**sim)
    # After dt's: a drawn reversal leaves every other draw of a lifetime as it was.
    switch_uniform = sampler(1) if env_options.switch_drawn else None
    # Last: a drawn switch step leaves every other draw as it was.
    switch_step_uniform = sampler(1) if env_options.switch_step_drawn else None
    return cls(batch_size, values, env_options, device=device, dtype=dtype,
               init_uniform=init_uniform, sign_uniform=sign_uniform, goal_uniform=goal_uniform,
               dt_uniform=dt_uniform, switch_uniform=switch_uniform, switch_step_uniform=switch_step_uniform)
