"""Plugins: user code that registers rules, sources, traces and environments, imported before a config is read.

A plugin is a Python file (``path/to/my_rule.py``) or an importable module (``mypackage.rules``). Importing it
runs its top level, which calls `metarl.core.rule.register_rule` / `register_source` / `register_trace` and
`metarl.envs.register`; its ``if __name__ == "__main__":`` block does not run. The scripts take plugins from
``--plugin PATH_OR_MODULE`` (repeatable) and from the config's ``plugins:`` list, and import them before the
config or saved model is validated (``rule.declaration`` and ``env.name`` are checked against the registries).

- **A path or a module.** An entry ending in ``.py``, or holding a ``/``, is a file; anything else is a module
  name (``a.b.c``, found on ``sys.path`` as ``import`` finds it).
- **Relative paths** are resolved against the current directory (as ``ga.init_model``), on the command line
  and in a config file alike. A config records each file plugin by its resolved, absolute path: the run
  folder's ``config.yaml``, ``checkpoint.pt`` and every saved model name the file itself, so ``--resume`` and
  ``show_results.py RUN/best_model.yaml`` find it again from any folder.
- **A moved plugin.** A recorded file that no longer exists is an error naming it, unless a plugin of the same
  file name was given with ``--plugin`` in this command: that file stands in for it.
- **Once per process.** A file is imported once, as the module ``metarl_plugin_<stem>_<hash of its path>``
  (stable: the same file gets the same name in every process); a module once, by its name.

A plugin that is missing, or raises while it is imported, is one `PluginError` line naming it (and the
exception's type and message); its half-imported module is forgotten, so that nothing of it is reused.
Plugins run code: load configs and models (which name their plugins) from sources you trust, as any script.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path

from .errors import ConfigError

MAX_PLUGINS = 64  # entries in one config (or command line); metarl.config.schema.MAX_PLUGINS
MAX_LENGTH = 4096  # characters of one entry (a path)
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

# What this process imported: the recorded entry (absolute path or module name) -> the module's name.
_loaded: dict[str, str] = {}
# Files given on the command line (`given`) by file name: stand-ins for recorded files that moved.
_given: dict[str, str] = {}


class PluginError(ConfigError):
    """A plugin cannot be imported: missing, not a .py file or a module name, or it raised."""


def shown(entry: str) -> str:
    """``entry`` as messages quote it: printable, at most about 100 characters."""
    text = entry if entry.isprintable() else repr(entry)
    return text if len(text) <= 100 else f"{text[:60]}... ({len(text)} characters)"


def is_path(entry: str) -> bool:
    """Whether ``entry`` names a file (ends in ``.py`` or holds a path separator) rather than a module."""
    return entry.endswith(".py") or "/" in entry or os.sep in entry


def check(entry: object, key: str = "plugins") -> str:
    """``entry`` if it can name a plugin (a non-empty, printable string of at most `MAX_LENGTH` characters that
    is a path or a dotted module name); otherwise `PluginError` naming ``key``."""
    if not isinstance(entry, str):
        raise PluginError(f"{key}: a plugin is a path of a .py file or a module name (a string), got "
                          f"{type(entry).__name__}")
    if not entry.strip() or not entry.isprintable() or len(entry) > MAX_LENGTH:
        raise PluginError(f"{key}: {shown(entry)!s}: not a plugin (a path of a .py file or a module name, printable, "
                          f"at most {MAX_LENGTH} characters)")
    if not is_path(entry) and not _MODULE.fullmatch(entry):
        raise PluginError(f"plugin {shown(entry)}: neither a .py file (a path ending in .py) nor a module name "
                          f"(like package.module)")
    return entry


def resolve(entry: str) -> str:
    """The recorded form of ``entry``: a file's absolute path (relative to the current directory), a module's
    name as given."""
    if not is_path(entry):
        return entry
    return os.path.abspath(os.path.expanduser(entry))


def module_name(path: str) -> str:
    """The stable module name a plugin file is imported under: from its file name and its real path."""
    stem = re.sub(r"\W", "_", Path(path).stem) or "plugin"
    digest = hashlib.sha1(os.path.realpath(path).encode()).hexdigest()[:8]
    return f"metarl_plugin_{stem}_{digest}"


def load(entries: list[str] | tuple[str, ...], key: str = "plugins") -> list[str]:
    """Import each plugin of ``entries`` (once per process, in order); returns their recorded forms (files as
    absolute paths). One `PluginError` line for the first that is malformed, missing or raises."""
    if len(entries) > MAX_PLUGINS:
        raise PluginError(f"{key}: at most {MAX_PLUGINS} plugins, got {len(entries)}")
    out: list[str] = []
    for entry in entries:
        recorded = _load_one(check(entry, key), key)
        if recorded not in out:
            out.append(recorded)
    return out


def given(entries: list[str] | tuple[str, ...]) -> list[str]:
    """`load` of the plugins given on the command line (``--plugin``); a file among them also stands in for a
    recorded plugin of the same file name that no longer exists (a moved plugin)."""
    loaded = load(entries, "--plugin")
    for recorded in loaded:
        if is_path(recorded):
            _given.setdefault(Path(recorded).name, recorded)
    return loaded


def merged(*lists: list[str] | tuple[str, ...]) -> list[str]:
    """The entries of ``lists`` in order, each once."""
    out: list[str] = []
    for entries in lists:
        out += [e for e in entries if e not in out]
    return out


def _load_one(entry: str, key: str) -> str:
    recorded = resolve(entry)
    if recorded in _loaded and _loaded[recorded] in sys.modules:
        return recorded
    if is_path(entry):
        path = Path(recorded)
        if not path.is_file():
            stand_in = _given.get(path.name)
            if stand_in is not None and not path.exists():
                return stand_in  # a recorded plugin that moved, given again with --plugin
            where = "" if os.path.isabs(os.path.expanduser(entry)) else f" (relative to the current directory " \
                f"{shown(os.getcwd())})"
            what = "is a folder, not a .py file" if path.is_dir() else "no such file"
            moved = " (moved? give it again: --plugin NEW_PATH)" if key == "plugins" and not path.is_dir() else ""
            raise PluginError(f"plugin {shown(entry)}: {what}{where}{moved}")
        if path.suffix != ".py":
            raise PluginError(f"plugin {shown(entry)}: a plugin file is a Python source file ending in .py")
        name = module_name(recorded)
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise PluginError(f"plugin {shown(entry)}: cannot be imported as a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # as `import` does: the module can find itself (dataclasses, pickling)
        try:
            spec.loader.exec_module(module)
        except BaseException as e:
            sys.modules.pop(name, None)
            _raise(entry, e)
    else:
        name = entry
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
                raise PluginError(f"plugin {shown(entry)}: no module named {shown(e.name)} (not a file either: a "
                                  f"plugin file's path ends in .py)") from None
            _raise(entry, e)
        except BaseException as e:
            for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                if loaded not in _loaded.values():
                    sys.modules.pop(loaded, None)
            _raise(entry, e)
    _loaded[recorded] = name
    return recorded


def _raise(entry: str, e: BaseException) -> None:
    """One line for an exception raised while a plugin was imported (Ctrl-C and signals go on as they are)."""
    if isinstance(e, KeyboardInterrupt):
        raise e
    if isinstance(e, SystemExit):
        why = f"SystemExit: it exited (code {shown(str(e.code))}) while imported"
    else:
        lines = str(e).strip().splitlines()
        message = shown(lines[0][:200]) if lines else ""
        why = f"{type(e).__name__}: {message}" if message else type(e).__name__
    raise PluginError(f"plugin {shown(entry)} failed while imported: {why}") from None
