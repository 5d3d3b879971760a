"""Matplotlib figures: live replay panels, the lifetime summary, fitness curves of runs.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through
pyplot, so they render off screen under any backend (to an RGB array for pygame and GIFs,
or to a file). A caller that wants a window passes a pyplot figure as ``fig``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import cast

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..core.actor import ActorState
from ..errors import UserError
from ..runs.io import atomic_write_bytes
from .evaluation import Z95, LifetimeSample

PARAMS = ("weights", "biases", "sigmas")
BINS = 40
# Figures are laid out for this many pixels of height; other sizes scale the dpi so that
# text keeps its proportion to the panels.
BASE_HEIGHT = 480
LEARNED_COLOR = "tab:blue"
BASELINE_COLOR = "tab:gray"
# The replay panels' y-limits, once exceeded, grow to this multiple of the data's span (fewer full redraws).
GROWTH = 1.5


def figure_to_array(fig: Figure, size: tuple[int, int] | None = None) -> np.ndarray:
    """Render ``fig`` with Agg to ``(H, W, 3)`` uint8; ``size=(H, W)`` crops/pads to exactly that."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return canvas_to_array(canvas, size)


def canvas_to_array(canvas: FigureCanvasAgg, size: tuple[int, int] | None = None) -> np.ndarray:
    """What ``canvas`` holds now as ``(H, W, 3)`` uint8 (no drawing); ``size=(H, W)`` crops/pads to exactly that."""
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    if size is None:
        return rgb.copy()
    # figsize * dpi can round one pixel short; pad with white rather than fail.
    out = np.full((*size, 3), 255, dtype=np.uint8)
    h, w = min(size[0], rgb.shape[0]), min(size[1], rgb.shape[1])
    out[:h, :w] = rgb[:h, :w]
    return out


def figure_format(path: str | Path) -> str:
    """The image format of ``path`` from its extension; `UserError` if matplotlib cannot write it."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    supported = FigureCanvasAgg(Figure()).get_supported_filetypes()
    if fmt not in supported:
        raise UserError(f"{path}: unsupported figure format {fmt or '(no extension)'!r}; "
                        f"use one of {', '.join(sorted(supported))}")
    return fmt


def save_figure(fig: Figure, path: str | Path) -> None:
    """Write ``fig`` atomically (creating missing folders); the format comes from the extension."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=figure_format(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror})") from None


def pixel_figure(width: int, height: int) -> Figure:
    """A figure of exactly ``width x height`` pixels with text scaled to its height."""
    dpi = 100.0 * height / BASE_HEIGHT
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _agg_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def actor_values(actor: ActorState, which: str) -> np.ndarray:
    """All ``weights``, ``biases`` or ``sigmas`` of ``actor``, pooled over layers and individuals."""
    tensors = getattr(actor, which)
    return torch.cat([t.detach().reshape(-1) for t in tensors]).double().cpu().numpy()


def param_ranges(weight_limit: float, sigma_limit: float) -> dict[str, tuple[float, float]]:
    """Histogram ranges: the clipping limits of the rule's updates."""
    sigma_hi = sigma_limit if sigma_limit > 0 else 1.0
    return {"weights": (-weight_limit, weight_limit), "biases": (-weight_limit, weight_limit),
            "sigmas": (0.0, sigma_hi)}


def panel_axes(fig: Figure) -> dict[str, Axes]:
    """Reward and cumulative reward on top, one histogram per actor parameter below."""
    grid = fig.add_gridspec(2, 6, height_ratios=(1.1, 1.0))
    axes = {"reward": fig.add_subplot(grid[0, :3]), "cumulative": fig.add_subplot(grid[0, 3:])}
    for i, name in enumerate(PARAMS):
        axes[name] = fig.add_subplot(grid[1, 2 * i:2 * i + 2])
    return axes


def _clipped(actor: ActorState, which: str, lo: float, hi: float) -> np.ndarray:
    # Initial weights may lie beyond the limit (the rule's first update clips them); count
    # them in the edge bins rather than dropping them from the histogram.
    return np.clip(actor_values(actor, which), lo, hi)


def _histograms(axes: dict[str, Axes], initial: ActorState, current: ActorState,
                ranges: dict[str, tuple[float, float]], *, current_label: str) -> None:
    for name in PARAMS:
        ax = axes[name]
        lo, hi = ranges[name]
        ax.hist(_clipped(current, name, lo, hi), bins=BINS, range=(lo, hi), color=LEARNED_COLOR, alpha=0.65,
                label=current_label)
        ax.hist(_clipped(initial, name, lo, hi), bins=BINS, range=(lo, hi), histtype="step", color="black",
                linewidth=1.0, label="initial")
        ax.set_xlim(lo, hi)
        ax.set_title(f"actor {name}", fontsize="medium")
        ax.set_xlabel("value", fontsize="small")
        ax.tick_params(labelsize="x-small")
    axes["weights"].set_ylabel("count", fontsize="small")
    axes["weights"].legend(fontsize="x-small", loc="upper left")


class ReplayPanels:
    """Live panels of one lifetime of batch element 0, rendered to an RGB array by `update`.

    The axes and artists are built once per lifetime (`reset`) and only their data change
    afterwards: rebuilding them costs several times more than drawing them. Frames are blitted: the
    axes, ticks and titles (most of the drawing: text) are drawn only when a limit grows, and each frame
    redraws just the two curves and the histogram bars on that background. Limits grow with headroom
    (`GROWTH`): a 200-step replay of the swing-up model saved every 2 steps drew the whole figure for 24
    of its 101 frames instead of all of them.
    """

    def __init__(self, width: int, height: int, *, steps: int, weight_limit: float, sigma_limit: float
                 ) -> None:
        self.size = (height, width)
        self.steps = steps
        self.ranges = param_ranges(weight_limit, sigma_limit)
        self.fig = pixel_figure(width, height)
        self._initial: ActorState | None = None

    def reset(self, initial: ActorState, title: str = "") -> None:
        """Start a new lifetime whose actor begins as ``initial``."""
        self._initial = _first(initial)
        self.fig.clear()
        self.axes = panel_axes(self.fig)
        self.lines = {}
        for key, label in (("reward", "reward per step"), ("cumulative", "cumulative reward")):
            ax = self.axes[key]
            (self.lines[key],) = ax.plot([], [], color=LEARNED_COLOR, linewidth=1.2)
            ax.set_xlim(0, self.steps)
            ax.set_title(label, fontsize="medium")
            ax.set_xlabel("lifetime step", fontsize="small")
            ax.tick_params(labelsize="x-small")
            ax.grid(alpha=0.3)
        _histograms(self.axes, self._initial, self._initial, self.ranges, current_label="now")
        self.bars = {name: cast(BarContainer, self.axes[name].containers[0]) for name in PARAMS}
        self.initial_peak = {name: max(patch.get_height() for patch in self.bars[name].patches) for name in PARAMS}
        self.fig.suptitle(title, fontsize="medium")
        self.fig.subplots_adjust(left=0.08, right=0.98, bottom=0.1, top=0.88, hspace=0.55, wspace=0.9)
        self.dynamic = [*((self.axes[k], line) for k, line in self.lines.items()),
                        *((self.axes[name], p) for name in PARAMS for p in self.bars[name].patches)]
        for _, artist in self.dynamic:
            artist.set_animated(True)
        self.limits: dict[str, tuple[float, float]] = {}
        self._background = None

    def update(self, rewards: list[float], actor: ActorState) -> np.ndarray:
        """Redraw from the rewards so far and the current actor; returns ``(H, W, 3)`` uint8."""
        if self._initial is None:
            raise RuntimeError("call reset() before update()")
        r = np.asarray(rewards, dtype=float)
        t = np.arange(1, len(r) + 1)
        for key, y in (("reward", r), ("cumulative", np.cumsum(r))):
            self.lines[key].set_data(t, y)
            if len(y):
                lo, hi = min(0.0, float(y.min())), max(1e-3, float(y.max()))
                if key == "cumulative":  # room for the rest of the lifetime at the pace so far
                    ahead = max(1.0, self.steps / len(y))
                    lo, hi = lo * ahead, hi * ahead
                self._fit(key, lo, hi)
        current = _first(actor)
        for name in PARAMS:
            lo, hi = self.ranges[name]
            counts, _ = np.histogram(_clipped(current, name, lo, hi), bins=BINS, range=(lo, hi))
            for patch, count in zip(self.bars[name].patches, counts, strict=True):
                patch.set_height(count)
            self._fit(name, 0.0, float(max(counts.max(), self.initial_peak[name], 1)))
        canvas = cast(FigureCanvasAgg, self.fig.canvas)
        if self._background is None:  # the axes changed: draw everything but the data, once
            canvas.draw()
            self._background = canvas.copy_from_bbox(self.fig.bbox)
        canvas.restore_region(self._background)
        for ax, artist in self.dynamic:
            ax.draw_artist(artist)
        return canvas_to_array(canvas, self.size)

    def _fit(self, key: str, lo: float, hi: float) -> None:
        """Widen axis ``key``'s y-limits, with headroom, if ``[lo, hi]`` no longer fits (then redraw the axes)."""
        old = self.limits.get(key)
        if old is not None and old[0] <= lo and hi <= old[1]:
            return
        span = hi - lo
        new = (lo - (GROWTH - 1) * span if lo < 0 else lo, hi + (GROWTH - 1) * span if hi > 0 else hi)
        if old is not None:
            new = (min(new[0], old[0]), max(new[1], old[1]))
        self.limits[key] = new
        self.axes[key].set_ylim(*new)
        self._background = None


def _first(actor: ActorState) -> ActorState:
    """Batch element 0 of ``actor`` (shapes keep a population dimension of 1)."""
    return ActorState(*([t[:1] for t in ts] for ts in (actor.weights, actor.biases, actor.sigmas, actor.sums,
                                                        actor.samples, actor.outputs)))


def _band(ax: Axes, values: np.ndarray, *, color: str, label: str) -> None:
    """Mean of ``values (N, T)`` with a std band (light) and a 95% CI band (dark)."""
    t = np.arange(1, values.shape[1] + 1)
    mean, std = values.mean(axis=0), values.std(axis=0, ddof=1) if values.shape[0] > 1 else 0 * values[0]
    half = Z95 * std / np.sqrt(values.shape[0])
    ax.fill_between(t, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)
    ax.fill_between(t, mean - half, mean + half, color=color, alpha=0.35, linewidth=0)
    ax.plot(t, mean, color=color, linewidth=1.3, label=label)


def summary_figure(sample: LifetimeSample, baseline: LifetimeSample | None = None, *, weight_limit: float,
                   sigma_limit: float, title: str = "", fig: Figure | None = None) -> Figure:
    """Reward and cumulative reward against lifetime step (mean, std and 95% CI bands over the
    lifetimes of ``sample``, and of ``baseline`` if given), and initial vs final actor histograms."""
    fig = fig if fig is not None else _agg_figure(12, 7.5)
    axes = panel_axes(fig)
    n = sample.rewards.shape[0]
    runs = [(sample, LEARNED_COLOR, "learned rule")]
    if baseline is not None:
        runs.append((baseline, BASELINE_COLOR, "no plasticity"))
    for s, color, label in runs:
        r = s.rewards.double().cpu().numpy()
        _band(axes["reward"], r, color=color, label=label)
        _band(axes["cumulative"], np.cumsum(r, axis=1), color=color, label=label)
    for key, label in (("reward", "reward per step"), ("cumulative", "cumulative reward")):
        ax = axes[key]
        ax.set_title(label, fontsize="medium")
        ax.set_ylabel(f"mean of {n} lifetimes", fontsize="small")
        ax.set_xlabel("lifetime step", fontsize="small")
        ax.set_xlim(1, sample.rewards.shape[1])
        ax.tick_params(labelsize="x-small")
        ax.grid(alpha=0.3)
    axes["reward"].legend(fontsize="x-small", loc="best")
    _histograms(axes, sample.initial, sample.final, param_ranges(weight_limit, sigma_limit),
                current_label="final")
    bands = "light band: mean \u00b1 1 std of the lifetimes; dark band: 95% CI of the mean"
    fig.suptitle(f"{title}\n{bands}" if title else bands, fontsize="medium")
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.88, hspace=0.45, wspace=0.9)
    return fig


# best_ever first and wider, so that `best` stays visible where the two coincide.
RUN_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def runs_figure(groups: list[tuple[str, list[list[dict[str, float]]]]], *, title: str = "",
                fig: Figure | None = None) -> Figure:
    """Several runs in one figure: per group (runs that differ only in seed), the mean over its
    seeds of the population's mean fitness (solid) and of the best (dashed), each with the range
    over the seeds shaded. ``groups``: ``(label, [log rows of each run])``; runs of a group are cut
    to the generations they all have."""
    fig = fig if fig is not None else _agg_figure(9, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    for i, (label, runs) in enumerate(groups):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        length = min(len(rows) for rows in runs)
        gens = np.array([row["generation"] for row in runs[0][:length]])
        seeds = f" ({len(runs)} seeds)" if len(runs) > 1 else ""
        for key, style, alpha in (("mean", "-", 0.25), ("best", "--", 0.12)):
            values = np.array([[row[key] for row in rows[:length]] for rows in runs])
            ax.plot(gens, values.mean(0), color=color, linestyle=style, linewidth=1.5,
                    label=f"{label}{seeds}: {key}")
            if len(runs) > 1:
                ax.fill_between(gens, values.min(0), values.max(0), color=color, alpha=alpha, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness (reward summed over a lifetime)")
    ax.set_title(title or "fitness: mean over seeds, shaded: range over seeds")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig


CURVES = (("best_ever", "black", ":", 2.2), ("best", "tab:blue", "-", 1.4), ("mean", "tab:orange", "-", 1.4),
          ("median", "tab:green", "--", 1.4))


LEVEL_STYLES = ((BASELINE_COLOR, (0, (4, 3))), ("tab:brown", (0, (1, 2))), ("black", (0, (6, 2, 1, 2))))


def fitness_curve_figure(rows: list[dict[str, float]], *, title: str = "", fig: Figure | None = None,
                         levels: dict[str, float] | None = None) -> Figure:
    """Best, mean, median and best-ever fitness against generation, from a run's log rows; ``levels`` (label ->
    fitness) drawn as horizontal lines (the baselines: a random actor, random rules)."""
    fig = fig if fig is not None else _agg_figure(9, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    gens = [row["generation"] for row in rows]
    marker = "o" if len(rows) <= 30 else None
    for key, color, style, width in CURVES:
        if all(key in row for row in rows):
            ax.plot(gens, [row[key] for row in rows], color=color, linestyle=style, linewidth=width,
                    marker=marker, markersize=3, label=key.replace("_", " "))
    for (label, value), (level_color, dash) in zip((levels or {}).items(), LEVEL_STYLES, strict=False):
        ax.axhline(value, color=level_color, linestyle=dash, linewidth=1.2, label=f"{label}: {value:.1f}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness (reward summed over a lifetime)")
    ax.set_title(title or "fitness")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


HEIGHT_CURVES = (("reference", "black", "--"), ("learned", LEARNED_COLOR, "-"),
                 ("reward_zeroed", "tab:purple", ":"), ("reward_shuffled", "tab:brown", "-."),
                 ("no_plasticity", BASELINE_COLOR, "-"))


def height_curve_figure(curves: dict[str, torch.Tensor], *, goals: tuple[int, ...] | None = None, title: str = "",
                        fig: Figure | None = None) -> Figure:
    """Mean height per link against lifetime step for each evaluation condition (``curves``: name ->
    ``(len(goals), T)``); with hidden goals, goal +1 solid and goal -1 dotted."""
    fig = fig if fig is not None else _agg_figure(9, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    labels = goals if goals is not None else (None,)
    for name, color, style in HEIGHT_CURVES:
        if name not in curves:
            continue
        for row, goal in zip(curves[name].double().cpu().numpy(), labels, strict=True):
            label = name.replace("_", " ") + ("" if goal is None else f", goal {goal:+d}")
            ls = style if goal is None or goal > 0 else ":"
            ax.plot(np.arange(1, row.shape[0] + 1), row, color=color, linestyle=ls, linewidth=1.4, label=label)
    ax.set_xlabel("lifetime step")
    ax.set_ylabel("mean height per link (0 hanging, 2 upright)")
    ax.set_ylim(-0.05, 2.05)
    ax.set_title(title or "height over the lifetime")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="x-small", ncol=2 if goals else 1)
    fig.tight_layout()
    return fig
