"""Typed, validated, frozen configuration loaded from YAML.

`schema` declares the sections (frozen dataclasses and their sane ranges), `build` turns
plain data into a validated `Config`, `legacy` translates the original project's flat
configs and `files` reads YAML files, applies ``--set`` overrides and writes YAML. Every
problem raises `ConfigError` with one line naming the key. Everything public is
re-exported here: ``from metarl.config import load, Config``.
"""

from .build import SECTIONS, evaluation_task, from_dict
from .files import MAX_YAML_BYTES, apply_overrides, load, parse_yaml, read_yaml, resolve_device, to_yaml
from .legacy import LEGACY_KEYS, from_legacy, is_legacy
from .schema import (
           ANTITHETIC,
           MAX_COUNT,
           MAX_DT,
           MAX_HIDDEN_LAYERS,
           MAX_RULE_DIM,
           MAX_SEED,
           MAX_THREADS,
           MAX_VALUE,
           MAX_WIDTH,
           MIN_DT,
           ActorConfig,
           Config,
           EnvConfig,
           EvaluationConfig,
           GAConfig,
           LoggingConfig,
           PhysicalValue,
           RuleConfig,
           RuntimeConfig,
           SearchConfig,
)

__all__ = ["ANTITHETIC", "LEGACY_KEYS", "MAX_COUNT", "MAX_DT", "MAX_HIDDEN_LAYERS", "MAX_RULE_DIM", "MAX_SEED",
           "MAX_THREADS", "MAX_VALUE", "MAX_WIDTH", "MAX_YAML_BYTES", "MIN_DT", "SECTIONS", "ActorConfig", "Config",
           "EnvConfig", "EvaluationConfig", "GAConfig", "LoggingConfig", "PhysicalValue", "RuleConfig",
           "RuntimeConfig", "SearchConfig", "apply_overrides", "evaluation_task", "from_dict", "from_legacy",
           "is_legacy", "load", "parse_yaml", "read_yaml", "resolve_device", "to_yaml"]
