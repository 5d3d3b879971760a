"""Evolve a learning rule with the genetic algorithm described by a YAML config (``run_config.py``,
``metarl-train``); its command line is `metarl.cli.parsers.train`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from metarl import backends, plugins, resources
from metarl import config as cfg_mod
from metarl.analysis import evaluation
from metarl.backends import use_threads
from metarl.cli import parsers
from metarl.cli.main import ERROR, exit_code, run_main
from metarl.errors import ConfigError, ModelFileError, NonFiniteError, UserError
from metarl.evolve import distributed, stages
from metarl.evolve import trainer as training
from metarl.evolve.problem import as_problem
from metarl.runs import io, logs
from metarl.runs.signals import Stopped
from metarl.shipped import command
from metarl.shipped import config as shipped_config
from metarl.shipped import configs as shipped_configs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = parsers.train()
    args = p.parse_args(argv)
    if args.resume is None and args.config is None:
        p.error("a CONFIG file is required (or --resume DIR)")
    if args.resume is not None and (args.config or args.set or args.seed is not None or args.out):
        p.error("--resume DIR takes the config from DIR; only --generations, --device, --allow-large, --plugin and "
                "the logging options may be given with it")
    if args.generations is not None and args.generations < 1:
        p.error(f"--generations must be >= 1, got {args.generations}")
    if args.log_every is not None and args.log_every < 1:
        p.error(f"--log-every must be >= 1, got {args.log_every}")
    return args


def config_path(name: str) -> str:
    """``name`` if it exists, else the shipped config it names (``base`` -> configs/base.yaml, also outside the
    repository), else a one-line error that lists the shipped names."""
    from metarl.config.schema import _clip
    from metarl.shipped import exists

    found = shipped_config(name)
    if exists(found):
        return found
    by_folder: dict[str, list[str]] = {}
    for stem, path in shipped_configs().items():
        folder = path.parent.name if path.parent.parent.name != "experiments" else f"experiments/{path.parent.name}"
        by_folder.setdefault(folder, []).append(stem)
    # configs/ first; at most four names a folder, and folders while the line stays short (~160 characters of
    # names): the folders say where to look for the rest.
    parts: list[str] = []
    left = 0
    for folder, stems in sorted(by_folder.items(), key=lambda item: (item[0] != "configs", item[0])):
        more = f" +{len(stems) - 4} more" if len(stems) > 4 else ""
        part = f"{folder}: {', '.join(sorted(stems)[:4])}{more}"
        if parts and sum(len(p) + 2 for p in parts) + len(part) > 160:
            left += 1
            continue
        parts.append(part)
    tail = f"; +{left} more folders in experiments/" if left else ""
    raise UserError(f"{_clip(name)}: no such file, nor a shipped config (shipped, by folder: {'; '.join(parts)}{tail})")


# Measured rates of one thread (docs/performance.md): the native kernel and the torch step.
NATIVE_STEPS_PER_S, TORCH_STEPS_PER_S = 1.4e6, 8e4


def default_size_note(config_file: str, overrides: list[str], cfg: cfg_mod.Config, step: str,
                      threads: int) -> str | None:
    """A config that sets no population size runs SPEC's defaults (10,000 x 2,000 steps, a GPU-sized job): on
    a CPU, say what is about to run and about how long a generation takes, before it starts."""
    if any(o.split("=", 1)[0].strip() in ("ga.population_size", "population_size") for o in overrides):
        return None
    raw = cfg_mod.read_yaml(config_file)
    if not isinstance(raw, dict) or "population_size" in raw or "population_size" in (raw.get("ga") or {}):
        return None
    ga = cfg.ga
    steps = ga.population_size * ga.evals_per_individual * ga.lifetime_steps
    rate = (NATIVE_STEPS_PER_S if step == "native" else TORCH_STEPS_PER_S) * max(threads, 1)
    return (f"note: {config_file} sets no ga.population_size: running the defaults, {ga.population_size} individuals "
            f"x {ga.evals_per_individual} lifetime(s) of {ga.lifetime_steps} steps per generation, {ga.generations} "
            f"generations; on this CPU about {steps / rate:.0f} s per generation ({step} step, {max(threads, 1)} "
            f"thread(s)). A run that learns within minutes: {command('python3 run_config.py')} base")


def logging_overrides(args: argparse.Namespace) -> list[str]:
    """``--log-every`` and ``--tensorboard`` as config overrides."""
    overrides = []
    if args.log_every is not None:
        overrides.append(f"logging.every={args.log_every}")
    if args.tensorboard:
        overrides.append("logging.tensorboard=true")
    return overrides


def with_logging(config: cfg_mod.Config, args: argparse.Namespace) -> cfg_mod.Config:
    """``config`` with ``--log-every`` and ``--tensorboard`` applied (what a resume may change)."""
    extra = logging_overrides(args)
    return cfg_mod.from_dict(cfg_mod.apply_overrides(config.to_dict(), extra)) if extra else config


def with_plugins(config: cfg_mod.Config, given: list[str]) -> cfg_mod.Config:
    """``config`` with the ``--plugin`` plugins (already imported) after its own: what the run folder records."""
    every = plugins.merged(config.plugins, given)
    return config if every == config.plugins else config.replace(plugins=every)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Before any config is read: they register the rules and environments the config names.
    args.plugin = plugins.given(args.plugin)
    overrides = list(args.set)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.device is not None:
        overrides.append(f"device={args.device}")
    if args.generations is not None:
        overrides.append(f"ga.generations={args.generations}")

    lock = None
    try:
        config_file = None
        if args.resume:
            stages.refuse_stage_folder(args.resume, "--resume")
        if args.resume and stages.is_stage_run(args.resume):
            return resume_stages(Path(args.resume), args)
        if args.resume:
            run_dir = Path(args.resume)
            if writes_files():
                # Before reading: a live run writing this folder is reported, not read half-way.
                lock = training.claim_run_dir(run_dir, new=False) if run_dir.is_dir() else None
            state = training.load_run(run_dir, generations=args.generations, device=args.device)
            resources.check(state.config, resources.device_of(state.config), allow_large=args.allow_large)
            state.config = with_plugins(with_logging(state.config, args), args.plugin)
        else:
            config_file = config_path(args.config)
            if stages.is_multi_stage(cfg_mod.read_yaml(config_file)):
                return new_stages(config_file, args, overrides + logging_overrides(args))
            config = with_plugins(cfg_mod.load(config_file, overrides + logging_overrides(args)), args.plugin)
            # Before the population is drawn: a run that cannot fit stops here, with nothing written.
            resources.check(config, resources.device_of(config), allow_large=args.allow_large)
            run_dir = Path(args.out) if args.out else training.default_run_dir(args.config)
            training.check_new_run_dir(run_dir)  # a folder with files of its own is never written into
            state = training.new_run(config)
            if writes_files():
                # Checked again under the lock: of two runs started at once into one folder, one is refused.
                lock = training.claim_run_dir(run_dir, new=True)

        if state.config.logging.tensorboard:
            logs.tensorboard_writer()  # a missing tensorboard is reported before anything else happens
        ctx = distributed.setup(state.config)
        try:
            note = None
            if config_file is not None and ctx.device.type == "cpu":
                import torch

                threads = state.config.runtime.threads or torch.get_num_threads()
                note = default_size_note(config_file, overrides, state.config,
                                         backends.select_backend(state.config, ctx.device).name, threads)
            return train(state, run_dir, ctx, quiet=args.quiet, note=note)
        finally:
            ctx.close()
    finally:
        if lock is not None:
            lock.release()


def writes_files() -> bool:
    """Whether this process writes the run folder: a single process, or rank 0 under torchrun."""
    return not distributed.launched() or os.environ.get("RANK") == "0"


def train(state: training.RunState, run_dir: Path, ctx: distributed.Context, *, quiet: bool = False,
          note: str | None = None, resume_dir: Path | None = None) -> int:
    """Run ``state`` to its configured generations in ``run_dir``; the exit code. A stop prints the command
    that resumes ``resume_dir`` (the run folder; for a stage of a multi-stage run, the whole run's)."""
    cfg = state.config
    use_threads(cfg.runtime.threads)  # under torchrun, distributed.setup chose a default per process already
    # Fails here, before writing, if runtime.native: true cannot run (or the backend disagrees with the spec).
    step = backends.select_backend(cfg, ctx.device).name
    total = cfg.ga.generations
    say = print if ctx.is_writer else (lambda *a, **k: None)
    # The Trainer repairs what a kill left behind (a log one generation behind the checkpoint) even when
    # there is nothing left to run.
    trainer = training.Trainer(state, run_dir, problem=as_problem(ctx.evaluator(cfg)), writer=ctx.is_writer,
                               device=ctx.device)
    if state.generation >= total:
        say(f"{run_dir}: already at generation {state.generation} of {total}; nothing to do "
            f"(raise it with --generations N)")
        return 0
    if note is not None and ctx.is_writer:
        print(note, file=sys.stderr, flush=True)
    say(f"run folder: {run_dir}  seed: {state.seed}  device: {ctx.device}  "
        f"population: {cfg.ga.population_size}  search: {cfg.search.name}  processes: {ctx.world_size}  "
        f"step: {step}" + (f"  plugins: {', '.join(cfg.plugins)}" if cfg.plugins else ""), flush=True)
    steps_per_gen = cfg.ga.population_size * cfg.ga.lifetime_steps * cfg.ga.evals_per_individual
    trainer.hooks.append(logs.Progress(total=total, initial=state.generation, every=cfg.logging.every, quiet=quiet,
                                       steps_per_generation=steps_per_gen // ctx.world_size, enabled=ctx.is_writer))
    if cfg.logging.tensorboard and ctx.is_writer:
        trainer.hooks.append(logs.TensorBoardLog(run_dir / "tensorboard", histogram_every=cfg.logging.histogram_every))
    try:
        trainer.run(total)  # closes the hooks (the bars first) however it ends
    except KeyboardInterrupt as e:
        if ctx.is_writer:
            how = f"stopped by {e}" if isinstance(e, Stopped) else "interrupted"
            print(f"\n{how}; the run folder holds {state.generation} complete generations. Resume with:\n"
                  f"  {command('python3 run_config.py')} --resume {resume_dir or run_dir}", file=sys.stderr)
        return exit_code(e)
    except NonFiniteError:
        if not ctx.is_writer:
            return ERROR  # every process sees the same fitness; rank 0 reports it
        raise
    say(f"done: {total} generations in {run_dir} (best model: {run_dir / 'best_model.yaml'})")
    return 0


# ---------------------------------------------------------------------------- multi-stage configs

def new_stages(config_file: str, args: argparse.Namespace, overrides: list[str]) -> int:
    """A new run of a multi-stage config (`metarl.evolve.stages`): checked whole (every stage's config and memory)
    before ``RUN/stages.yaml`` is written."""
    refuse_torchrun()
    run_dir = Path(args.out) if args.out else training.default_run_dir(args.config)
    plan = [dataclasses.replace(stage, config=with_plugins(stage.config, args.plugin))
            for stage in stages.load(config_file, run_dir, overrides)]
    for stage in plan:
        try:
            resources.check(stage.config, resources.device_of(stage.config), allow_large=args.allow_large)
        except UserError as e:
            raise type(e)(f"{stage.where}: {e}") from None
    if plan[0].config.ga.init_model is not None:
        try:
            training.new_run(plan[0].config)  # a missing or mismatched warm start is reported before any write
        except ConfigError as e:
            raise ConfigError(f"{plan[0].where}: {e}") from None
    training.check_new_run_dir(run_dir)
    with training.claim_run_dir(run_dir, new=True):
        text = stages.recorded(plan)
        try:
            for name in (stages.STARTED_FILE, stages.STAGES_FILE):  # stages.yaml last: it makes a stage run
                with training.writing(run_dir / name, "run the command again"):
                    io.atomic_write_text(run_dir / name, text)
        except UserError:
            (run_dir / stages.STARTED_FILE).unlink(missing_ok=True)  # the folder as it was: empty
            raise
        return run_stages(plan, run_dir, args)


def resume_stages(run_dir: Path, args: argparse.Namespace) -> int:
    """``--resume RUN`` of a multi-stage run: the stages recorded in ``RUN/stages.yaml``, each resumed
    where it stopped (complete stages are only checked)."""
    refuse_torchrun()
    if args.generations is not None:
        raise UserError(f"--generations: {run_dir} is a multi-stage run, whose stages' lengths are part of its "
                        f"config ({run_dir / stages.STAGES_FILE}); it cannot be changed on resume")
    with training.claim_run_dir(run_dir, new=False):
        plan = [dataclasses.replace(stage, config=with_plugins(stage.config, args.plugin))
                for stage in stages.load_run(run_dir)]
        return run_stages(plan, run_dir, args, resumed=True)


def run_stages(plan: list[stages.Stage], run_dir: Path, args: argparse.Namespace, *, resumed: bool = False) -> int:
    """Run (or resume) every stage in turn into ``RUN/<name>/``, each warm-started from the model the stage
    before it shipped; then ``RUN/model.yaml``."""
    refuse_torchrun()
    ctx = distributed.setup(plan[0].config)
    try:
        for i, stage in enumerate(plan):
            stage_dir = stage.folder(run_dir)
            with training.claim_run_dir(stage_dir, new=False):
                if (stage_dir / training.CHECKPOINT).exists():
                    state = training.load_run(stage_dir, device=args.device)
                    check_stage_config(stage, state.config, run_dir)
                    state.config = with_logging(state.config, args)
                else:  # not started, or stopped before its first checkpoint: generation 0 from the plan
                    config = stage.config if args.device is None else stage.config.replace(device=args.device)
                    if resumed:
                        config = with_logging(config, args)
                    try:
                        state = training.new_run(config)  # reads ga.init_model
                    except ConfigError as e:
                        raise ConfigError(f"{stage.where}: {e}") from None
                total = state.config.ga.generations
                print(f"stage {i + 1} of {len(plan)}: {stage.name} ({stage_dir}), generation {state.generation} "
                      f"of {total}", flush=True)
                if state.generation >= total:
                    use_threads(state.config.runtime.threads)
                    training.Trainer(state, stage_dir, problem=as_problem(ctx.evaluator(state.config)),
                                     device=ctx.device)
                else:
                    code = train(state, stage_dir, ctx, quiet=args.quiet, resume_dir=run_dir)
                    if code:
                        return code
                with training.writing(stage.shipped(run_dir), f"resume with --resume {run_dir}"):
                    shipped = stages.ship(stage, run_dir, state)  # written atomically; a stop before: done on resume
                if stage.rescore:
                    print(f"stage {stage.name}: shipped {shipped} (the best of generation {state.generation - 1}'s "
                          f"{stage.rescore} elites on {evaluation.RESCORE_EPISODES} held-out lifetimes: "
                          f"{stages.check_shipped(stage, run_dir).fitness:.3f})", flush=True)
                elif stage.ship == "snapshot":
                    print(f"stage {stage.name}: shipped {shipped} (generation {state.generation - 1}'s snapshot)",
                          flush=True)
        with training.writing(run_dir / stages.MODEL_FILE, f"resume with --resume {run_dir}"):
            final = stages.write_final(plan, run_dir)
    finally:
        ctx.close()
    print(f"done: {len(plan)} stages in {run_dir} (model: {final})")
    return 0


def refuse_torchrun() -> None:
    """A multi-stage run under torchrun: refused before anything is read or written."""
    if distributed.launched():
        raise UserError("a multi-stage config runs in one process (torchrun is not supported for it yet); run "
                        "each stage's config under torchrun instead")


def check_stage_config(stage: stages.Stage, recorded: cfg_mod.Config, run_dir: Path) -> None:
    """A started stage's ``config.yaml`` must be the stage of ``RUN/stages.yaml`` (up to the keys a resume may
    change, and the warm start's path, which depends on where the run folder is)."""
    plan, have = stage.config.to_dict(), recorded.to_dict()
    plan["ga"]["init_model"] = have["ga"]["init_model"] = None
    diffs = training.config_differences(plan, have)
    if diffs:
        key, a, b = diffs[0]
        raise ModelFileError(f"{run_dir / stages.STAGES_FILE}: {stage.where}: {key} is {a!r} there but {b!r} in "
                             f"{stage.folder(run_dir) / 'config.yaml'}; a resumed run keeps the config it was started "
                             f"with")


def entry() -> None:
    """Console entry point."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    entry()
