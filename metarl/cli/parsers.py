"""The three commands' argument parsers, kept free of heavy imports (torch, numpy, matplotlib): ``--help``
prints at once (`metarl.cli.startup.run` answers it from here before the command's module loads), and the
commands parse their arguments with the same parsers, then check what the parser cannot.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from metarl.analysis.defaults import RESCORE_EPISODES, RULE_REWARDS
from metarl.cli.args import ArgumentParser, described

TRAIN = """Evolve a learning rule with the genetic algorithm described by a YAML config.

    python3 run_config.py base                           # a shipped config by name (configs/base.yaml)
    python3 run_config.py configs/base.yaml --quiet --log-every 10 --tensorboard
    python3 run_config.py --resume results/<run>         # continue a stopped run
    python3 run_config.py pendulum_balance --out results/balance   # a multi-stage config (stages:): one run folder
    python3 run_config.py tiny --plugin examples/custom_rule.py --set rule.declaration=clocked   # your own rule
    torchrun --nproc_per_node=2 run_config.py CONFIG     # shard the population over processes
"""

SHOW_ENVIRONMENT = """Animate an environment (batch element 0) at real time in a pygame window.

    python3 show_environment.py Pendulum
    python3 show_environment.py DoublePendulum --torque 0.5 --set env.init=down
    python3 show_environment.py Pendulum --random --seed 3 --set env.params.length=1.5
    python3 show_environment.py DoublePendulum --seconds 5 --save double.gif   # headless, no window
    python3 show_environment.py CartPole --plugin examples/custom_env.py --set init=down   # your own environment

Close the window or press Esc / q to stop.
"""

SHOW_RESULTS = """Replay, plot and evaluate a learned rule; plot the fitness curves of a run.

    python3 show_results.py pendulum_swingup            # a shipped model by name: a fresh actor learns live (window)
    python3 show_results.py MODEL.yaml --save replay.gif --plot summary.png    # headless export
    python3 show_results.py MODEL.yaml --evaluate --episodes 256 --json eval.json
    python3 show_results.py RUN_DIR --rescore 20       # pick the best of the last elites on held-out lifetimes
    python3 show_results.py RUN_DIR --rescore 10 --snapshots   # or the best of the last 10 snapshots
    python3 show_results.py MODEL.yaml --evaluate --hidden 16,16 --set env.params.length=1.5
    python3 show_results.py MODEL.yaml --robustness --episodes 64 --json rob.json --plot rob.png   # off its training
    python3 show_results.py results/<run> --plot curve.png       # fitness curves (window without --plot)
    python3 show_results.py results/run_a results/run_b --plot runs.png   # several runs or seeds in one figure
    python3 show_results.py pendulum_balance --gymnasium Pendulum-v1 --episodes-per-lifetime 10 --lifetimes 64

Replays draw a random seed unless --seed is given (it is printed, to reproduce the replay);
--evaluate uses --seed 0 by default so that its table is reproducible as is. Replay and
evaluation episodes come from key namespaces that training never uses.
"""

SHIPPED_ENVS = ("Pendulum", "DoublePendulum")  # what metarl.envs registers (tests/test_cli_help.py checks)
DEFAULT_EVAL_EPISODES = 256
DEFAULT_ROBUSTNESS_EPISODES = 64  # per point of the grid (about 25 points)
DEFAULT_RESCORE_EPISODES = RESCORE_EPISODES
DEFAULT_PLOT_EPISODES = 64
DEFAULT_GYM_EPISODES = 10  # --gymnasium: episodes per lifetime
DEFAULT_GYM_LIFETIMES = 64


def _parser(doc: str, script: str) -> ArgumentParser:
    return ArgumentParser(description=described(doc, script), formatter_class=argparse.RawDescriptionHelpFormatter)


PLUGIN_HELP = ("a .py file (relative: to the current directory) or a module name to import first: it registers rules "
               "and environments (metarl.core.rule.register_rule, metarl.envs.register); repeatable")


def add_plugin(p: argparse.ArgumentParser, help: str = PLUGIN_HELP) -> None:
    """``--plugin PATH_OR_MODULE`` (repeatable), as every script takes it (`metarl.plugins`)."""
    p.add_argument("--plugin", action="append", default=[], metavar="PATH_OR_MODULE", help=help)


def train() -> ArgumentParser:
    """``run_config.py`` / ``metarl-train``."""
    p = _parser(TRAIN, "run_config.py")
    p.add_argument("config", nargs="?", help="YAML config (nested, or the original project's flat format), or the name "
                                           "of a shipped one (base, quick, pendulum_swingup, ...)")
    p.add_argument("--out", help="run folder (default results/<timestamp>_<config name>/)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR to its configured generations")
    p.add_argument("--generations", type=int, metavar="N", help="total number of generations")
    p.add_argument("--seed", type=int, help="random seed (overrides the config)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (overrides the config)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (parsed as YAML); repeatable")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-generation lines")
    p.add_argument("--log-every", type=int, metavar="N", help="report every N-th generation (logging.every)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log to TensorBoard in RUN/tensorboard/ (logging.tensorboard; needs tensorboard)")
    p.add_argument("--allow-large", action="store_true",
                   help="run even if the memory estimate exceeds the memory available (a deliberate huge run)")
    add_plugin(p, PLUGIN_HELP + "; recorded in the run folder's config (plugins:), so --resume and show_results.py "
                                "find it again")
    return p


def show_environment() -> ArgumentParser:
    """``show_environment.py`` / ``metarl-show-env``."""
    p = _parser(SHOW_ENVIRONMENT, "show_environment.py")
    p.add_argument("name", metavar="NAME", help=f"environment: {' | '.join(SHIPPED_ENVS)}")
    p.add_argument("--seconds", type=float, default=10.0, metavar="S", help="simulated time (default 10)")
    actions = p.add_mutually_exclusive_group()
    actions.add_argument("--torque", type=float, default=0.0, metavar="T",
                         help="constant action in [-1, 1], times env.max_torque (default 0)")
    actions.add_argument("--random", action="store_true", help="uniform random actions in [-1, 1] (see --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed of random actions and parameter ranges (default 0)")
    p.add_argument("--set", action="append", default=[], metavar="env.KEY=VALUE",
                   help="override an env option or parameter (parsed as YAML), e.g. env.init=down, "
                        "env.params.length=1.5; repeatable")
    p.add_argument("--save", metavar="FILE", help="render headless to an animated .gif (or last frame .png)")
    add_plugin(p, PLUGIN_HELP.replace("rules and environments", "environments (NAME)"))
    return p


def show_results() -> ArgumentParser:
    """``show_results.py`` / ``metarl-show-results``."""
    p = _parser(SHOW_RESULTS, "show_results.py")
    p.add_argument("path", help="a saved model (MODEL.yaml, ours or the original project's; or a shipped model's name, "
                                "e.g. pendulum_balance) or a run folder")
    p.add_argument("more_runs", nargs="*", metavar="RUN_DIR",
                   help="more run folders: their curves in one figure (runs that differ only in seed: mean and range)")
    p.add_argument("--steps", type=int, metavar="N", help="lifetime length (default: the model's ga.lifetime_steps)")
    p.add_argument("--seed", type=int, metavar="S", help="seed of the actors and environments drawn")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a value of the model's config (parsed as YAML); repeatable")
    p.add_argument("--hidden", metavar="N,N", help="run the rule on an actor with these hidden layer sizes")
    p.add_argument("--save", metavar="OUT.gif", help="write the replay as an animated GIF (or .png: last frame)")
    p.add_argument("--plot", metavar="OUT.png", help="write a figure: lifetime summary of a model, "
                                                     "fitness curves of a run folder, or with --evaluate "
                                                     "the height over the lifetime per condition")
    p.add_argument("--evaluate", action="store_true", help="measure the rule against baselines")
    p.add_argument("--robustness", action="store_true",
                   help="the rule against the reference controller with length, mass, damping, sensor noise, time "
                        "step and torque varied one at a time (metarl.analysis.robustness); --plot writes a heat map")
    p.add_argument("--episodes", type=int, metavar="N",
                   help=f"lifetimes for --evaluate (default {DEFAULT_EVAL_EPISODES}), --robustness (per point, "
                        f"default {DEFAULT_ROBUSTNESS_EPISODES}) or --plot (default {DEFAULT_PLOT_EPISODES})")
    p.add_argument("--json", metavar="OUT.json",
                   help="with --evaluate, --robustness or --gymnasium: also write the results as JSON")
    p.add_argument("--rescore", type=int, metavar="K",
                   help="run folder: score the K best of its last generation again on --episodes held-out "
                        f"lifetimes (default {DEFAULT_RESCORE_EPISODES}) and save the best as RUN/rescored_model.yaml")
    p.add_argument("--snapshots", action="store_true",
                   help="with --rescore K: score the run's last K snapshots (RUN/snapshots/, written with "
                        "logging.snapshot_every) instead of its last generation's candidates, and save the best")
    p.add_argument("--allow-large", action="store_true",
                   help="run even if the memory or work estimate exceeds what this machine allows (a deliberate "
                        "huge evaluation)")
    add_plugin(p, PLUGIN_HELP + " (a model or run records its plugins and imports them itself)")
    g = p.add_argument_group("on Gymnasium's Pendulum-v1 (metarl.analysis.gym_rule; needs gymnasium)")
    g.add_argument("--gymnasium", metavar="ENV_ID", help="run the rule's actor through gymnasium.make(ENV_ID) "
                   "(Pendulum-v1, or metarl/Pendulum-v0 with dynamics='gymnasium') over lifetimes of several "
                   "episodes, beside the same actor without plasticity and a random policy; --seed default 0")
    g.add_argument("--episodes-per-lifetime", type=int, metavar="N",
                   help=f"episodes of 200 steps per lifetime (default {DEFAULT_GYM_EPISODES}); the env resets "
                        f"between them, the actor and the rule keep what they learned")
    g.add_argument("--lifetimes", type=int, metavar="K", help=f"lifetimes (default {DEFAULT_GYM_LIFETIMES})")
    g.add_argument("--reward", choices=RULE_REWARDS,
                   help="what the rule sees: env = the env's reward (Pendulum-v1: -cost; the default), height = "
                        "metarl's 1 - cos theta of the next observation (what the shipped rules were evolved on)")
    return p


PARSERS: dict[str, Callable[[], ArgumentParser]] = {
    "train": train, "show_environment": show_environment, "show_results": show_results}
