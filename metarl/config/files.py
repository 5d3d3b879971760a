"""Config files: YAML reading (size, encoding and parser failures as one-line errors),
``--set`` overrides, the device and the YAML written to run folders."""

from __future__ import annotations

import stat
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


def check_regular_file(path: str | Path, limit: int, what: str, error: type[Exception] = ConfigError) -> str:
    """That ``path`` is a regular file of at most ``limit`` bytes, before it is opened; anything else
    (missing, a folder, a FIFO, a device such as /dev/zero, too large, unreadable) raises ``error`` with
    one line. A special file is never opened: reading a FIFO would wait forever and a device never
    ends. Returns the path as shown in messages."""
    path = Path(path)
    shown = _clip(repr(str(path)))[1:-1] if not str(path).isprintable() else str(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise error(f"{shown}: no such file") from None
    except OSError as e:
        raise error(f"{shown}: cannot read ({e.__class__.__name__}: {_first_line(e.strerror or e)})") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{shown}: is a folder, not a {what}")
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode) or \
            stat.S_ISBLK(info.st_mode) else "a socket" if stat.S_ISSOCK(info.st_mode) else "a special file"
        raise error(f"{shown}: is {kind}, not a regular file; a {what} must be a file")
    if info.st_size > limit:
        raise error(f"{shown}: too large for a {what} ({info.st_size / 2**20:.3g} MiB; "
                    f"the limit is {limit / 2**20:g} MiB)")
    return shown


def read_text_file(path: str | Path, limit: int, what: str, error: type[Exception] = ConfigError) -> str:
    """The text of a regular file of at most ``limit`` bytes (`check_regular_file`); not UTF-8 text or
    unreadable raises ``error`` with one line too."""
    shown = check_regular_file(path, limit, what, error)
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:  # grew since the stat
            raise error(f"{shown}: too large for a {what} (the limit is {limit / 2**20:g} MiB)")
        return data.decode()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else _first_line(e)
        raise error(f"{shown}: cannot read ({e.__class__.__name__}: {why})") from None


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing, unreadable, special, oversized or malformed file raises `ConfigError`."""
    text = read_text_file(path, MAX_YAML_BYTES, "YAML config")
    try:
        return parse_yaml(text)
    except ValueError as e:
        raise ConfigError(f"{path}: invalid YAML{e}") from None


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(f"duplicate key {_clip(repr(key))} (lines {first} and {second}); give each key once")


class _StrictLoader(yaml.SafeLoader):
    """The safe loader, refusing a mapping that gives one key twice (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(key, seen[key], line)
                seen[key] = line
            except TypeError:
                continue  # unhashable: the constructor reports it
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` whose every failure is a one-line `ValueError`: "" or " at line N", then ": why".
    A key given twice in one mapping is refused, naming the key and both lines."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as e:
        raise ValueError(f": {e}") from None
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
        value = parse_yaml(text)
    except ValueError as e:
        raise ConfigError(f"{_clip(key)}: the --set value is not valid YAML{e}") from None
    if value is None and text.strip() not in NULL_SPELLINGS:
        # `&a`, `!!null x` or `*` parse as null: a typo must not silently mean "none" (seed: null draws a seed)
        raise ConfigError(f"{_clip(key)}: the --set value {_clip(repr(text))} is not a value (YAML reads it as "
                          f"null); write {_clip(key)}=null to mean none")
    return key, value


NULL_SPELLINGS = ("", "null", "Null", "NULL", "~")


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
