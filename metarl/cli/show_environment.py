"""Animate an environment (batch element 0) at real time in a pygame window (``show_environment.py``,
``metarl-show-env``); its command line is `metarl.cli.parsers.show_environment`.
"""

from __future__ import annotations

import argparse
import sys

import torch

from metarl import config as cfg_mod
from metarl import envs, plugins
from metarl.analysis.render import Renderer, check_animation_path, play, save_animation
from metarl.cli import parsers
from metarl.cli.main import run_main
from metarl.config.schema import MAX_SEED, _show
from metarl.errors import UserError
from metarl.runs import io

MAX_SECONDS = 10**6  # simulated seconds (11 days at real time)
MAX_STEPS = 10**7


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = parsers.show_environment()
    args = p.parse_args(argv)
    if not args.seconds > 0:
        p.error(f"--seconds must be > 0, got {args.seconds}")
    if not args.seconds <= MAX_SECONDS:
        p.error(f"--seconds must be at most {MAX_SECONDS:g}, got {args.seconds}")
    if not 0 <= args.seed <= MAX_SEED:
        p.error(f"--seed must be an integer in [0, 2^63-1], got {_show(args.seed)}")
    if not -1 <= args.torque <= 1:
        p.error(f"--torque must be in [-1, 1], got {args.torque}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plugins.given(args.plugin)  # before NAME is checked: a plugin registers its environment
    # Only the env section applies here, so `init=down` is read as `env.init=down`.
    overrides = [item if item.startswith("env.") else f"env.{item}" for item in args.set]
    cfg = cfg_mod.from_dict(cfg_mod.apply_overrides({"env": {"name": args.name}}, overrides))
    generator = torch.Generator().manual_seed(args.seed)
    env = envs.make(cfg.env.name, 1, dtype=torch.float64, generator=generator, **cfg.env.make_kwargs())
    steps = max(1, round(args.seconds / cfg.env.mean_dt))
    if steps > MAX_STEPS:
        raise UserError(f"--seconds {args.seconds:g} at env.dt {cfg.env.mean_dt:g} is {steps} steps, more than "
                        f"{MAX_STEPS:.0e}; show fewer seconds")

    if args.random:
        def policy(step: int) -> float:
            return float(torch.rand((), generator=generator, dtype=torch.float64)) * 2 - 1
    else:
        def policy(step: int) -> float:
            return args.torque

    save = check_animation_path(args.save) if args.save is not None else None
    if save is not None:
        io.check_output_file(save, "--save")
    # A PNG keeps only the last frame, so only a GIF needs every frame held in memory.
    record = save is not None and save.suffix.lower() == ".gif"
    renderer = Renderer(headless=save is not None, title=f"metarl: {cfg.env.name}")
    if save is None:
        print(f"showing {cfg.env.name} for {steps * cfg.env.mean_dt:g} s; close the window or press Esc to stop",
              flush=True)
    try:
        frames = play(env, steps, policy, renderer, record=record, label=cfg.env.name)
        last = renderer.frame()
    finally:
        renderer.close()
    if save is not None:
        save_animation(frames if record else [last], save, fps=1.0 / cfg.env.mean_dt)
        what = f"{len(frames)} frames at {1 / cfg.env.mean_dt:g} fps" if record else "last frame"
        print(f"wrote {save} ({what}, {steps * cfg.env.mean_dt:g} s of {cfg.env.name})")
    return 0


def entry() -> None:
    """Console entry point."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    entry()
