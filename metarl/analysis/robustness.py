"""Robustness: a learned rule against the reference controller in conditions it was not tuned to.

Each axis of `AXES` (pendulum length, mass, damping, sensor noise, time step, motor torque) is varied one
at a time from the model's config, a handful of points per axis, everything else as configured. At every
point the rule's lifetimes and the reference controller (`metarl.analysis.controllers`, which knows the physics of
that point and sees the same sensor noise) run on the same held-out keys as ``--evaluate``
(`metarl.analysis.evaluation.evaluation_keys`), so that the two are compared under the same setting. A point
reports both scores (summed reward, the mean of the two goals for a hidden-goal task, as in
`metarl.analysis.evaluation.evaluate_rule`), their paired difference, the *share* (learned mean / reference mean)
and the balanced fraction of each (`metarl.analysis.evaluation.balanced_lifetimes`; of the goal +1 lifetimes for a
hidden goal, since "stay down" never balances). The time-step axis keeps the simulated time: at
``dt`` the lifetime has ``steps * mean_dt / dt`` steps (and ``goal_switch`` and ``episode_steps`` scale
alike), while the learning rate is left as configured (``actor.learning_rate_dt`` is what makes it a rate
per second).

    python3 show_results.py pendulum_balance --robustness --episodes 64 --json robustness.json --plot robustness.png
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .. import envs
from ..backends.lifetime import ProgressFn, make_env, run_lifetimes
from ..config import Config
from ..core.genome import GenomeLayout
from .controllers import run_reference
from .evaluation import Summary, balanced_lifetimes, evaluation_keys, goals_of, heights


@dataclass(frozen=True)
class Axis:
    """One axis of the grid: the setting it varies, how it is labelled and its points."""

    name: str  # a physical parameter (every link's: length1, length2, ...) or an env option
    label: str
    values: tuple[float, ...]


AXES = (
    Axis("length", "length (m)", (0.5, 0.75, 1.5, 2.0)),
    Axis("mass", "mass (kg)", (0.5, 0.75, 1.5, 2.0)),
    Axis("damping", "damping (1/s)", (0.0, 0.05, 0.2, 0.3)),
    Axis("obs_noise", "sensor noise (std)", (0.01, 0.03, 0.05, 0.1)),
    Axis("dt", "time step (s), same simulated time", (0.025,)),
    Axis("max_torque", "motor torque (N·m)", (1.0, 1.5, 2.5, 3.0)),
)
PHYSICAL = ("length", "mass", "damping")
BASE = "model"  # the model's config as it is: the first point of every report


@dataclass(frozen=True)
class Point:
    """The rule and the controller at one setting: per-lifetime scores, summarised."""

    axis: str  # an `Axis` name, or `BASE`
    value: float | None  # None for `BASE`
    steps: int
    learned: Summary
    reference: Summary
    difference: Summary  # learned - reference, paired per lifetime
    balanced_learned: float
    balanced_reference: float

    @property
    def share(self) -> float | None:
        """Mean learned score over mean reference score (None when the latter is 0)."""
        return self.learned.mean / self.reference.mean if self.reference.mean != 0 else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"axis": self.axis, "value": self.value, "steps": self.steps, "learned": self.learned.to_dict(),
                "reference": self.reference.to_dict(), "learned - reference": self.difference.to_dict(),
                "share": self.share, "balanced_fraction": {"learned": self.balanced_learned,
                                                           "reference": self.balanced_reference}}


def setting(config: Config, axis: str, value: float, steps: int) -> tuple[Config, int]:
    """``config`` with ``axis`` set to ``value``, and the lifetime's steps there (scaled for ``dt``)."""
    env = config.env
    if axis in PHYSICAL:
        names = [n for n in envs.env_class(env.name).param_defaults if n.rstrip("12") == axis]
        return config.replace(env=replace(env, params={**env.params, **dict.fromkeys(names, float(value))})), steps
    if axis == "dt":
        scale = env.mean_dt / value

        def steps_at(n: int) -> int:
            return max(min(n, 1), round(n * scale))  # 0 stays 0, else at least 1

        def scaled(n: int | None) -> int | None:
            return None if n is None else steps_at(n)

        switch = env.goal_switch
        switch = [steps_at(n) for n in switch] if isinstance(switch, list) else scaled(switch)  # a range: both ends
        env = replace(env, dt=float(value), goal_switch=switch, episode_steps=scaled(env.episode_steps))
        return config.replace(env=env), max(1, round(steps * scale))
    if axis == "obs_noise":
        return config.replace(env=replace(env, obs_noise=float(value))), steps
    if axis == "max_torque":
        return config.replace(env=replace(env, max_torque=float(value))), steps
    raise ValueError(f"unknown robustness axis {axis!r}; known: {', '.join(a.name for a in AXES)}")


def grid(config: Config, steps: int) -> list[tuple[str, float | None, Config, int]]:
    """Every point of the report: `BASE`, then each axis's values, as ``(axis, value, config, steps)``."""
    points: list[tuple[str, float | None, Config, int]] = [(BASE, None, config, steps)]
    for axis in AXES:
        for value in axis.values:
            points.append((axis.name, value, *setting(config, axis.name, value, steps)))
    return points


def evaluate_point(genome: torch.Tensor, layout: GenomeLayout, config: Config, *, keys: torch.Tensor, steps: int,
                   sizes: list[int] | None = None, progress: ProgressFn | None = None) -> tuple[torch.Tensor, ...]:
    """Scores ``(N,)`` of the rule and the controller on ``keys (N,)`` (mean over the goals of a hidden-goal
    task) and their balanced lifetimes ``(N,)`` (goal +1 only for a hidden goal)."""
    goals = goals_of(config)
    configs = [config] if goals is None else [config.replace(env=replace(config.env, goal=g)) for g in goals]
    n = keys.shape[0]
    links = envs.env_class(config.env.name).links
    genomes = genome.to(keys.device).expand(n, -1).contiguous()
    scores: dict[str, list[torch.Tensor]] = {"learned": [], "reference": []}
    balanced: dict[str, torch.Tensor] = {}
    for i, cfg in enumerate(configs):
        states = torch.zeros(n, steps, 2 * links, dtype=genomes.dtype, device=keys.device)
        total, _ = run_lifetimes(genomes, layout, cfg, keys, steps=steps, sizes=sizes, progress=progress,
                                 states=states)
        ref_total, _, ref_states = run_reference(make_env(cfg, keys), steps, keys)
        if progress is not None:
            progress(n * steps)
        scores["learned"].append(total.cpu())
        scores["reference"].append(ref_total.cpu())
        if i == 0:  # goal +1 (the first of `goals_of`), or the task's only goal
            balanced = {"learned": balanced_lifetimes(heights(states).cpu()),
                        "reference": balanced_lifetimes(heights(ref_states).cpu())}
    learned, reference = (torch.stack(scores[k]).mean(dim=0) for k in ("learned", "reference"))
    return learned, reference, balanced["learned"], balanced["reference"]


def run(genome: torch.Tensor, layout: GenomeLayout, config: Config, *, episodes: int, seed: int,
        steps: int | None = None, sizes: list[int] | None = None, device: torch.device | str = "cpu",
        progress: ProgressFn | None = None) -> list[Point]:
    """The report: every point of `grid` on ``episodes`` held-out lifetimes of ``seed``."""
    if episodes < 2:
        raise ValueError(f"episodes must be >= 2, got {episodes}")
    steps = config.ga.lifetime_steps if steps is None else steps
    keys = evaluation_keys(seed, episodes).to(device)
    points = []
    for axis, value, cfg, n_steps in grid(config, steps):
        learned, reference, bal_l, bal_r = evaluate_point(genome, layout, cfg, keys=keys, steps=n_steps,
                                                          sizes=sizes, progress=progress)
        points.append(Point(axis, value, n_steps, Summary.of(learned), Summary.of(reference),
                            Summary.of(learned - reference), float(bal_l.mean()), float(bal_r.mean())))
    return points


def work(config: Config, steps: int) -> tuple[int, int]:
    """Lifetimes per episode over the whole report (rule and controller, every goal) and the longest lifetime."""
    goals = len(goals_of(config) or (1,))
    points = grid(config, steps)
    return 2 * goals * len(points), max(n for *_, n in points)


def format_table(points: list[Point], *, hidden_goal: bool) -> str:
    """The report as a readable table."""
    head = (f"{'axis':<11}{'value':>8}{'steps':>7}{'learned [95% CI]':>28}{'reference [95% CI]':>28}"
            f"{'share':>8}{'balanced':>10}{'ref bal':>9}")
    lines = [head]
    for p in points:
        value = "" if p.value is None else f"{p.value:g}"
        cells = []
        for s in (p.learned, p.reference):
            lo, hi = s.ci95
            cells.append(f"{f'{s.mean:.1f} [{lo:.1f}, {hi:.1f}]':>28}")
        share = "n/a" if p.share is None else f"{p.share:.3f}"
        lines.append(f"{p.axis:<11}{value:>8}{p.steps:>7}{cells[0]}{cells[1]}{share:>8}"
                     f"{p.balanced_learned:>10.3f}{p.balanced_reference:>9.3f}")
    goal = " (mean of the two goals)" if hidden_goal else ""
    lines.append(f"score = reward summed over the lifetime{goal}; share = learned / reference; balanced = share of "
                 f"{'goal +1 ' if hidden_goal else ''}lifetimes above 0.9 of the maximum height for >= 90% of the "
                 f"last quarter; each axis varied alone from the model's config (dt: steps scaled to the same "
                 f"simulated time)")
    return "\n".join(lines)


def to_dict(points: list[Point]) -> dict[str, Any]:
    """The JSON form: the axes and every point."""
    return {"axes": {a.name: {"label": a.label, "values": list(a.values)} for a in AXES},
            "points": [p.to_dict() for p in points]}


def heatmap_figure(points: list[Point], *, title: str = "") -> Figure:
    """A heat map: one row per axis (and the model's config), one cell per point, coloured by the share
    (learned / reference) and labelled with the value, the share and the balanced fraction."""
    rows = [BASE, *(a.name for a in AXES)]
    labels = {BASE: "model config", **{a.name: a.label for a in AXES}}
    width = max(len(a.values) for a in AXES)
    share = np.full((len(rows), width), np.nan)
    fig = Figure(figsize=(2.0 + 1.6 * width, 1.0 + 0.75 * len(rows)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    texts = []
    for p in points:
        r = rows.index(p.axis)
        c = 0 if p.axis == BASE else next(a for a in AXES if a.name == p.axis).values.index(p.value)
        shown = p.share if p.share is not None and math.isfinite(p.share) else np.nan
        share[r, c] = shown
        value = "as trained" if p.value is None else f"{p.value:g}"
        ratio = "n/a" if p.share is None else f"{p.share:.2f}x"
        texts.append((c, r, f"{value}\n{ratio}, {100 * p.balanced_learned:.0f}% bal."))
    image = ax.imshow(np.ma.masked_invalid(share), cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    for c, r, text in texts:
        ax.text(c, r, text, ha="center", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [labels[r] for r in rows])
    ax.set_xticks([])
    fig.colorbar(image, ax=ax, label="learned / reference controller")
    ax.set_title(title or "robustness: the rule against the controller, one axis at a time", fontsize=10)
    fig.tight_layout()
    return fig
