"""The configs and models that ship with metarl, found by name or by path from any folder.

In the repository they are ``configs/*.yaml`` and ``experiments/<name>/*.yaml`` at its root; an
installed metarl carries the same files as package data, under ``metarl/configs/`` and
``metarl/experiments/`` (pyproject.toml maps the two folders into the package). Names:

- a config is its file's stem: ``base`` (configs/base.yaml), ``pendulum_swingup``
  (experiments/pendulum_swingup/pendulum_swingup.yaml);
- a model is its experiment's folder: ``pendulum_balance`` (experiments/pendulum_balance/model.yaml);
  ``model_<x>.yaml`` in it is ``<folder>_<x>`` (``pendulum_balance_stage1``).

A path that exists is always taken as it is; a relative path that does not is also looked up
under the shipped roots, so ``configs/base.yaml`` works outside the repository too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
MODEL_STEM = "model"


def roots() -> list[Path]:
    """Folders that hold ``configs/`` and ``experiments/``: the installed package, the repository's root."""
    found = [PACKAGE] if (PACKAGE / "configs").is_dir() else []
    if (PACKAGE.parent / "pyproject.toml").is_file() and (PACKAGE.parent / "configs").is_dir():
        found.append(PACKAGE.parent)
    return found


def _is_model(path: Path) -> bool:
    return path.stem == MODEL_STEM or path.stem.startswith(f"{MODEL_STEM}_")


def configs() -> dict[str, Path]:
    """Every shipped config by name (the first root that has a name wins)."""
    found: dict[str, Path] = {}
    for root in roots():
        files = [*sorted((root / "configs").glob("*.yaml")), *sorted((root / "experiments").glob("*/*.yaml"))]
        for path in files:
            if not _is_model(path):
                found.setdefault(path.stem, path)
    return found


def models() -> dict[str, Path]:
    """Every shipped model by name."""
    found: dict[str, Path] = {}
    for root in roots():
        for path in sorted((root / "experiments").glob("*/*.yaml")):
            if _is_model(path):
                folder = path.parent.name
                name = folder if path.stem == MODEL_STEM else f"{folder}_{path.stem[len(MODEL_STEM) + 1:]}"
                found.setdefault(name, path)
    return found


def exists(path: str | os.PathLike) -> bool:
    """``Path(path).exists()``, False where the path cannot be looked up at all (a name longer than 255 bytes, a
    path longer than 4,096: ``OSError: File name too long``): whoever opens it reports it in one line."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def _find(name: str | os.PathLike, by_name: dict[str, Path]) -> str:
    text = os.fspath(name)
    if not text or exists(text):
        return text
    if not Path(text).is_absolute():
        for root in roots():
            if exists(root / text):
                return str(root / text)
    stem = text[:-5] if text.endswith(".yaml") else text
    if stem in by_name and "/" not in stem and os.sep not in stem:
        return str(by_name[stem])
    return text  # whoever opens it reports the missing file


def config(name: str | os.PathLike) -> str:
    """The config file ``name`` means: a path as given, else a shipped config's path; unknown names unchanged."""
    return _find(name, configs())


def model(name: str | os.PathLike) -> str:
    """The model file (or run folder) ``name`` means: a path as given, else a shipped model's path."""
    return _find(name, models())


def command(default: str) -> str:
    """How the user started this program, to repeat in help and hints: ``metarl-train`` for the
    installed command, ``python3 run_config.py`` for a script; ``default`` when neither is known."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if program.endswith(".py") and program != "__main__.py":
        return f"python3 {program}"
    if program.startswith("metarl-"):
        return program
    return default
