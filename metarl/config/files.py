"""Config files: YAML reading (size, encoding and parser failures as one-line errors),
``--set`` overrides, the device and the YAML written to run folders."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import ConfigError
from .build import from_dict
from .legacy import LEGACY_KEYS, from_legacy, is_legacy
from .schema import Config, _clip, _show


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load, override (``section.key=value``, value parsed as YAML) and validate a config.

    An empty or comment-only file is an error: a user who wants the defaults writes ``{}``.
    """
    data = read_yaml(path)
    if data is None:
        raise ConfigError(f"{path}: the config is empty (write {{}} to run the defaults, or pass a shipped "
                          f"config such as configs/base.yaml)")
    return from_dict(apply_overrides(data, overrides))


MAX_YAML_BYTES = 2**20  # a config is kilobytes; more is a wrong file (and slow to parse)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing, unreadable, oversized or malformed file raises `ConfigError`."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(f"{path}: too large for a YAML config ({size / 2**20:.3g} MiB; "
                              f"the limit is {MAX_YAML_BYTES / 2**20:g} MiB)")
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e.__class__.__name__}: {_first_line(e)})") from None
    try:
        return parse_yaml(text)
    except ValueError as e:
        raise ConfigError(f"{path}: invalid YAML{e}") from None


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` whose every failure is a one-line `ValueError`: "" or " at line N", then ": why"."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{where}: {_first_line(getattr(e, 'problem', None) or e)}") from None
    except RecursionError:
        raise ValueError(": nested too deeply") from None
    except Exception as e:  # noqa: BLE001 - e.g. ValueError for an integer of more than 4300 digits
        why = _first_line(e).split(";")[0]
        raise ValueError(f": {e.__class__.__name__}: {why}") from None


def _first_line(e: Any) -> str:
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line if len(line) <= 200 else line[:200] + "..."


def apply_overrides(data: Any, overrides: list[str] | tuple[str, ...]) -> Any:
    """Apply ``section.key=value`` overrides to raw config data (nested or flat)."""
    if not overrides:
        return data
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping of keys, got {_show(data)}")
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
        raise ConfigError(f"--set {_clip(item)}: expected section.key=value")
    try:
        return key, parse_yaml(text)
    except ValueError as e:
        raise ConfigError(f"{_clip(key)}: the --set value is not valid YAML{e}") from None


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
