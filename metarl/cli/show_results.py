"""Replay, plot and evaluate a learned rule; plot the fitness curves of a run (``show_results.py``,
``metarl-show-results``). Its command line, and what each option does, is `metarl.cli.parsers.show_results`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from metarl import config as cfg_mod
from metarl import envs, plugins, resources
from metarl.analysis import controllers, evaluation, gym_rule, plots, robustness
from metarl.analysis.render import ANIMATION_SUFFIXES, VIEW_MARGIN, Renderer, open_window, save_animation, window_open
from metarl.backends import select_backend, use_threads
from metarl.backends.lifetime import Conditions, Lifetime
from metarl.cli import parsers
from metarl.cli.main import run_main
from metarl.cli.parsers import (
    DEFAULT_EVAL_EPISODES,
    DEFAULT_GYM_EPISODES,
    DEFAULT_GYM_LIFETIMES,
    DEFAULT_PLOT_EPISODES,
    DEFAULT_RESCORE_EPISODES,
    DEFAULT_ROBUSTNESS_EPISODES,
)
from metarl.config import Config
from metarl.config.schema import MAX_SEED, _show
from metarl.core.genome import GenomeLayout
from metarl.errors import ConfigError, ModelFileError, UserError
from metarl.evolve import stages
from metarl.evolve import trainer as training
from metarl.evolve.searchers import candidate_bound
from metarl.runs import io
from metarl.runs.io import SavedModel, atomic_write_text, load_model, read_log
from metarl.shipped import model as shipped_model

WINDOW_HEIGHT, WINDOW_ENV_WIDTH, WINDOW_PANEL_WIDTH = 480, 480, 640
GIF_HEIGHT, GIF_ENV_WIDTH, GIF_PANEL_WIDTH = 400, 400, 560
LIVE_PANEL_EVERY = 5  # steps between panel redraws in the window (a redraw costs ~50 ms)
GIF_MAX_FRAMES = 100
GIF_MIN_FPS = 10.0  # long lifetimes play faster than real time rather than as a slide show
LOG_COLUMNS = ("generation", "best")  # required; the other curves are drawn when present


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = parsers.show_results()
    args = p.parse_args(argv)
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise UserError(f"--seed must be an integer in [0, 2^63-1], got {_show(args.seed)}")
    if args.rescore is not None and args.rescore < 1:
        raise UserError(f"--rescore must be >= 1, got {_show(args.rescore)}")
    if args.snapshots and args.rescore is None:
        raise UserError("--snapshots goes with --rescore K (score the run's last K snapshots)")
    for name, low in (("steps", 1), ("episodes", 2), ("episodes_per_lifetime", 1), ("lifetimes", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise UserError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    if args.gymnasium is not None:
        check_gymnasium_options(args)
    else:
        given = [f for f, v in (("--episodes-per-lifetime", args.episodes_per_lifetime),
                                ("--lifetimes", args.lifetimes), ("--reward", args.reward)) if v is not None]
        if given:
            raise UserError(f"{given[0]} needs --gymnasium ENV_ID")
    if args.json and not (args.evaluate or args.robustness or args.gymnasium is not None):
        raise UserError("--json needs --evaluate, --robustness or --gymnasium")
    if args.evaluate and args.save:
        raise UserError("--evaluate cannot be combined with --save; run them separately")
    if args.robustness and (args.evaluate or args.save):
        raise UserError(f"--robustness cannot be combined with {'--evaluate' if args.evaluate else '--save'}; "
                        f"run them separately")
    # Reject unwritable output names before minutes of work, not after.
    if args.plot:
        plots.figure_format(args.plot)
        io.check_output_file(args.plot, "--plot")
    if args.save and Path(args.save).suffix.lower() not in ANIMATION_SUFFIXES:
        raise UserError(f"--save {args.save}: use a .gif (animation) or .png (last frame) file name")
    if args.save:
        io.check_output_file(args.save, "--save")
    if args.json:
        io.check_output_file(args.json, "--json")
    return args


def check_gymnasium_options(args: argparse.Namespace) -> None:
    """Reject what --gymnasium cannot combine with, and a missing gymnasium or an unknown env id."""
    others = {"--evaluate": args.evaluate, "--robustness": args.robustness, "--save": args.save, "--plot": args.plot,
              "--rescore": args.rescore,
              "--steps": args.steps is not None, "--episodes": args.episodes is not None, "RUN_DIR": args.more_runs}
    given = [flag for flag, value in others.items() if value]
    if given:
        hint = " (lifetimes: --lifetimes K)" if given[0] == "--episodes" else ""
        raise UserError(f"--gymnasium cannot be combined with {given[0]}{hint}")
    gym_rule.make_env(args.gymnasium).close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plugins.given(args.plugin)  # before a model or run is read; what they record is imported as they are read
    path = Path(shipped_model(args.path))
    if args.gymnasium is not None and path.is_dir():
        raise UserError(f"--gymnasium needs a MODEL.yaml, but {path} is a run folder (its model: "
                        f"{path / 'best_model.yaml'})")
    for folder in (path, *map(Path, args.more_runs or [])):
        if folder.is_dir() and stages.is_stage_run(folder) and not (folder / "log.csv").exists():
            names = " ".join(str(s.folder(folder)) for s in stages.load_run(folder))
            raise UserError(f"{folder} is a multi-stage run: name its stages' run folders ({names}) or its model "
                            f"({folder / stages.MODEL_FILE})")
    if args.more_runs:
        return show_runs([path, *map(Path, args.more_runs)], args)
    if path.is_dir():
        return show_run(path, args)
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file or run folder")
    if args.rescore is not None:
        raise UserError(f"--rescore needs a run folder (it scores the elites of the last generation), but {path} "
                        f"is a file; to score one model use --evaluate")
    model = load_model(path)
    try:
        config = replay_config(cfg_mod.from_dict(cfg_mod.apply_overrides(model.config.to_dict(), args.set)),
                               args.set)
    except ConfigError as e:
        if args.evaluate and "groups need a fixed env.action_sign" in str(e):
            raise ConfigError(f"{e}; --evaluate already runs every lifetime with both motor directions, each "
                              f"reported (drop --set env.action_sign)") from None
        raise
    if args.evaluate or args.robustness:
        config = replay_config(judged_config(config, args.set), args.set)
    sizes = actor_sizes(args.hidden, config)
    steps = args.steps if args.steps is not None else config.ga.lifetime_steps
    if args.gymnasium is not None:
        use_threads(1)  # batches of a few dozen actors
        return on_gymnasium(path, model, config, sizes, args)
    if args.evaluate or args.robustness:
        controllers.check_env(config.env.name)  # before any lifetime: they compare the rule with the controller
    check_size(config, sizes, steps, args)  # before anything is allocated
    if args.evaluate:
        use_threads(config.runtime.threads)
        return evaluate(path, model, config, sizes, steps, args)
    if args.robustness:
        use_threads(config.runtime.threads)
        return robustness_report(path, model, config, sizes, steps, args)
    # A replay steps one actor: its matrices are too small for threads to pay off (whatever the config says).
    use_threads(1)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    print(f"{path}: {provenance(model)}; actor {sizes}, {steps} steps per lifetime, seed {seed}"
          + ("" if args.seed is not None else " (--seed to repeat)"))
    if args.save or args.plot:
        return export(path, model, config, sizes, steps, seed, args)
    return live(model, config, sizes, steps, seed)


def check_size(config: Config, sizes: list[int], steps: int, args: argparse.Namespace) -> None:
    """The memory and work estimate of `metarl.resources` for what this command will run (one line, naming
    the figure and --allow-large, if it is too much)."""
    state_size = envs.env_class(config.env.name).state_size()
    if args.robustness:
        per_episode, longest = robustness.work(config, steps)
        episodes = args.episodes or DEFAULT_ROBUSTNESS_EPISODES
        resources.check_lifetimes(config, sizes, lifetimes=per_episode * episodes, steps=longest,
                                  what="--robustness", traced_floats_per_step=state_size, allow_large=args.allow_large)
        return
    if args.evaluate:
        runs = len(evaluation.CONDITIONS) * len(evaluation.variants_of(config))
        episodes = args.episodes or DEFAULT_EVAL_EPISODES
        resources.check_lifetimes(config, sizes, lifetimes=runs * episodes, steps=steps, what="--evaluate",
                                  traced_floats_per_step=3 + state_size, allow_large=args.allow_large)
        return
    if args.plot:
        episodes = args.episodes or DEFAULT_PLOT_EPISODES
        resources.check_lifetimes(config, sizes, lifetimes=2 * episodes, steps=steps, what="--plot",
                                  traced_floats_per_step=1, allow_large=args.allow_large)
    resources.check_lifetimes(config, sizes, lifetimes=1, steps=steps, what="the replay", replay=True,
                              traced_floats_per_step=1 + state_size, allow_large=args.allow_large)


def replay_config(config: Config, overrides: list[str]) -> Config:
    """The model's config with ``runtime.native: true`` read as auto: that was a training choice, and
    replay and evaluation run on whatever step this machine has (unless ``--set runtime.native=...``)."""
    if config.runtime.native and not any(item.strip().startswith("runtime.native") for item in overrides):
        return config.replace(runtime=dataclasses.replace(config.runtime, native=None))
    return config


def judged_config(config: Config, overrides: list[str]) -> Config:
    """The task a rule is judged on (``--evaluate``, ``--robustness``): ``config`` (the model's, ``--set``
    applied) with its ``evaluation`` section applied (`metarl.config.evaluation_task`), then ``--set`` again, so
    that it overrides the recorded task too."""
    task = cfg_mod.evaluation_task(config)
    if task is config:
        return config
    rest = [item for item in overrides if not item.strip().startswith("evaluation.")]
    return cfg_mod.from_dict(cfg_mod.apply_overrides(task.to_dict(), rest))


def shown(path: Path, given: str) -> str:
    """The model as the reports name it: as given, and for a shipped model's name its file relative to the current
    folder (where it is below it), so that a report written in a repository holds no path of the machine."""
    if Path(given).exists():
        return given
    try:
        return f"{given} ({path.resolve().relative_to(Path.cwd().resolve())})"
    except ValueError:
        return f"{given} ({path})"


def provenance(model: SavedModel) -> str:
    """``fitness F at generation G`` with whatever the file records."""
    fitness = "fitness ?" if model.fitness is None else f"fitness {model.fitness:.3f}"
    return fitness if model.generation is None else f"{fitness} at generation {model.generation}"


def actor_sizes(hidden: str | None, config: Config) -> list[int]:
    """``[obs_dim, *hidden, 1]`` from ``--hidden 16,16`` (empty text: no hidden layer)."""
    if hidden is None:
        return config.layer_sizes
    parts = [p.strip() for p in hidden.split(",")] if hidden.strip() else []
    if not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise UserError(f"--hidden {hidden!r}: expected comma-separated layer sizes >= 1, like 16,16")
    return [config.env.obs_dim, *(int(p) for p in parts), 1]


# ---------------------------------------------------------------------------- run folders

def show_run(run_dir: Path, args: argparse.Namespace) -> int:
    """Fitness curves of a run folder: to ``--plot`` or in a matplotlib window."""
    check_run_options(run_dir, args)
    if args.rescore is not None:
        return rescore_run(run_dir, args)
    rows = run_log(run_dir)
    config = run_config(run_dir)
    title = f"{run_dir.resolve().name}: fitness per generation" + ("" if config is None else f"\n{summary(config)}")
    levels = baseline_levels(rows, config)
    if args.plot:
        plots.save_figure(plots.fitness_curve_figure(rows, title=title, levels=levels), args.plot)
        print(f"wrote {args.plot} ({len(rows)} generations" + "".join(f"; {k} {v:.1f}" for k, v in levels.items())
              + ")")
        return 0
    plt = window_pyplot()
    plots.fitness_curve_figure(rows, title=title, fig=plt.figure(figsize=(9, 5.5)), levels=levels)
    print(f"{run_dir}: {len(rows)} generations; close the window to quit")
    plt.show()
    return 0


LEVEL_EPISODES = 32  # lifetimes of the no-plasticity level in a run's plot (a fraction of a second for base.yaml)


def run_config(run_dir: Path) -> Config | None:
    """The config a run folder records (``config.yaml``), or None where there is none or it no longer loads."""
    try:
        return cfg_mod.from_dict(cfg_mod.read_yaml(run_dir / "config.yaml"))
    except (OSError, UserError, ValueError):
        return None


def summary(config: Config) -> str:
    """The config in one line, for a figure's title: task, search and budget."""
    env, ga = config.env, config.ga
    goal = ", hidden goal" if evaluation.goals_of(config) else ""
    motor = ", motor either way" if evaluation.motors_of(config) else ""
    return (f"{env.name}, init {env.init}{goal}{motor}; {config.search.name}, {ga.population_size:,} rules x "
            f"{ga.evals_per_individual} lifetimes of {ga.lifetime_steps:,} steps")


def baseline_levels(rows: list[dict[str, float]], config: Config | None) -> dict[str, float]:
    """The levels a run's fitness curve is read against: random rules (generation 0's mean, from the log) and a
    random actor that never learns (no plasticity, `LEVEL_EPISODES` held-out lifetimes of the run's task)."""
    levels = {}
    if rows[0]["generation"] == 0 and "mean" in rows[0] and config is not None and config.ga.init_model is None:
        levels["random rules (generation 0 mean)"] = rows[0]["mean"]
    if config is not None:
        use_threads(1)
        levels["no plasticity (a random actor)"] = evaluation.no_plasticity_level(config, episodes=LEVEL_EPISODES,
                                                                                  seed=0)
    return levels


def show_runs(run_dirs: list[Path], args: argparse.Namespace) -> int:
    """Several run folders in one figure; runs whose configs differ only in seed form one curve."""
    for run_dir in run_dirs:
        if not run_dir.is_dir():
            raise UserError(f"{run_dir}: not a run folder; several paths must all be run folders")
        check_run_options(run_dir, args)
    groups: dict[str, tuple[str, list[list[dict[str, float]]]]] = {}
    for run_dir in run_dirs:
        key = run_config_key(run_dir)
        label = groups[key][0] if key in groups else run_dir.resolve().name
        groups.setdefault(key, (label, []))[1].append(run_log(run_dir))
    summary = ", ".join(f"{label} ({len(runs)} run{'s' if len(runs) > 1 else ''})" for label, runs in groups.values())
    if args.plot:
        plots.save_figure(plots.runs_figure(list(groups.values())), args.plot)
        print(f"wrote {args.plot} ({summary})")
        return 0
    plt = window_pyplot()
    plots.runs_figure(list(groups.values()), fig=plt.figure(figsize=(9, 5.5)))
    print(f"{summary}; close the window to quit")
    plt.show()
    return 0


def check_run_options(run_dir: Path, args: argparse.Namespace) -> None:
    """Reject the options that need a model file."""
    model_only = {"--evaluate": args.evaluate, "--robustness": args.robustness, "--save": args.save,
                  "--steps": args.steps is not None,
                  "--set": args.set, "--hidden": args.hidden,
                  "--episodes": args.episodes is not None and args.rescore is None,
                  "--seed": args.seed is not None and args.rescore is None}
    given = [flag for flag, value in model_only.items() if value]
    if given:
        raise UserError(f"{given[0]} needs a MODEL.yaml, but {run_dir} is a run folder "
                        f"(its model: {run_dir / 'best_model.yaml'})")


def run_log(run_dir: Path) -> list[dict[str, float]]:
    """The rows of a run folder's ``log.csv``; one-line errors for anything else."""
    log = run_dir / "log.csv"
    if not log.is_file():
        raise ModelFileError(f"{run_dir}: not a run folder (no log.csv)")
    rows = read_log(log)
    if not rows:
        raise ModelFileError(f"{log}: no generation logged yet")
    missing = [c for c in LOG_COLUMNS if c not in rows[0]]
    if missing:
        raise ModelFileError(f"{log}: not a generation log (no {missing[0]!r} column)")
    return rows


def run_config_key(run_dir: Path) -> str:
    """What runs of one experiment share: the run's config without its seed, generations and logging."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return str(run_dir.resolve())  # a log without a config is its own group
    data = cfg_mod.from_dict(cfg_mod.read_yaml(path)).to_dict()
    for key in ("seed", "logging", "plugins"):  # plugins: where the code is
        data.pop(key, None)
    data["ga"].pop("generations", None)
    data.pop("runtime", None)  # chunks and threads never change results; the step path only by rounding
    return json.dumps(data, sort_keys=True)


def window_pyplot():  # noqa: ANN201 - matplotlib.pyplot
    """pyplot for a window; a one-line error where none can open (no display, MPLBACKEND=Agg)."""
    import matplotlib.pyplot as plt

    backend = plt.get_backend().lower()
    if backend in ("agg", "pdf", "ps", "svg", "pgf", "cairo", "template"):
        raise UserError(f"no window can open here (matplotlib backend {backend}); write the figure with "
                        f"--plot curve.png")
    return plt


def rescore_run(run_dir: Path, args: argparse.Namespace) -> int:
    """Score the candidates of a run's last generation on held-out lifetimes; save the best."""
    stages.refuse_stage_folder(run_dir, "--rescore")  # a stage's model is the next stage's warm start
    with training.claim_run_dir(run_dir, new=False):  # it writes RUN/rescored_model.yaml: one writer at a time
        return _rescore_run(run_dir, args)


def _rescore_run(run_dir: Path, args: argparse.Namespace) -> int:
    state = training.load_run(run_dir)
    cfg = state.config
    layout = training.layout_of(cfg)
    k = args.rescore
    if args.snapshots:
        candidates, labels, generations = snapshot_candidates(run_dir, layout, k)
        what = (f"the last {len(labels)} snapshot{'s' if len(labels) > 1 else ''} "
                f"(generations {generations[0]}-{generations[-1]})")
    else:
        bound, key = candidate_bound(cfg)
        if not 1 <= k <= bound:
            raise UserError(f"--rescore must be in [1, {key}={bound}], got {k}")
        if state.generation == 0:
            raise ModelFileError(f"{run_dir}: no generation completed yet")
        candidates, labels = state.searcher.candidates(k)
        generations = [state.generation - 1] * candidates.shape[0]
        noun = "elite" if cfg.search.name == "ga" else "candidate"
        plural = "s" if candidates.shape[0] > 1 else ""
        what = f"the {candidates.shape[0]} {noun}{plural}" + (
            "" if cfg.search.name == "ga" else
            f" (the {cfg.search.name} mean, then that generation's best by training fitness)") + \
            f" of generation {generations[0]}"
    count = candidates.shape[0]
    episodes = args.episodes or DEFAULT_RESCORE_EPISODES
    pairs = cfg.ga.group
    resources.check_lifetimes(cfg, cfg.layer_sizes, lifetimes=count * episodes * pairs,
                              steps=cfg.ga.lifetime_steps, what="--rescore", allow_large=args.allow_large)
    use_threads(cfg.runtime.threads)
    seed = args.seed if args.seed is not None else 0
    with tqdm(total=count * episodes * pairs * cfg.ga.lifetime_steps, desc="rescore", unit="ind-step",
              unit_scale=True, leave=False, disable=None) as bar:
        scores, best = evaluation.rescore_best(candidates, layout, cfg, episodes=episodes, seed=seed,
                                               progress=bar.update)
    order = torch.argsort(scores, descending=True, stable=True)
    print(f"{run_dir}: {what}, scored on {episodes} held-out lifetimes (seed {seed})")
    print(f"{'candidate':>14}{'held-out score':>16}")
    for i in order[:min(count, 10)].tolist():
        print(f"{labels[i]:>14}{float(scores[i]):>16.3f}")
    out = run_dir / "rescored_model.yaml"
    with training.writing(out, "run the command again"):
        io.save_model(out, candidates[best], layout, cfg, fitness=float(scores[best]), generation=generations[best],
                      seed=state.seed)
    print(f"wrote {out} ({labels[best]}; its fitness field is the held-out score)")
    return 0


def snapshot_candidates(run_dir: Path, layout: GenomeLayout, k: int) -> tuple[torch.Tensor, list[str], list[int]]:
    """The genomes ``(K, G)``, names and generations of a run's last ``k`` snapshots (``RUN/snapshots/gen_N.yaml``,
    oldest first); one-line errors where there are none, too few, or one is not a model of this run's rule."""
    folder = run_dir / training.SNAPSHOTS
    found = []
    for path in folder.glob("gen_*.yaml") if folder.is_dir() else []:
        number = path.stem[len("gen_"):]
        if number.isdigit():
            found.append((int(number), path))
    if not found:
        raise UserError(f"{run_dir}: no snapshots to rescore (train with --set logging.snapshot_every=N)")
    if k > len(found):
        raise UserError(f"--rescore must be in [1, {len(found)}] with --snapshots (the run's snapshots), got {k}")
    chosen = sorted(found)[-k:]

    def shape(g: GenomeLayout) -> str:
        return f"rule {g.rule.name}, S={g.signal_dim}, H={g.state_dim}"

    genomes = []
    for generation, path in chosen:
        model = load_model(path)
        if shape(model.layout) != shape(layout):
            raise ModelFileError(f"{path}: not a model of this run ({shape(model.layout)}; the run's: {shape(layout)})")
        if model.generation != generation:  # the name is what the rescored model records: it must be the model's
            raise ModelFileError(f"{path}: not a snapshot of this run: named generation {_show(generation)}, saved at "
                                 f"generation {_show(model.generation)}")
        genomes.append(model.genome)
    return torch.stack(genomes), [path.stem for _, path in chosen], [generation for generation, _ in chosen]


# ---------------------------------------------------------------------------- evaluation

def evaluate(path: Path, model: SavedModel, config: Config, sizes: list[int], steps: int,
             args: argparse.Namespace) -> int:
    """Print the baseline comparison table; ``--json`` writes it too."""
    episodes = args.episodes or DEFAULT_EVAL_EPISODES
    seed = args.seed if args.seed is not None else 0
    device = cfg_mod.resolve_device(config.device)
    task = evaluation.task_line(config, steps)
    recorded = "the model's recorded evaluation task" if model.config.evaluation != cfg_mod.EvaluationConfig() \
        else "the model's training task"
    given = f" with --set {' '.join(args.set)}" if args.set else ""
    print(f"{shown(path, args.path)}: {provenance(model)}\n{episodes} episodes x {steps} steps per condition, "
          f"actor {sizes}, seed {seed}\n{task} ({recorded}{given})")
    total = len(evaluation.ALL_CONDITIONS) * len(evaluation.variants_of(config)) * episodes * steps
    with tqdm(total=total, desc="evaluate", unit="ind-step", unit_scale=True, leave=False, disable=None) as bar:
        result = evaluation.evaluate_rule(model.genome, model.layout, config, episodes=episodes, seed=seed,
                                          steps=steps, sizes=sizes, device=device, progress=bar.update)
    print(evaluation.format_table(result))
    if args.json:
        data = {**result.to_dict(), "model": args.path,
                "settings": {"episodes": episodes, "seed": seed, "steps": steps, "hidden": sizes[1:-1],
                             "overrides": list(args.set), "task": task, "env": config.to_dict()["env"],
                             "motors": list(evaluation.motors_of(config) or [])}}
        write_json(args.json, data)
    if args.plot:
        fig = plots.height_curve_figure(result.height_curve, goals=evaluation.goals_of(config),
                                        title=f"{path.name}: height over the lifetime, mean of {episodes} episodes")
        plots.save_figure(fig, args.plot)
        print(f"wrote {args.plot}")
    return 0


def base_setting(config: Config) -> str:
    """One line naming what every point of the robustness report varies one axis of (its row ``model``): the
    model's config with ``--set`` applied, which for a model trained with noise, ranges or reversals is not the
    nominal task unless ``--set`` makes it so."""
    env = config.env
    switch = "none" if env.goal_switch is None else f"{env.goal_switch} (probability {env.goal_switch_probability})"
    goal = "+1 and -1 (hidden)" if evaluation.goals_of(config) is not None else env.goal
    return (f"base (row model): {env.name}, params {env.params or 'default'}, sensor noise {env.obs_noise}, "
            f"dt {env.dt}, max torque {env.max_torque}, goal {goal}, goal switch {switch}")


def robustness_report(path: Path, model: SavedModel, config: Config, sizes: list[int], steps: int,
                      args: argparse.Namespace) -> int:
    """Print the robustness table (`metarl.analysis.robustness`); ``--json`` and ``--plot`` (a heat map) write
    it too."""
    episodes = args.episodes or DEFAULT_ROBUSTNESS_EPISODES
    seed = args.seed if args.seed is not None else 0
    device = cfg_mod.resolve_device(config.device)
    settings = robustness.grid(config, steps)
    total = sum(2 * len(evaluation.goals_of(cfg) or (1,)) * episodes * n for *_, cfg, n in settings)
    print(f"{shown(path, args.path)}: {provenance(model)}\n{episodes} episodes at each of {len(settings)} settings, "
          f"the rule and the reference controller on the same draws; {steps} steps as configured, actor {sizes}, "
          f"seed {seed}")
    print(base_setting(config))
    with tqdm(total=total, desc="robustness", unit="ind-step", unit_scale=True, leave=False, disable=None) as bar:
        points = robustness.run(model.genome, model.layout, config, episodes=episodes, seed=seed, steps=steps,
                                sizes=sizes, device=device, progress=bar.update)
    print(robustness.format_table(points, hidden_goal=evaluation.goals_of(config) is not None))
    if args.json:
        data = {**robustness.to_dict(points), "model": args.path,
                "settings": {"episodes": episodes, "seed": seed, "steps": steps, "hidden": sizes[1:-1],
                             "overrides": list(args.set), "env": config.to_dict()["env"]}}
        write_json(args.json, data)
    if args.plot:
        title = f"{path.name}: learned / reference controller, {episodes} episodes per cell"
        plots.save_figure(robustness.heatmap_figure(points, title=title), args.plot)
        print(f"wrote {args.plot}")
    return 0


def write_json(path: str, data: dict) -> None:
    """``--json``: written atomically, one line if it cannot be; JSON has no NaN or infinity, so a non-finite
    number is written as null and a ``notes`` entry says where (`finite_json`)."""
    data, nonfinite = finite_json(data)
    if nonfinite:
        shown = ", ".join(nonfinite[:5]) + (f" and {len(nonfinite) - 5} more" if len(nonfinite) > 5 else "")
        data = {**data, "notes": [*data.get("notes", []), f"{len(nonfinite)} values were not finite numbers (NaN "
                                  f"or infinite: a score divided by a zero reference, an overflow) and are null: "
                                  f"{shown}"]}
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror})") from None
    print(f"wrote {path}")


def finite_json(data: Any, where: str = "") -> tuple[Any, list[str]]:
    """``data`` with every non-finite float replaced by None, and the paths (``points[0].reference.mean``) of
    those replaced."""
    if isinstance(data, float) and not math.isfinite(data):
        return None, [where or "the value"]
    found: list[str] = []
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            out[k], more = finite_json(v, f"{where}.{k}" if where else str(k))
            found += more
        return out, found
    if isinstance(data, (list, tuple)):
        items = []
        for i, v in enumerate(data):
            item, more = finite_json(v, f"{where}[{i}]")
            items.append(item)
            found += more
        return items, found
    return data, found


# ---------------------------------------------------------------------------- Gymnasium

def on_gymnasium(path: Path, model: SavedModel, config: Config, sizes: list[int], args: argparse.Namespace) -> int:
    """The return per episode on ``gymnasium.make(ENV_ID)`` of the rule, the same actors without
    plasticity and a random policy (`metarl.analysis.gym_rule`); ``--json`` writes it too."""
    import gymnasium

    gym_rule.check_model(config, sizes)
    episodes = args.episodes_per_lifetime or DEFAULT_GYM_EPISODES
    lifetimes = args.lifetimes or DEFAULT_GYM_LIFETIMES
    seed = args.seed if args.seed is not None else 0
    # The same memory and work estimate as --evaluate's, for every lifetime's episodes of the env's length.
    env = gym_rule.make_env(args.gymnasium)
    episode_steps = getattr(env.spec, "max_episode_steps", None) or config.ga.lifetime_steps
    env.close()
    resources.check_lifetimes(config, sizes, lifetimes=lifetimes * len(gym_rule.POLICIES),
                              steps=episodes * episode_steps, what="--gymnasium", allow_large=args.allow_large,
                              reduce="--lifetimes, --episodes-per-lifetime or --hidden")
    reward = args.reward or "env"
    sees = "the env's reward (Pendulum-v1: -cost)" if reward == "env" else "metarl's height reward 1 - cos theta"
    print(f"{shown(path, args.path)}: {provenance(model)}; actor {sizes}\non {args.gymnasium} "
          f"(gymnasium {gymnasium.__version__}): {lifetimes} lifetimes of {episodes} episodes, seed {seed}; the rule "
          f"sees {sees}")
    results = {}
    for policy in gym_rule.POLICIES:
        results[policy] = gym_rule.run_rule_on_gymnasium(model, args.gymnasium, episodes=episodes,
                                                         lifetimes=lifetimes, seed=seed, reward=reward,
                                                         policy=policy, config=config, sizes=sizes)
    print(f"return per episode (the env's), mean [95% CI] over {lifetimes} lifetimes; the env resets between "
          f"episodes, the actor and the rule keep what they learned:")
    print(gym_rule.format_table(results))
    if args.json:
        data = {"model": args.path, "env_id": args.gymnasium, "gymnasium": gymnasium.__version__,
                "settings": {"episodes_per_lifetime": episodes, "lifetimes": lifetimes, "seed": seed,
                             "reward": reward, "hidden": sizes[1:-1], "overrides": list(args.set)},
                "policies": {name: {"per_episode": [s.to_dict() for s in gym_rule.summaries(r)],
                                    "returns": r.tolist()} for name, r in results.items()}}
        write_json(args.json, data)
    return 0


# ---------------------------------------------------------------------------- replay

def new_lifetime(model: SavedModel, config: Config, sizes: list[int], seed: int, index: int) -> Lifetime:
    """Lifetime ``index`` of the replay: a fresh random actor and environment from the seed."""
    keys = evaluation.evaluation_keys(seed, 1, generation=evaluation.REPLAY_GENERATION, lifetime=index)
    genomes = model.genome[None]
    return Lifetime(genomes, model.layout, config, keys, sizes=sizes,
                    backend=select_backend(config, genomes.device, genomes.dtype, sizes).name)


def view_extent(config: Config, life: Lifetime) -> float:
    """Metres from the pivot to show: the longest chain the config can draw, plus a margin."""
    defaults = life.env.param_defaults
    reach = 0.0
    for name in life.env.link_length_names:
        value = config.env.params.get(name, defaults[name])
        reach += max(value) if isinstance(value, list) else float(value)
    return VIEW_MARGIN * reach


def replay(life: Lifetime, steps: int, renderer: Renderer, panels: plots.ReplayPanels, *, every: int,
           panel_every: int, label: str) -> Iterator[np.ndarray]:
    """Step ``life`` and yield env + panels side by side ``(H, W, 3)`` every ``every`` steps."""
    panels.reset(life.actor, label)
    rewards: list[float] = []
    panel = panels.update(rewards, life.actor)
    with torch.no_grad():
        for t in range(1, steps + 1):
            rewards.append(float(life.step()[0]))
            if t % every and t != steps:
                continue
            if t % panel_every == 0 or t == steps:
                panel = panels.update(rewards, life.actor)
            action = float(life.actor.outputs[-1][0, 0])
            text = f"step {t}/{steps}   reward {rewards[-1]:.2f}\ntotal {sum(rewards):.1f}"
            renderer.draw(life.env, 0, text, action=action)
            yield np.concatenate((renderer.frame(), panel), axis=1)


def _panels(config: Config, steps: int, width: int, height: int) -> plots.ReplayPanels:
    return plots.ReplayPanels(width, height, steps=steps, weight_limit=config.actor.weight_limit,
                              sigma_limit=config.actor.sigma_limit)


def live(model: SavedModel, config: Config, sizes: list[int], steps: int, seed: int) -> int:
    """Replay lifetime after lifetime in one window (env left, panels right) until it is closed."""
    import pygame  # after metarl.analysis.render, which silences pygame's import banner

    h, env_w, panel_w = WINDOW_HEIGHT, WINDOW_ENV_WIDTH, WINDOW_PANEL_WIDTH
    panels = _panels(config, steps, panel_w, h)
    # The Renderer draws off screen; this window shows its frame and the panels together.
    screen = open_window(env_w + panel_w, h, "--save replay.gif, or --plot summary.png", endless=True)
    try:
        pygame.display.set_caption("metarl: show_results (Esc or q to quit)")
        print("replaying one fresh lifetime after another; close the window or press Esc or q to stop", flush=True)
        clock = pygame.time.Clock()
        fps = 1.0 / config.env.mean_dt
        index = 0
        while True:
            life = new_lifetime(model, config, sizes, seed, index)
            renderer = Renderer(env_w, h, headless=True, extent=view_extent(config, life))
            label = f"lifetime {index} (seed {seed})"
            for frame in replay(life, steps, renderer, panels, every=1, panel_every=LIVE_PANEL_EVERY,
                                label=label):
                if not window_open():
                    return 0
                screen.blit(pygame.image.frombuffer(frame.tobytes(), (frame.shape[1], frame.shape[0]), "RGB"),
                            (0, 0))
                pygame.display.flip()
                clock.tick(fps)
            index += 1
    finally:
        pygame.display.quit()


def export(path: Path, model: SavedModel, config: Config, sizes: list[int], steps: int, seed: int,
           args: argparse.Namespace) -> int:
    """Headless: ``--save`` one lifetime as an animation, ``--plot`` a summary of many lifetimes."""
    if args.save:
        still = Path(args.save).suffix.lower() == ".png"  # the last frame only: draw no other
        every = steps if still else max(1, math.ceil(steps / GIF_MAX_FRAMES))
        life = new_lifetime(model, config, sizes, seed, 0)
        renderer = Renderer(GIF_ENV_WIDTH, GIF_HEIGHT, headless=True, extent=view_extent(config, life))
        panels = _panels(config, steps, GIF_PANEL_WIDTH, GIF_HEIGHT)
        frames = list(replay(life, steps, renderer, panels, every=every, panel_every=every,
                             label=f"lifetime 0 (seed {seed})"))
        fps = max(GIF_MIN_FPS, 1.0 / (config.env.mean_dt * every))
        save_animation(frames, args.save, fps)
        if still:
            print(f"wrote {args.save} (the last of {steps} steps)")
        else:
            speed = fps * every * config.env.mean_dt
            print(f"wrote {args.save} ({len(frames)} frames, one every {every} steps, {speed:.3g}x real time)")
    if args.plot:
        episodes = args.episodes or DEFAULT_PLOT_EPISODES
        # Lifetime 0 of the replay is episode 0 here: the GIF shows one of the summarised lifetimes.
        keys = evaluation.evaluation_keys(seed, episodes, generation=evaluation.REPLAY_GENERATION)
        learned = evaluation.sample_lifetimes(model.genome, model.layout, config, keys, steps=steps, sizes=sizes)
        frozen = evaluation.sample_lifetimes(model.genome, model.layout, config, keys, steps=steps, sizes=sizes,
                                             conditions=Conditions(plastic=False))
        title = (f"{path.name}: {episodes} lifetimes of {steps} steps, {config.env.name}, actor {sizes}, "
                 f"seed {seed}")
        fig = plots.summary_figure(learned, frozen, weight_limit=config.actor.weight_limit,
                                   sigma_limit=config.actor.sigma_limit, title=title)
        plots.save_figure(fig, args.plot)
        print(f"wrote {args.plot} (mean lifetime reward {float(learned.rewards.sum(1).mean()):.2f}, "
              f"without plasticity {float(frozen.rewards.sum(1).mean()):.2f})")
    return 0


def entry() -> None:
    """Console entry point."""
    sys.exit(run_main(main))


if __name__ == "__main__":
    entry()
