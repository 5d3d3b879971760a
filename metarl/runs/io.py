"""Files: atomic writes, saved models (YAML), checkpoints and the generation log."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import torch
import yaml

from .. import __version__
from ..config import Config, from_dict
from ..config.files import check_regular_file, parse_yaml, read_text_file
from ..core.genome import GenomeLayout
from ..core.rule import RULES, STANDARD, RuleDeclaration, register_rule
from ..errors import ConfigError, ModelFileError, UserError

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


VIRTUAL_ROOTS = ("/proc", "/sys", "/dev")  # kernel file systems: no place for files (/dev/shm is tmpfs: allowed)


def check_path(path: str | Path, what: str, error: type[Exception] = UserError) -> None:
    """Refuse a path metarl should not create a file or folder at: over-long names, kernel file systems."""
    path = Path(path)
    text = os.fsencode(str(path))
    if len(text) >= 4096 or any(len(part) > 255 for part in text.split(b"/")):
        raise error(f"{clip_path(path)}: {what}: file name too long (at most 255 bytes per name)")
    resolved = os.path.abspath(path)
    for root in VIRTUAL_ROOTS:
        if (resolved == root or resolved.startswith(root + "/")) and not resolved.startswith("/dev/shm/"):
            raise error(f"{clip_path(path)}: {what}: {root} is a kernel file system, not a place for files; "
                        f"choose a folder on a disk")


def clip_path(path: str | Path) -> str:
    """A path as an error line quotes it: whole up to 100 characters, else its start and its length."""
    text = str(path)
    return text if len(text) <= 100 else f"{text[:60]}... ({len(text)} characters)"


def check_output_file(path: str | Path, what: str) -> Path:
    """Refuse, before any work, an output file that cannot be written: a name too long, a place in a
    kernel file system, a folder or special file where the file belongs, a file where a folder belongs,
    an unwritable folder. Missing folders are created when the file is written."""
    path = Path(path)
    check_path(path, what)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    except NotADirectoryError:
        raise UserError(f"{clip_path(path)}: {what}: a part of the path is a file, not a folder") from None
    except OSError as e:
        raise UserError(f"{clip_path(path)}: {what}: cannot write ({e.strerror or e.__class__.__name__})") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise UserError(f"{clip_path(path)}: {what}: is a folder; give a file name")
    if mode is not None and not stat.S_ISREG(mode):
        raise UserError(f"{clip_path(path)}: {what}: is a special file, not a regular file")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{clip_path(path)}: {what}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{clip_path(path)}: {what}: the folder {parent} is not writable")
    return path


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


MODEL_FORMAT = 2  # 2: with the rule's declaration ("rule"); 1 (no "format"): the standard rule, as the seed's files


def model_dict(genome: torch.Tensor, layout: GenomeLayout, config: Config, *, fitness: float,
               generation: int, seed: int) -> dict[str, Any]:
    """The saved-model form (SPEC, "Saved model format", plus the format version and the rule's declaration,
    `metarl.core.rule.RuleDeclaration.to_dict`); a non-finite genome or fitness is never saved."""
    if not bool(torch.isfinite(genome).all()):
        raise ModelFileError("refusing to save a model whose genome holds NaN or infinite genes")
    if not math.isfinite(float(fitness)):
        raise ModelFileError(f"refusing to save a model with the non-finite fitness {float(fitness)}")
    if config.rule.declaration != layout.rule.name:
        raise ModelFileError(f"the genome's rule is {layout.rule.name!r} but the config's rule.declaration is "
                             f"{config.rule.declaration!r}")
    return {"format": MODEL_FORMAT, "rule": layout.rule.to_dict(), "actor": layout.to_cells(genome),
            "fitness": float(fitness), "generation": int(generation), "seed": int(seed), "version": __version__,
            "config": config.to_dict()}


def save_model(path: str | Path, genome: torch.Tensor, layout: GenomeLayout, config: Config, *,
               fitness: float, generation: int, seed: int) -> None:
    """Write a saved model atomically."""
    data = model_dict(genome, layout, config, fitness=fitness, generation=generation, seed=seed)
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100))


MAX_MODEL_BYTES = 256 * 2**20  # the largest rule the config allows (S = H = 1024) is ~100 MB of YAML


def load_model(path: str | Path) -> SavedModel:
    """Load a model of this project or of the original one; `ModelFileError` names any problem.

    Checked before anything is allocated: a regular file of at most `MAX_MODEL_BYTES`, valid YAML
    (no duplicate keys, bounded nesting), the rule sizes in the config's ranges, every cell part of
    exactly its shape with finite numbers, and the provenance fields of their types."""
    path = Path(path)
    try:
        missing = not path.exists() and not path.is_symlink()
    except OSError as e:  # a name too long
        raise ModelFileError(f"{clip_path(path)}: cannot read the model ({e.strerror})") from None
    if missing:
        raise ModelFileError(f"{clip_path(path)}: no such model file")
    text = read_text_file(path, MAX_MODEL_BYTES, "saved model", ModelFileError)
    try:
        data = parse_yaml(text)
    except ValueError as e:
        raise ModelFileError(f"{path}: not a readable YAML model{e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("actor"), dict):
        raise ModelFileError(f"{path}: not a saved model (no 'actor' section with the rule cells)")
    rule = model_rule(path, data)
    try:
        layout, genome = GenomeLayout.from_cells(data["actor"], rule)
    except (ValueError, TypeError, KeyError, OverflowError) as e:
        raise ModelFileError(f"{path}: corrupt rule cells: {e}") from None
    if data.get("config") is not None and not isinstance(data["config"], dict):
        raise ModelFileError(f"{path}: invalid config inside the model: expected a mapping")
    try:
        config = from_dict(data.get("config") or {})
    except ConfigError as e:
        raise ModelFileError(f"{path}: invalid config inside the model: {e}") from None
    if config.rule.declaration != rule.name:
        raise ModelFileError(f"{path}: the rule is declared as {rule.name!r} but the config says "
                             f"rule.declaration: {config.rule.declaration}")
    if (config.rule.signal_dim, config.rule.state_dim) != (layout.signal_dim, layout.state_dim):
        raise ModelFileError(f"{path}: cells have signal_dim {layout.signal_dim}, state_dim {layout.state_dim} "
                             f"but the config says {config.rule.signal_dim}, {config.rule.state_dim}")
    fitness = data.get("fitness")
    if fitness is not None and (not _is_number(fitness) or not math.isfinite(fitness)):
        raise ModelFileError(f"{path}: fitness must be a finite number, got {_short(fitness)}")
    generation = data.get("generation")
    if generation is not None and (not _is_int(generation) or not 0 <= generation <= MAX_GENERATION):
        raise ModelFileError(f"{path}: generation must be an integer in [0, {MAX_GENERATION}], got "
                             f"{_short(generation)}")
    seed = data.get("seed", config.seed)
    if seed is not None and (not _is_int(seed) or not 0 <= seed < 2**63):
        raise ModelFileError(f"{path}: seed must be an integer in [0, 2^63-1], got {_short(seed)}")
    version = data.get("version")
    return SavedModel(genome, layout, config, None if fitness is None else float(fitness), generation, seed,
                      None if version is None else _short(version))


def model_rule(path: Path, data: dict[str, Any]) -> RuleDeclaration:
    """The rule declaration a saved model records (validated: an untrusted record), registered under its name so
    that the model's config can name it; the standard rule for a model without a record (format 1)."""
    form = data.get("format", 1)
    if form not in (1, MODEL_FORMAT) or isinstance(form, bool):
        raise ModelFileError(f"{path}: model format {_short(form)}: this version reads formats 1 and {MODEL_FORMAT}")
    if "rule" not in data:
        return STANDARD
    try:
        rule = RuleDeclaration.from_dict(data["rule"])
    except (ValueError, TypeError) as e:
        raise ModelFileError(f"{path}: invalid rule declaration: {e}") from None
    known = RULES.get(rule.name)
    if known is not None and known != rule:
        raise ModelFileError(f"{path}: the model's rule {rule.name!r} is not the rule registered under that name "
                             f"({known.difference(rule) or 'other names'})")
    return register_rule(rule)


# ---------------------------------------------------------------------------- checkpoints

CHECKPOINT_FORMAT = 2  # 2: with "config" and "sha256"; 1 (no "format"): neither, accepted and upgraded on the next save
MAX_GENERATION = 10**9  # ga.generations is at most this
MAX_CHECKPOINT_BYTES = 2**40  # beyond what any population that fits in memory writes


def checkpoint_digest(state: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint's data (every field but ``sha256``), canonical: tensors by dtype, shape and bytes,
    floats by ``repr``. Detects a changed byte anywhere in the data, which the torch format alone does not."""
    h = hashlib.sha256()

    def add(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, dict):
            h.update(f"D{len(x)}:".encode())
            for k in sorted(x, key=str):
                add(str(k))
                add(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(f"L{len(x)}:".encode())
            for item in x:
                add(item)
        else:
            h.update(f"{type(x).__name__}:{x!r};".encode())

    add({k: v for k, v in state.items() if k != "sha256"})
    return h.hexdigest()


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (torch format), with its format number and integrity hash."""
    state = {**state, "format": CHECKPOINT_FORMAT}
    state["sha256"] = checkpoint_digest(state)
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a checkpoint: `ModelFileError` (one line) if missing, corrupt or inconsistent.

    Checked: a regular file of a sane size; the schema (every field, its type); the population a finite
    float32 ``(P, G)``; the GA generator state; ``generation`` in [0, 10^9] with one log row per generation,
    each numbered and with finite statistics; ``best_ever`` a finite genome and fitness of an earlier
    generation; and, from format 2 on, the integrity hash. A checkpoint of format 1 (no hash) is
    accepted: its next save adds the hash."""
    path = Path(path)
    check_regular_file(path, MAX_CHECKPOINT_BYTES, "checkpoint", ModelFileError)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise ModelFileError(f"{path}: corrupt checkpoint ({e.__class__.__name__})") from None

    def bad(why: str) -> ModelFileError:
        return ModelFileError(f"{path}: corrupt checkpoint ({why}); restore it, or start a new run")

    if not isinstance(state, dict):
        raise bad(f"expected a mapping, got {type(state).__name__}")
    for key in ("generation", "population", "ga_generator", "seed", "rows", "best_ever"):
        if key not in state:
            raise bad(f"missing {key!r}")
    if "sha256" in state:
        try:
            digest = checkpoint_digest(state)
        except RecursionError:
            raise bad("its data is nested too deep") from None
        if not isinstance(state["sha256"], str) or state["sha256"] != digest:
            raise bad("its data does not match its integrity hash: the file was changed or damaged")
    elif state.get("format", 1) != 1:
        raise bad("no integrity hash")
    generation = state["generation"]
    if not _is_int(generation) or not 0 <= generation <= MAX_GENERATION:
        raise bad(f"generation must be an integer in [0, {MAX_GENERATION}], got {_short(generation)}")
    seed = state["seed"]
    if not _is_int(seed) or not 0 <= seed < 2**63:
        raise bad(f"seed must be an integer in [0, 2^63-1], got {_short(seed)}")
    population = state["population"]
    if not isinstance(population, torch.Tensor) or population.dtype != torch.float32 or population.dim() != 2 \
            or population.shape[0] < 1:
        raise bad(f"population must be a float32 (P, G) tensor, got {_tensor_kind(population)}")
    if not bool(torch.isfinite(population).all()):
        raise bad(f"population holds {int((~torch.isfinite(population)).sum())} non-finite genes")
    generator = state["ga_generator"]
    if not isinstance(generator, torch.Tensor) or generator.dtype != torch.uint8 or generator.dim() != 1:
        raise bad(f"ga_generator must be a generator state (uint8 tensor), got {_tensor_kind(generator)}")
    try:
        torch.Generator().set_state(generator)
    except (RuntimeError, TypeError, ValueError):
        raise bad("ga_generator is not a valid generator state") from None
    _check_rows(state["rows"], generation, bad)
    _check_best_ever(state["best_ever"], generation, population.shape[1], bad)
    if state.get("config") is not None and not isinstance(state["config"], dict):
        raise bad(f"config must be a mapping, got {type(state['config']).__name__}")
    return state


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value: Any) -> str:
    from ..config.schema import _show

    return _show(value)


def _tensor_kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _check_rows(rows: Any, generation: int, bad: Any) -> None:
    if not isinstance(rows, list):
        raise bad(f"rows must be a list, got {type(rows).__name__}")
    if len(rows) != generation:
        raise bad(f"{len(rows)} log rows for {generation} complete generations")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise bad(f"log row {i} must be a mapping, got {type(row).__name__}")
        for key in LOG_FIELDS:
            if key == "nonfinite" and key not in row:
                continue  # rows of versions before it
            value = row.get(key)
            if not _is_number(value) or not math.isfinite(value):
                raise bad(f"log row {i}: {key} must be a finite number, got {_short(value)}")
        if row["generation"] != i:
            raise bad(f"log row {i} is numbered {_short(row['generation'])}")


def _check_best_ever(best: Any, generation: int, genes: int, bad: Any) -> None:
    if best is None:
        if generation > 0:
            raise bad(f"best_ever missing after {generation} generations")
        return
    if not isinstance(best, dict):
        raise bad(f"best_ever must be a mapping, got {type(best).__name__}")
    genome, fitness, born = best.get("genome"), best.get("fitness"), best.get("generation")
    if not isinstance(genome, torch.Tensor) or genome.dim() != 1 or genome.shape[0] != genes \
            or not genome.is_floating_point():
        raise bad(f"best_ever genome must be a ({genes},) float tensor, got {_tensor_kind(genome)}")
    if not bool(torch.isfinite(genome).all()):
        raise bad("best_ever genome holds non-finite genes")
    if not _is_number(fitness) or not math.isfinite(fitness):
        raise bad(f"best_ever fitness must be a finite number, got {_short(fitness)}")
    if not _is_int(born) or not 0 <= born < max(generation, 1):
        raise bad(f"best_ever generation must be an integer in [0, {generation}), got {_short(born)}")


# ---------------------------------------------------------------------------- log

MAX_LOG_BYTES = 256 * 2**20  # ~2 million generations of rows


def read_log(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``log.csv`` as dicts of floats (an empty field, a value older runs did not log, is NaN);
    a missing, special, huge, binary or malformed file raises `ModelFileError` (one line)."""
    path = Path(path)
    text = read_text_file(path, MAX_LOG_BYTES, "generation log", ModelFileError)
    if "\x00" in text:
        raise ModelFileError(f"{path}: corrupt log (binary data)")
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if header is None:
            return []
        if len(set(header)) != len(header) or any(len(name) > 100 for name in header):
            raise ModelFileError(f"{path}: corrupt log (bad header)")
        rows = []
        for number, fields in enumerate(reader, start=2):
            if not fields:
                continue  # a blank line
            if len(fields) != len(header):
                raise ModelFileError(f"{path}: corrupt log (line {number} has {len(fields)} fields, the header "
                                     f"{len(header)})")
            rows.append({k: float(v) if v != "" else float("nan") for k, v in zip(header, fields, strict=True)})
        return rows
    except csv.Error as e:
        raise ModelFileError(f"{path}: corrupt log ({str(e)[:100]})") from None
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
