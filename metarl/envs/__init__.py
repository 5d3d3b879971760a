"""Batched pendulum environments: `make(name, batch_size, ...)` builds one."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .base import RANDOM_INITS, BatchedEnv, EnvOptions, ParamValue, Sampler, option_names, resolve_params
from .double_pendulum import DoublePendulum
from .pendulum import Pendulum

ENVS: dict[str, type[BatchedEnv]] = {"Pendulum": Pendulum, "DoublePendulum": DoublePendulum}

__all__ = ["ENVS", "BatchedEnv", "DoublePendulum", "EnvOptions", "Pendulum", "env_class", "make"]


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
    sim = {k: options.pop(k) for k in list(options) if k in option_names()}
    physical = dict(params or {})
    physical.update(options)
    if sampler is None:
        gen = generator if generator is not None else torch.Generator().manual_seed(0)

        def sampler(count: int) -> torch.Tensor:
            return torch.rand(batch_size, count, generator=gen, device=gen.device)

    values = resolve_params(cls.param_defaults, physical, batch_size, sampler, device=device, dtype=dtype)
    init_uniform = sampler(2 * cls.links) if sim.get("init") in RANDOM_INITS else None
    sign_uniform = sampler(1) if sim.get("action_sign") == "random" else None
    goal_uniform = sampler(1) if sim.get("goal") == "random" else None
    # Drawn last, so that a dt range leaves every other draw of a lifetime as it was.
    dt_uniform = sampler(1) if isinstance(sim.get("dt"), (list, tuple)) else None
    return cls(batch_size, values, EnvOptions(**sim), device=device, dtype=dtype,
               init_uniform=init_uniform, sign_uniform=sign_uniform, goal_uniform=goal_uniform,
               dt_uniform=dt_uniform)
