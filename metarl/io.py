"""Files: atomic writes, saved models (YAML), checkpoints and the generation log."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from . import __version__
from .config import Config, from_dict
from .errors import ConfigError, ModelFileError
from .genome import GenomeLayout

# best, mean, median, worst and best_ever are over the finite fitness values only; nonfinite
# counts the individuals whose fitness was NaN or infinite (empty in rows of older runs).
LOG_FIELDS = ("generation", "best", "mean", "median", "worst", "best_ever", "seconds",
              "individual_steps_per_s", "nonfinite")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename: readers never see a partial file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_temporary_files(directory: str | Path) -> None:
    """Delete the temporary files of `atomic_write_bytes` a killed process left in ``directory``."""
    for tmp in Path(directory).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Text version of `atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())


# ---------------------------------------------------------------------------- models

@dataclass(frozen=True)
class SavedModel:
    """A learned rule with its provenance."""

    genome: torch.Tensor  # (G,)
    layout: GenomeLayout
    config: Config
    fitness: float | None
    generation: int | None
    seed: int | None
    version: str | None


def model_dict(genome: torch.Tensor, layout: GenomeLayout, config: Config, *, fitness: float,
               generation: int, seed: int) -> dict[str, Any]:
    """The saved-model form (SPEC, "Saved model format")."""
    return {"actor": layout.to_cells(genome), "fitness": float(fitness), "generation": int(generation),
            "seed": int(seed), "version": __version__, "config": config.to_dict()}


def save_model(path: str | Path, genome: torch.Tensor, layout: GenomeLayout, config: Config, *,
               fitness: float, generation: int, seed: int) -> None:
    """Write a saved model atomically."""
    data = model_dict(genome, layout, config, fitness=fitness, generation=generation, seed=seed)
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100))


def load_model(path: str | Path) -> SavedModel:
    """Load a model of this project or of the original one; `ModelFileError` names any problem."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ModelFileError(f"{path}: not a readable YAML model ({e.__class__.__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("actor"), dict):
        raise ModelFileError(f"{path}: not a saved model (no 'actor' section with the rule cells)")
    try:
        layout, genome = GenomeLayout.from_cells(data["actor"])
    except (ValueError, TypeError, KeyError) as e:
        raise ModelFileError(f"{path}: corrupt rule cells: {e}") from None
    try:
        config = from_dict(data.get("config") or {})
    except ConfigError as e:
        raise ModelFileError(f"{path}: invalid config inside the model: {e}") from None
    if (config.rule.signal_dim, config.rule.state_dim) != (layout.signal_dim, layout.state_dim):
        raise ModelFileError(f"{path}: cells have signal_dim {layout.signal_dim}, state_dim {layout.state_dim} "
                             f"but the config says {config.rule.signal_dim}, {config.rule.state_dim}")
    fitness = data.get("fitness")
    return SavedModel(genome, layout, config, None if fitness is None else float(fitness),
                      data.get("generation"), data.get("seed", config.seed), data.get("version"))


# ---------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (torch format)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint; `ModelFileError` if missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no checkpoint here")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise ModelFileError(f"{path}: corrupt checkpoint ({e.__class__.__name__})") from None
    for key in ("generation", "population", "ga_generator", "seed"):
        if key not in state:
            raise ModelFileError(f"{path}: corrupt checkpoint (missing {key!r})")
    return state


# ---------------------------------------------------------------------------- log

def read_log(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``log.csv`` as dicts of floats (an empty field, a value older runs did not log, is NaN)."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read log ({e.strerror})") from None
    try:
        return [{k: float(v) if v != "" else float("nan") for k, v in row.items()} for row in rows]
    except (TypeError, ValueError):
        raise ModelFileError(f"{path}: corrupt log (non-numeric field)") from None


def log_text(rows: list[dict[str, float]]) -> str:
    """CSV text of log rows."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row[k]) if k in row else "" for k in LOG_FIELDS})
    return buf.getvalue()


def _fmt(value: float) -> str:
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))
