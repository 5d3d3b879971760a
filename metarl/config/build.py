"""Building a validated `Config` from plain data: every key and type checked, one-line errors.

`from_dict` takes the nested form (or the original project's flat form, translated by
`metarl.config.legacy`), checks each key against the dataclasses' type hints (ints are
accepted where floats are) and then the ranges (`Config.validate`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from ..errors import ConfigError
from .legacy import from_legacy, is_legacy
from .schema import (
    ActorConfig,
    Config,
    EnvConfig,
    EvaluationConfig,
    GAConfig,
    LoggingConfig,
    RuleConfig,
    RuntimeConfig,
    SearchConfig,
    _clip,
    _show,
    _suggest,
)

SECTIONS = {"env": EnvConfig, "actor": ActorConfig, "rule": RuleConfig, "ga": GAConfig, "search": SearchConfig,
            "runtime": RuntimeConfig, "logging": LoggingConfig, "evaluation": EvaluationConfig}


def from_dict(data: Any, *, import_plugins: bool = True) -> Config:
    """Validated `Config` from a nested (or original flat) dict. Its ``plugins`` are imported first
    (`metarl.plugins.load`: they register the rules and environments the rest names) and recorded as resolved
    (files by absolute path); ``import_plugins=False`` only checks them (a config read to be compared)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping of keys, got {type(data).__name__}")
    if is_legacy(data):
        data = from_legacy(data)
    if data.get("plugins") is not None:
        from .. import plugins

        entries = _coerce("plugins", data["plugins"], list[str])
        if len(entries) > plugins.MAX_PLUGINS:  # before a long list is walked
            raise ConfigError(f"plugins: at most {plugins.MAX_PLUGINS} plugins, got {len(entries)}")
        if import_plugins:
            data = {**data, "plugins": plugins.load(entries)}
    config = _build(Config, data, "")
    config.validate()
    evaluation_task(config)  # a bad evaluation task is a bad config, named now rather than at evaluation
    return config


def evaluation_task(config: Config) -> Config:
    """The config of the task ``config``'s rule is judged on: its ``evaluation`` section applied (``env`` keys
    replaced, ``params`` key by key; ``ga.lifetime_steps``); ``config`` itself when the section is empty.
    Errors name the ``evaluation`` key."""
    task = config.evaluation
    if not task.env and task.lifetime_steps is None:
        return config
    data = config.to_dict()["env"]
    env = {**data, **task.env, "params": {**data["params"], **task.env.get("params", {})}}
    built = _build(EnvConfig, env, "evaluation.env.")
    built.validate("evaluation.env")
    for flipped in config.ga.flips:
        if getattr(built, flipped) == "random":
            raise ConfigError(f"evaluation.env.{flipped}: ga.antithetic: {config.ga.antithetic} evaluates both "
                              f"signs of a fixed env.{flipped} (1 or -1), not random")
    steps = config.ga.lifetime_steps if task.lifetime_steps is None else task.lifetime_steps
    return config.replace(env=built, ga=dataclasses.replace(config.ga, lifetime_steps=steps))


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}{_clip(key) if isinstance(key, str) else _show(key)}"
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
        raise ConfigError(f"{key}: expected {_type_name(hint)}, got {_show(value)}")
    if hint is Any:
        return value
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
            return {str(k): _coerce(f"{key}.{_clip(str(k))}", v, item) for k, v in value.items()}
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an integer beyond float range
                raise ConfigError(f"{key}: must be finite, got {_show(value)}") from None
    elif hint is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key}: expected {_type_name(hint)}, got {_show(value)}")


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


