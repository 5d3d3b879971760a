"""Typed, validated, frozen configuration loaded from YAML.

The nested schema of SPEC (``env``, ``actor``, ``rule``, ``ga``) plus a ``runtime``
section for performance switches (they change results at most by float rounding, see
`RuntimeConfig`). Configs of the original
project (flat keys such as ``env_name`` and ``network_shape``) are translated on load.
Every problem raises `ConfigError` with one line naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from .envs import ENVS, env_class
from .envs.base import ACTION_SIGNS, GOALS, INITS, INTEGRATORS, REWARDS
from .errors import ConfigError

PhysicalValue = float | list[float]
ANTITHETIC = (False, True, "motor", "goal")


@dataclass(frozen=True)
class EnvConfig:
    """Environment: dynamics, reward, initial state and physical parameters."""

    name: str = "Pendulum"
    dt: float = 0.05
    integrator: str = "rk4"
    reward: str = "height"
    init: str = "up"
    max_torque: float = 1.0
    max_speed: float | None = 10.0
    action_sign: int | str = 1  # 1, -1, or random (motor direction ±1 per individual)
    goal: int | str = 1  # hidden goal: the reward's sign, 1, -1, or random (±1 per individual)
    goal_switch: int | None = None  # reversal: the goal flips from this step on; null = never
    params: dict[str, PhysicalValue] = field(default_factory=dict)

    def validate(self, key: str) -> None:
        _choice(f"{key}.name", self.name, tuple(ENVS))
        _positive(f"{key}.dt", self.dt)
        _choice(f"{key}.integrator", self.integrator, INTEGRATORS)
        _choice(f"{key}.reward", self.reward, REWARDS)
        _choice(f"{key}.init", self.init, INITS)
        _positive(f"{key}.max_torque", self.max_torque, allow_zero=True)
        if self.max_speed is not None:
            _positive(f"{key}.max_speed", self.max_speed)
        if self.action_sign not in ACTION_SIGNS:
            raise ConfigError(f"{key}.action_sign: must be 1, -1 or random, got {self.action_sign!r}")
        if self.goal not in GOALS:
            raise ConfigError(f"{key}.goal: must be 1, -1 or random, got {self.goal!r}")
        if self.goal_switch is not None:
            _positive(f"{key}.goal_switch", self.goal_switch, allow_zero=True)
        defaults = env_class(self.name).param_defaults
        for name, value in self.params.items():
            pkey = f"{key}.params.{name}"
            if name not in defaults:
                raise ConfigError(f"{pkey}: unknown parameter for {self.name}{_suggest(name, defaults)}; "
                                  f"known: {', '.join(defaults)}")
            if isinstance(value, list):
                if len(value) != 2 or value[0] > value[1]:
                    raise ConfigError(f"{pkey}: a range must be [min, max] with min <= max, got {value}")
                lo = value[0]
            else:
                lo = value
            if name != "damping" and not lo > 0:
                raise ConfigError(f"{pkey}: must be > 0, got {value}")
            if name == "damping" and lo < 0:
                raise ConfigError(f"{pkey}: must be >= 0, got {value}")

    @property
    def obs_dim(self) -> int:
        """Observation size of the environment."""
        return 3 * env_class(self.name).links

    def make_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `metarl.envs.make` (everything but the name)."""
        return {"dt": self.dt, "integrator": self.integrator, "reward": self.reward, "init": self.init,
                "max_torque": self.max_torque, "max_speed": self.max_speed, "action_sign": self.action_sign,
                "goal": self.goal, "goal_switch": self.goal_switch, "params": dict(self.params)}


@dataclass(frozen=True)
class ActorConfig:
    """The stochastic actor network and the limits of its plastic parameters."""

    hidden: list[int] = field(default_factory=lambda: [8, 8])
    weight_limit: float = 4.0
    weight_init: float = 0.1
    sigma_limit: float = 1.0
    sigma_init: float = 0.0
    learning_rate: float = 0.01

    def validate(self, key: str) -> None:
        for i, n in enumerate(self.hidden):
            if n < 1:
                raise ConfigError(f"{key}.hidden[{i}]: layer sizes must be >= 1, got {n}")
        _positive(f"{key}.weight_limit", self.weight_limit)
        _positive(f"{key}.weight_init", self.weight_init, allow_zero=True)
        _positive(f"{key}.sigma_limit", self.sigma_limit, allow_zero=True)
        _positive(f"{key}.learning_rate", self.learning_rate, allow_zero=True)
        if not 0 <= self.sigma_init <= self.sigma_limit:
            raise ConfigError(f"{key}.sigma_init: must be in [0, sigma_limit={self.sigma_limit}], "
                              f"got {self.sigma_init}")


@dataclass(frozen=True)
class RuleConfig:
    """The learning-rule network (three recurrent cells)."""

    signal_dim: int = 1
    state_dim: int = 8
    init_std: float = 0.1

    def validate(self, key: str) -> None:
        _positive(f"{key}.signal_dim", self.signal_dim)
        _positive(f"{key}.state_dim", self.state_dim, allow_zero=True)
        _positive(f"{key}.init_std", self.init_std, allow_zero=True)


@dataclass(frozen=True)
class GAConfig:
    """The genetic algorithm and how individuals are evaluated."""

    population_size: int = 10000
    num_survivors: int = 200
    generations: int = 10000
    lifetime_steps: int = 2000
    evals_per_individual: int = 1
    mutation_probability: float = 0.001
    mutation_strength: float = 0.1
    # Same actor/env draws for every individual of a generation (common random numbers),
    # so that ranking compares rules rather than luck. Off = SPEC's independent draws.
    common_random_numbers: bool = False
    # Evaluate in pairs of lifetimes with the same draws and one sign flipped: true or `motor`,
    # the motor direction (env.action_sign), so only a rule that finds the direction scores in
    # both; `goal`, the hidden goal (env.goal), so a rule blind to the reward scores the average
    # of the two goals. false = SPEC's single lifetimes.
    antithetic: bool | str = False

    @property
    def flipped(self) -> str | None:
        """The env option an antithetic pair flips (``action_sign`` or ``goal``), or None."""
        if not self.antithetic:
            return None
        return "goal" if self.antithetic == "goal" else "action_sign"

    def validate(self, key: str) -> None:
        for name in ("population_size", "num_survivors", "generations", "lifetime_steps",
                     "evals_per_individual"):
            _positive(f"{key}.{name}", getattr(self, name))
        if self.num_survivors > self.population_size:
            raise ConfigError(f"{key}.num_survivors: {self.num_survivors} exceeds "
                              f"population_size {self.population_size}")
        if not 0 <= self.mutation_probability <= 1:
            raise ConfigError(f"{key}.mutation_probability: must be in [0, 1], got {self.mutation_probability}")
        _positive(f"{key}.mutation_strength", self.mutation_strength, allow_zero=True)
        if self.antithetic not in ANTITHETIC:
            raise ConfigError(f"{key}.antithetic: must be true, false, motor or goal, got {self.antithetic!r}")
        if self.antithetic and self.evals_per_individual % 2:
            raise ConfigError(f"{key}.antithetic: needs an even evals_per_individual, got {self.evals_per_individual}")


@dataclass(frozen=True)
class RuntimeConfig:
    """Performance switches. ``chunk_size`` and ``threads`` never change a result; ``native`` and
    ``compile`` choose the lifetime step, whose results differ only by float rounding."""

    chunk_size: int | None = None  # individuals per CPU chunk; null = automatic
    # torch.compile the lifetime step (falls back to eager); null = auto: when a generation has
    # at least 2e6 individual-steps (population_size * lifetime_steps), which repays compiling.
    compile: bool | None = None
    threads: int | None = None  # torch CPU threads (and native kernel threads); null = torch's default
    # The native C++ lifetime kernel on CPU (metarl/native.py); null = auto: used when it builds, else
    # the torch step with a warning; true: an error if it cannot run; false: never.
    native: bool | None = None

    def validate(self, key: str) -> None:
        if self.chunk_size is not None:
            _positive(f"{key}.chunk_size", self.chunk_size)
        if self.threads is not None:
            _positive(f"{key}.threads", self.threads)


@dataclass(frozen=True)
class Config:
    """A whole experiment."""

    seed: int | None = 0
    device: str = "auto"
    env: EnvConfig = field(default_factory=EnvConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    rule: RuleConfig = field(default_factory=RuleConfig)
    ga: GAConfig = field(default_factory=GAConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def validate(self) -> None:
        if self.device != "auto" and not _is_device(self.device):
            raise ConfigError(f"device: must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        self.env.validate("env")
        self.actor.validate("actor")
        self.rule.validate("rule")
        self.ga.validate("ga")
        self.runtime.validate("runtime")
        flipped = self.ga.flipped
        if flipped and getattr(self.env, flipped) == "random":
            raise ConfigError(f"ga.antithetic: {self.ga.antithetic} pairs need a fixed env.{flipped} (1 or -1), "
                              f"not random")

    @property
    def layer_sizes(self) -> list[int]:
        """Actor layer sizes ``[n_0, ..., n_L]`` (observation size first, action size 1 last)."""
        return [self.env.obs_dim, *self.actor.hidden, 1]

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (the YAML form)."""
        return dataclasses.asdict(self)

    def replace(self, **sections: Any) -> Config:
        """A copy with whole sections or top-level keys replaced."""
        return dataclasses.replace(self, **sections)


def _is_device(text: str) -> bool:
    if text == "cpu" or text == "cuda":
        return True
    return text.startswith("cuda:") and text[5:].isdigit()


def _positive(key: str, value: float, *, allow_zero: bool = False) -> None:
    if allow_zero and value < 0:
        raise ConfigError(f"{key}: must be >= 0, got {value}")
    if not allow_zero and not value > 0:
        raise ConfigError(f"{key}: must be > 0, got {value}")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: unknown value {value!r}{_suggest(value, allowed)}; "
                          f"valid: {', '.join(allowed)}")


def _suggest(name: str, candidates: Any) -> str:
    close = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------------------- building

SECTIONS = {"env": EnvConfig, "actor": ActorConfig, "rule": RuleConfig, "ga": GAConfig,
            "runtime": RuntimeConfig}


def from_dict(data: Any) -> Config:
    """Validated `Config` from a nested (or original flat) dict."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping of keys, got {type(data).__name__}")
    if is_legacy(data):
        data = from_legacy(data)
    config = _build(Config, data, "")
    config.validate()
    return config


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{full}: unknown key{_suggest(key, names)}; valid: {', '.join(names)}")
        hint = hints[key]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value if value is not None else {}, f"{full}.")
        else:
            kwargs[key] = _coerce(full, value, hint)
    return cls(**kwargs)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the type ``hint``; ints are accepted where floats are."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            try:
                return _coerce(key, value, option)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{key}: expected {_type_name(hint)}, got {value!r}")
    if hint is type(None):
        if value is None:
            return None
    elif origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, (list, tuple)):
            return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    elif origin is dict:
        _, item = typing.get_args(hint)
        if isinstance(value, dict):
            return {str(k): _coerce(f"{key}.{k}", v, item) for k, v in value.items()}
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key}: expected {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    if typing.get_origin(hint) is dict:
        return "a mapping"
    return {float: "a number", int: "an integer", str: "a string", bool: "true/false"}.get(hint, str(hint))


# ---------------------------------------------------------------------------- legacy

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
            raise ConfigError(f"node_info_dim: must be 5 (the size of a neuron's node info), got {value!r}")
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
        raise ConfigError(f"network_shape: expected a list of at least two integers, got {shape!r}")
    if env_name not in ENVS:
        raise ConfigError(f"env_name: unknown value {env_name!r}{_suggest(env_name, ENVS)}; "
                          f"valid: {', '.join(ENVS)}")
    obs_dim = 3 * ENVS[env_name].links
    if shape[0] != obs_dim or shape[-1] != 1:
        raise ConfigError(f"network_shape: must start with {env_name}'s observation size {obs_dim} "
                          f"and end with 1, got {shape}")
    return list(shape[1:-1])


# ---------------------------------------------------------------------------- files

def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load, override (``section.key=value``, value parsed as YAML) and validate a config."""
    return from_dict(apply_overrides(read_yaml(path), overrides))


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing or unreadable file raises `ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', e)}") from None


def apply_overrides(data: Any, overrides: list[str] | tuple[str, ...]) -> Any:
    """Apply ``section.key=value`` overrides to raw config data (nested or flat)."""
    if not overrides:
        return data
    data = dict(data or {})
    parsed = [_parse_override(item) for item in overrides]
    if is_legacy(data):
        # Flat keys of the original format are overridden before translation.
        data.update({k: v for k, v in parsed if k in LEGACY_KEYS})
        data = from_legacy(data)
        parsed = [(k, v) for k, v in parsed if k not in LEGACY_KEYS]
    for key, value in parsed:
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = value
    return data


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item}: expected section.key=value")
    try:
        return key, yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"--set {item}: value is not valid YAML") from None


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda when available else cpu; `cuda` without CUDA warns and uses the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        warnings.warn(f"device {name!r} requested but CUDA is not available; using the CPU", stacklevel=2)
        return torch.device("cpu")
    return torch.device(name)


def to_yaml(config: Config) -> str:
    """The config as YAML text (the resolved form written to run folders)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
