"""Evolve a learning rule with the genetic algorithm described by a YAML config.

    python3 run_config.py configs/base.yaml
    python3 run_config.py --resume results/<run>         # continue a stopped run
    torchrun --nproc_per_node=2 run_config.py CONFIG     # shard the population over processes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from metarl import config as cfg_mod
from metarl import distributed, lifetime, training
from metarl.cli import INTERRUPTED, run_main
from metarl.errors import UserError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="YAML config (nested, or the original project's flat format)")
    p.add_argument("--out", help="run folder (default results/<timestamp>_<config name>/)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR to its configured generations")
    p.add_argument("--generations", type=int, metavar="N", help="total number of generations")
    p.add_argument("--seed", type=int, help="random seed (overrides the config)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (overrides the config)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (parsed as YAML); repeatable")
    args = p.parse_args(argv)
    if args.resume is None and args.config is None:
        p.error("a CONFIG file is required (or --resume DIR)")
    if args.resume is not None and (args.config or args.set or args.seed is not None or args.out):
        p.error("--resume DIR takes the config from DIR; only --generations and --device may be given with it")
    if args.generations is not None and args.generations < 1:
        p.error(f"--generations must be >= 1, got {args.generations}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = list(args.set)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.device is not None:
        overrides.append(f"device={args.device}")
    if args.generations is not None:
        overrides.append(f"ga.generations={args.generations}")

    if args.resume:
        run_dir = Path(args.resume)
        state = training.load_run(run_dir, generations=args.generations, device=args.device)
    else:
        config = cfg_mod.load(args.config, overrides)
        state = training.new_run(config)
        run_dir = Path(args.out) if args.out else training.default_run_dir(args.config)
        if (run_dir / training.CHECKPOINT).exists():
            raise UserError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")

    ctx = distributed.setup(state.config)
    try:
        return train(state, run_dir, ctx)
    finally:
        ctx.close()


def train(state: training.RunState, run_dir: Path, ctx: distributed.Context) -> int:
    cfg = state.config
    if cfg.runtime.threads is not None:
        import torch

        torch.set_num_threads(cfg.runtime.threads)
    step = lifetime.step_path(cfg, ctx.device)  # fails here, before writing, if runtime.native: true cannot run
    trainer = training.Trainer(state, run_dir, evaluator=ctx.evaluator(cfg), writer=ctx.is_writer,
                               device=ctx.device)
    total = cfg.ga.generations
    say = print if ctx.is_writer else (lambda *a, **k: None)
    if state.generation >= total:
        say(f"{run_dir}: already at generation {state.generation} of {total}; nothing to do "
            f"(raise it with --generations N)")
        return 0
    say(f"run folder: {run_dir}  seed: {state.seed}  device: {ctx.device}  "
        f"population: {cfg.ga.population_size}  processes: {ctx.world_size}  step: {step}")
    steps_per_gen = cfg.ga.population_size * cfg.ga.lifetime_steps * cfg.ga.evals_per_individual
    bar = tqdm(total=total, initial=state.generation, desc="generations", unit="gen",
               disable=not ctx.is_writer, dynamic_ncols=True)
    try:
        while state.generation < total:
            inner = None
            if ctx.is_writer and steps_per_gen >= training.INNER_PROGRESS_MIN:
                inner = tqdm(total=steps_per_gen // ctx.world_size, desc=f"gen {state.generation}",
                             unit="ind-step", unit_scale=True, leave=False, dynamic_ncols=True)
            try:
                row = trainer.run_generation(progress=inner.update if inner else None)
            finally:
                if inner is not None:
                    inner.close()
            bar.update(1)
            if ctx.is_writer:
                tqdm.write(f"gen {int(row['generation']):5d}  best {row['best']:9.3f}  mean {row['mean']:9.3f}  "
                           f"median {row['median']:9.3f}  best ever {row['best_ever']:9.3f}  "
                           f"{row['individual_steps_per_s']:.3g} ind-steps/s")
    except KeyboardInterrupt:
        bar.close()
        if ctx.is_writer:
            print(f"\ninterrupted; the run folder holds {state.generation} complete generations. Resume with:\n"
                  f"  python3 run_config.py --resume {run_dir}", file=sys.stderr)
        return INTERRUPTED
    except BaseException:
        bar.close()  # the error message must start on its own line, not after the bar
        raise
    bar.close()
    say(f"done: {total} generations in {run_dir} (best model: {run_dir / 'best_model.yaml'})")
    return 0


def entry() -> None:
    """Console entry point."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    entry()
