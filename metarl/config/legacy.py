"""Configs of the original project: flat keys (``env_name``, ``network_shape``, ...) translated
into the nested schema on load (README, "Configuration")."""

from __future__ import annotations

from typing import Any

from ..envs import ENVS
from ..errors import ConfigError
from .schema import _show, _suggest

# Flat key of the original project -> (section, key) of ours; None = accepted and ignored.
LEGACY_KEYS: dict[str, tuple[str, str] | None] = {
    "env_name": ("env", "name"), "env_step_size": ("env", "dt"), "env_dynamics": ("env", "integrator"),
    "reward_type": ("env", "reward"), "actor_force": ("env", "max_torque"),
    "network_shape": ("actor", "network_shape"), "weight_limit": ("actor", "weight_limit"),
    "weight_init": ("actor", "weight_init"), "sigma_limit": ("actor", "sigma_limit"),
    "sigma_init": ("actor", "sigma_init"), "learning_rate": ("actor", "learning_rate"),
    "signal_dim": ("rule", "signal_dim"), "state_dim": ("rule", "state_dim"), "init_std": ("rule", "init_std"),
    "population_size": ("ga", "population_size"), "num_survivors": ("ga", "num_survivors"),
    "generations": ("ga", "generations"), "num_eval_steps": ("ga", "lifetime_steps"),
    "evals_per_gen": ("ga", "evals_per_individual"), "mutation_probability": ("ga", "mutation_probability"),
    "mutation_strength": ("ga", "mutation_strength"), "seed": ("", "seed"), "device": ("", "device"),
    "node_info_dim": None, "path": None, "timestamp": None,
}


def is_legacy(data: dict[str, Any]) -> bool:
    """True for a flat config of the original project (``seed``/``device`` alone are shared)."""
    return any(k in LEGACY_KEYS and k not in ("seed", "device") for k in data)


def from_legacy(flat: dict[str, Any]) -> dict[str, Any]:
    """Translate a config of the original project into the nested schema."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        if key not in LEGACY_KEYS:
            raise ConfigError(f"{key}: unknown key in a flat (original-format) config"
                              f"{_suggest(key, LEGACY_KEYS)}")
        target = LEGACY_KEYS[key]
        if key == "node_info_dim" and value != 5:
            raise ConfigError(f"node_info_dim: must be 5 (the size of a neuron's node info), got {_show(value)}")
        if target is None:
            continue
        section, name = target
        if section:
            nested.setdefault(section, {})[name] = value
        else:
            nested[name] = value
    env = nested.setdefault("env", {})
    if isinstance(env.get("integrator"), str):
        env["integrator"] = env["integrator"].lower()
    actor = nested.setdefault("actor", {})
    if "network_shape" in actor:
        actor["hidden"] = _legacy_hidden(actor.pop("network_shape"), env.get("name", "Pendulum"))
    return nested


def _legacy_hidden(shape: Any, env_name: Any) -> list[int]:
    if not isinstance(shape, list) or len(shape) < 2 or not all(isinstance(n, int) for n in shape):
        raise ConfigError(f"network_shape: expected a list of at least two integers, got {_show(shape)}")
    if env_name not in ENVS:
        raise ConfigError(f"env_name: unknown value {_show(env_name)}{_suggest(env_name, ENVS)}; "
                          f"valid: {', '.join(ENVS)}")
    obs_dim = ENVS[env_name].observation_size()
    if shape[0] != obs_dim or shape[-1] != 1:
        raise ConfigError(f"network_shape: must start with {env_name}'s observation size {obs_dim} "
                          f"and end with 1, got {shape}")
    return list(shape[1:-1])


