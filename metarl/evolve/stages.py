"""Multi-stage configs: a curriculum as one config, one command and one run folder.

A config with a ``stages:`` list runs its stages one after the other. Each stage is a mapping
with a ``name``, an optional ``rescore: K`` or ``ship: snapshot`` and its own overrides of the base config (the rest
of the file), nested as in the schema (``ga: {generations: 29}``) or dotted
(``ga.generations: 29``). Stage 1 starts as a plain run would; every later stage is warm-started
(``ga.init_model``) from the model the stage before it shipped: its ``best_model.yaml`` (the best
of its last generation), or, when that stage says ``rescore: K``, the best of K candidates scored again
on held-out lifetimes (the GA's last K elites; for CMA-ES its mean and its last generation's K - 1 best:
`rescore_best`, the choice ``show_results.py RUN --rescore K`` makes), written as its ``rescored_model.yaml``;
or, with ``ship: snapshot``, its last generation's snapshot (the searcher's best guess: for CMA-ES its mean).

The run folder::

    RUN/stages.yaml        the resolved stages (each stage's whole config, seed recorded); --resume reads it
    RUN/<name>/            each stage's own, ordinary run folder (config.yaml, log.csv, checkpoint.pt, ...)
    RUN/model.yaml         the model the last stage shipped, written when every stage is complete

Each stage resumes exactly as a plain run does, and a stage is complete when its checkpoint
holds all its generations (and its rescored model is written), so ``--resume RUN`` after a stop
at any moment, in any stage, gives the logs and models of an uninterrupted run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..analysis.evaluation import RESCORE_EPISODES, rescore_best
from ..backends.lifetime import ProgressFn
from ..config import Config, from_dict, is_legacy, read_yaml
from ..config.build import SECTIONS
from ..config.files import apply_overrides
from ..config.schema import _clip, _show, _suggest
from ..errors import ConfigError, ModelFileError
from ..runs import io
from .searchers import candidate_bound
from .trainer import STARTED_FILE, RunState, layout_of, snapshot_path, with_seed

STAGES_FILE = "stages.yaml"
MODEL_FILE = "model.yaml"
# What a resumed multi-stage run may change in a stage: what is printed or logged, how the work runs, the device.
FREE_STAGE_KEYS = ("logging", "runtime", "device")
RECORD_HEAD = ("# The resolved stages of this run (each stage's whole config; a later stage starts from the model the\n"
               "# stage before it ships). Written by run_config.py; --resume reads it.\n")
MAX_STAGES = 100
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # no dot: never a run file's name (stages.yaml, ...)
# The keys of a stage besides the config's own; `device` is the run's (one device for all stages).
STAGE_KEYS = {"name": "the stage's name: its run folder RUN/<name>/ (1-64 letters, digits, _ and -; unique)",
              "rescore": f"K: ship the best of K candidates (the last generation's K elites; CMA-ES: its mean and "
                         f"the K - 1 best of its last generation) rescored on {RESCORE_EPISODES} held-out lifetimes "
                         f"(seed 0, as show_results.py RUN --rescore K) instead of best_model.yaml",
              "ship": "best (the default: best_model.yaml, the best of the last generation) or snapshot (the last "
                      "generation's snapshot, snapshots/gen_N.yaml: the searcher's best guess then, for CMA-ES its "
                      "mean; needs logging.snapshot_every); not with rescore"}
SHIP_CHOICES = ("best", "snapshot")
CONFIG_KEYS = ("seed", *SECTIONS)
RESERVED_NAMES = ("tensorboard",)


@dataclass(frozen=True)
class Stage:
    """One stage: its name, its resolved config (``ga.init_model`` set to the previous stage's model) and
    the number of elites to rescore (None: ship ``best_model.yaml``, or with ``ship == "snapshot"`` the last
    generation's snapshot)."""

    name: str
    config: Config
    rescore: int | None = None
    index: int = 0
    ship: str = "best"

    @property
    def where(self) -> str:
        """How messages name the stage: ``stages[1] (stage2)``."""
        return f"stages[{self.index}] ({self.name})"

    def folder(self, run_dir: Path) -> Path:
        return run_dir / self.name

    def shipped(self, run_dir: Path) -> Path:
        """The model this stage ships (the next stage's warm start)."""
        if self.rescore:
            return self.folder(run_dir) / "rescored_model.yaml"
        if self.ship == "snapshot":
            return snapshot_path(self.folder(run_dir), self.config.ga.generations - 1)
        return self.folder(run_dir) / "best_model.yaml"


def is_multi_stage(data: Any) -> bool:
    """Whether raw config data is a multi-stage config."""
    return isinstance(data, dict) and "stages" in data


def is_stage_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` is the run folder of a multi-stage config."""
    try:
        return (Path(run_dir) / STAGES_FILE).is_file()
    except OSError:  # a name too long: no such folder
        return False


def load(path: str | Path, run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> list[Stage]:
    """The stages of the multi-stage config file ``path`` to be run in ``run_dir``; ``overrides``
    (``--set``, ``--seed``, ... as ``section.key=value``) apply to every stage, after its own."""
    return build(read_yaml(path), run_dir, overrides)


def build(data: Any, run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> list[Stage]:
    """Validated stages of raw multi-stage data; every problem is one `ConfigError` line naming the stage
    and the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping of keys, got {_show(data)}")
    base = {k: v for k, v in data.items() if k != "stages"}
    raw = data.get("stages")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"stages: expected a non-empty list of stages (each a mapping with a name and its "
                          f"overrides), got {_show(raw)}")
    if len(raw) > MAX_STAGES:
        raise ConfigError(f"stages: at most {MAX_STAGES} stages, got {len(raw)}")
    if is_legacy(base):
        raise ConfigError("stages: a multi-stage config is written in the nested format (env:, ga:, ...), not "
                          "the original project's flat keys")
    run_dir = Path(run_dir)
    stages: list[Stage] = []
    for i, item in enumerate(raw):
        where = f"stages[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a mapping (name: ..., then the stage's overrides), got "
                              f"{_show(item)}")
        name = item.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name) or name in RESERVED_NAMES:
            raise ConfigError(f"{where}.name: expected a folder name (1-64 letters, digits, _ and -, starting with "
                              f"a letter or digit; not {', '.join(RESERVED_NAMES)}), got {_show(name)}")
        where = f"{where} ({name})"
        if any(s.name == name for s in stages):
            raise ConfigError(f"{where}.name: {name!r} names two stages; each stage needs its own name (its folder)")
        own = {k: v for k, v in item.items() if k not in STAGE_KEYS}
        for key in own:
            head = key.split(".", 1)[0] if isinstance(key, str) else key
            if head not in CONFIG_KEYS:
                shown = _clip(key) if isinstance(key, str) else _show(key)
                hint = " (the device is the run's: set it at the top level)" if head == "device" else \
                    _suggest(head, [*STAGE_KEYS, *CONFIG_KEYS])
                raise ConfigError(f"{where}: {shown}: not a stage key{hint}; valid: "
                                  f"{', '.join([*STAGE_KEYS, *CONFIG_KEYS])}")
            if head in SECTIONS and key == head and not isinstance(own[key], dict):
                raise ConfigError(f"{where}: {head}: expected a mapping of the stage's overrides, got "
                                  f"{_show(own[key])}")
        own = _nested(own, where)
        if i > 0 and "init_model" in (own.get("ga") or {}):
            raise ConfigError(f"{where}: ga.init_model: a later stage starts from the model the stage before it "
                              f"ships; only the first stage may name one")
        merged = apply_overrides(_merge(base, own), overrides)
        if i > 0:
            merged = _merge(merged, {"ga": {"init_model": str(stages[-1].shipped(run_dir))}})
        try:
            config = from_dict(merged)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        config = with_seed(config)
        rescore = item.get("rescore")
        if rescore is not None:
            bound, key = candidate_bound(config)
            if isinstance(rescore, bool) or not isinstance(rescore, int) or not 1 <= rescore <= bound:
                raise ConfigError(f"{where}.rescore: must be an integer in [1, {key}={bound}] "
                                  f"(the candidates to rescore), got {_show(rescore)}")
        ship = item.get("ship", "best")
        if ship not in SHIP_CHOICES:
            raise ConfigError(f"{where}.ship: must be one of {', '.join(SHIP_CHOICES)}, got {_show(ship)}")
        if ship == "snapshot" and rescore is not None:
            raise ConfigError(f"{where}: rescore and ship: snapshot are two ways to choose the model the stage "
                              f"ships; give one")
        if ship == "snapshot" and config.logging.snapshot_every is None:
            raise ConfigError(f"{where}.ship: snapshot needs logging.snapshot_every (the snapshots it ships from)")
        stages.append(Stage(name, config, rescore, i, ship))
    for before, stage in zip(stages, stages[1:], strict=False):
        check_warm_start(before, stage)
    return stages


def check_warm_start(before: Stage, stage: Stage) -> None:
    """``stage`` can start from the model ``before`` ships (checked before any stage runs): the same signal and
    state sizes, and the same rule or that rule with inputs added (`metarl.core.genome.GenomeLayout.embed`)."""
    import torch

    mine, theirs = layout_of(stage.config), layout_of(before.config)
    if (mine.signal_dim, mine.state_dim) != (theirs.signal_dim, theirs.state_dim):
        raise ConfigError(f"{stage.where}: rule.signal_dim, rule.state_dim are {mine.signal_dim}, {mine.state_dim} "
                          f"but {before.where}'s are {theirs.signal_dim}, {theirs.state_dim}: a stage starts from the "
                          f"model the stage before it ships, so the rule sizes stay")
    if mine.rule.signature() == theirs.rule.signature():
        return
    try:
        mine.embed(torch.zeros(theirs.size), theirs)
    except ValueError:
        raise ConfigError(f"{stage.where}: rule.declaration is {mine.rule.name!r} but {before.where}'s is "
                          f"{theirs.rule.name!r}, whose {mine.rule.difference(theirs.rule)}: a stage starts from the "
                          f"model the stage before it ships, so its rule is that rule or it with inputs "
                          f"added") from None


def _nested(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Dotted keys (``ga.generations``) as nested mappings, merged with the nested ones; a key set twice
    (``ga: {generations: 2}`` and ``ga.generations: 3``) is refused."""
    out: dict[str, Any] = {}
    for path, value in _leaves(data, (), where):
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{where}: {_clip('.'.join(path[:i + 1]))}: given twice")
            node = child
        if path[-1] in node:
            raise ConfigError(f"{where}: {_clip('.'.join(path))}: given twice")
        node[path[-1]] = value
    return out


def _leaves(data: dict[Any, Any], prefix: tuple[str, ...], where: str) -> list[tuple[tuple[str, ...], Any]]:
    """``(path, value)`` of every value that is not a non-empty mapping, dotted keys split."""
    out = []
    for key, value in data.items():
        if not isinstance(key, str) or any(not p for p in key.split(".")):
            shown = _clip(".".join((*prefix, key))) if isinstance(key, str) else _show(key)
            raise ConfigError(f"{where}: {shown}: not a key")
        path = (*prefix, *key.split("."))
        if isinstance(value, dict) and value:
            out += _leaves(value, path, where)
        else:
            out.append((path, value))
    return out


def _merge(base: Any, over: Any) -> Any:
    """``over`` on top of ``base``: mappings merged key by key, anything else replaced."""
    if not isinstance(base, dict) or not isinstance(over, dict):
        return over
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(base.get(key), value) if isinstance(value, dict) and isinstance(base.get(key), dict) \
            else value
    return out


def recorded(stages: list[Stage]) -> str:
    """``RUN/stages.yaml``: a multi-stage config of the resolved stages (each stage's whole config, the
    previous stage's model left out, as the loop sets it), which `build` reads back to the same stages."""
    items = []
    for i, stage in enumerate(stages):
        config = stage.config.to_dict()
        del config["device"]  # the run's, given once
        config.pop("plugins", None)  # the run's too (the top level's apply to every stage)
        if i > 0:
            del config["ga"]["init_model"]
        items.append({"name": stage.name, **({"rescore": stage.rescore} if stage.rescore else {}),
                      **({"ship": stage.ship} if stage.ship != "best" else {}), **config})
    run = {"device": stages[0].config.device, **({"plugins": stages[0].config.plugins} if stages[0].config.plugins
                                                   else {})}
    return RECORD_HEAD + yaml.safe_dump({**run, "stages": items}, sort_keys=False)


def load_run(run_dir: str | Path) -> list[Stage]:
    """The stages recorded in a multi-stage run folder, refused (one line naming the stage and the key) where
    ``stages.yaml`` was edited since the run started (`STARTED_FILE`) in anything but `FREE_STAGE_KEYS`."""
    path = Path(run_dir) / STAGES_FILE
    try:
        plan = build(read_yaml(path), run_dir)
    except ConfigError as e:
        raise ModelFileError(f"{path}: {e}") from None
    started = Path(run_dir) / STARTED_FILE
    if started.exists() or started.is_symlink():  # runs started before it was written have none
        try:
            first = build(read_yaml(started), run_dir)
        except ConfigError as e:
            raise ModelFileError(f"{started}: {e}; it is stages.yaml as the run started: restore it") from None
        check_unchanged(first, plan, path)
    return plan


def check_unchanged(first: list[Stage], plan: list[Stage], path: Path) -> None:
    """``plan`` (stages.yaml now) must be ``first`` (as the run started) but for `FREE_STAGE_KEYS`: a stage
    renamed, dropped, added, moved or changed would compute another run (or orphan a stage's progress)."""
    from .trainer import config_differences

    tail = "; a multi-stage run keeps the stages it started with (only logging, runtime and device may change): " \
           "undo the edit, or start a new run with the edited config"
    for i in range(max(len(first), len(plan))):
        if i >= len(plan):
            raise ModelFileError(f"{path}: {first[i].where} is gone (dropped since the run started; its progress is "
                                 f"in {first[i].name}/){tail}")
        if i >= len(first):
            raise ModelFileError(f"{path}: {plan[i].where} was added since the run started{tail}")
        a, b = first[i], plan[i]
        if a.name != b.name:
            raise ModelFileError(f"{path}: stages[{i}] is named {b.name!r} but was {a.name!r} when the run "
                                 f"started (renamed or moved; its progress is in {a.name}/){tail}")
        for key in ("rescore", "ship"):
            if getattr(a, key) != getattr(b, key):
                raise ModelFileError(f"{path}: {b.where}.{key} is {_show(getattr(b, key))} but was "
                                     f"{_show(getattr(a, key))} when the run started{tail}")
        diffs = config_differences(a.config.to_dict(), b.config.to_dict(), free=FREE_STAGE_KEYS)
        if diffs:
            key, old, new = diffs[0]
            raise ModelFileError(f"{path}: {b.where}: {key} is {_show(new)} but was {_show(old)} when the run "
                                 f"started{tail}")


def stage_run_of(folder: str | Path) -> Path | None:
    """The multi-stage run whose stage folder ``folder`` is (its parent holds the ``stages.yaml`` a run wrote,
    naming it), or None."""
    folder = Path(folder).absolute()
    record = folder.parent / STAGES_FILE
    try:
        if not record.is_file() or record.stat().st_size > 2**24:
            return None
        text = record.read_text(errors="replace")
        if not ((folder.parent / STARTED_FILE).exists() or text.startswith(RECORD_HEAD)):
            return None  # a config file named stages.yaml beside a run folder
        data = read_yaml(record)
    except (OSError, ConfigError):  # a name too long, an unreadable file: no stage run to protect
        return None
    items = data.get("stages") if isinstance(data, dict) else None
    named = isinstance(items, list) and any(isinstance(i, dict) and i.get("name") == folder.name for i in items)
    return folder.parent if named else None


def refuse_stage_folder(folder: str | Path, what: str) -> None:
    """A `ConfigError` for ``what`` (``--resume``, ``--rescore``) on the folder of one stage of a multi-stage run:
    a stage resumed or rescored alone changes what the run ships (the next stage's warm start, RUN/model.yaml)."""
    run = stage_run_of(folder)
    if run is not None:
        shown = _clip(str(folder))
        raise ConfigError(f"{shown}: a stage of the multi-stage run {_clip(str(run))}: {what} of one stage would "
                          f"change what the run ships (the next stage's warm start, model.yaml); resume the whole "
                          f"run with --resume {_clip(str(run))}, or copy the stage's folder elsewhere first")


def ship(stage: Stage, run_dir: Path, state: RunState, progress: ProgressFn | None = None) -> Path:
    """Write the model ``stage`` ships, given its completed run state: ``best_model.yaml`` is the Trainer's;
    with ``rescore: K`` the best of the last generation's K elites on held-out lifetimes, as
    ``rescored_model.yaml`` (computed again if a stop left it unwritten: the same numbers)."""
    out = stage.shipped(run_dir)
    if stage.rescore and not out.exists():
        layout = layout_of(state.config)
        candidates, _ = state.searcher.candidates(stage.rescore)
        scores, best = rescore_best(candidates, layout, state.config, episodes=RESCORE_EPISODES, seed=0,
                                    progress=progress)
        io.save_model(out, candidates[best], layout, state.config, fitness=float(scores[best]),
                      generation=state.generation - 1, seed=state.seed)
    return out


def write_final(stages: list[Stage], run_dir: Path) -> Path:
    """``RUN/model.yaml``: a copy of the model the last stage shipped, read and checked first
    (`metarl.runs.io.load_model`: a missing, damaged or foreign file is one line, and nothing is copied)."""
    source = stages[-1].shipped(run_dir)
    check_shipped(stages[-1], run_dir)
    out = run_dir / MODEL_FILE
    io.atomic_write_text(out, source.read_text())
    return out


def check_shipped(stage: Stage, run_dir: Path) -> io.SavedModel:
    """The model ``stage`` shipped, loaded and checked: a saved model of the stage's rule sizes."""
    path = stage.shipped(run_dir)
    try:
        model = io.load_model(path)
    except ModelFileError as e:
        raise ModelFileError(f"{stage.where} shipped {e}; resume the run again to make it anew (delete the stage's "
                             f"checkpoint.pt to train the stage again)") from None
    layout = layout_of(stage.config)
    if (model.layout.size, model.layout.rule.signature()) != (layout.size, layout.rule.signature()):
        raise ModelFileError(f"{stage.where} shipped {path}: its rule ({model.layout.size} genes) is not the stage's "
                             f"({layout.size} genes)")
    return model

