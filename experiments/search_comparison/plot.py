"""The search comparison's figure and table: best and mean fitness against individual-steps, per run.

    python3 experiments/search_comparison/plot.py      # writes curves.png, prints the README's table

Reads ``runs/<name>/{config.yaml,log.csv}`` and, where present, ``eval_<name>.json`` (the held-out
evaluation of the run's final best, ``show_results.py RUN/best_model.yaml --evaluate --json``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository's metarl, from any folder
from metarl import config  # noqa: E402
from metarl.runs import io  # noqa: E402

# run folder -> (searcher, seed); one colour per searcher, one line style per seed
RUNS = {"ga": ("GA", 0), "ga_seed1": ("GA", 1), "sep_cma": ("sep-CMA-ES (diagonal)", 0),
        "sep_cma_seed1": ("sep-CMA-ES (diagonal)", 1), "cma": ("CMA-ES (full covariance)", 0)}
COLOURS = {"GA": "tab:blue", "sep-CMA-ES (diagonal)": "tab:orange", "CMA-ES (full covariance)": "tab:green"}


def curves() -> dict[str, tuple[list[float], list[dict[str, float]]]]:
    """Per run: individual-steps after each generation, and the log rows."""
    out = {}
    for name in RUNS:
        run = HERE / "runs" / name
        if not (run / "log.csv").is_file():
            continue
        g = config.from_dict(config.read_yaml(run / "config.yaml")).ga
        per_generation = g.population_size * g.lifetime_steps * g.evals_per_individual
        rows = io.read_log(run / "log.csv")
        out[name] = ([(int(r["generation"]) + 1) * per_generation for r in rows], rows)
    return out


SMOOTH = 10


def running_mean(values: list[float], width: int = SMOOTH) -> list[float]:
    """Mean of the last ``width`` values at each point (fewer at the start)."""
    return [sum(values[max(0, i + 1 - width):i + 1]) / (i + 1 - max(0, i + 1 - width)) for i in range(len(values))]


def window_mean(rows: list[dict[str, float]], key: str, last: int = 25) -> float:
    """Mean of ``key`` over the last ``last`` generations (one generation's value is noisy)."""
    values = [r[key] for r in rows[-last:]]
    return sum(values) / len(values)


def main() -> None:
    data = curves()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for name, (steps, rows) in data.items():
        searcher, seed = RUNS[name]
        millions = [s / 1e6 for s in steps]
        for ax, key in zip(axes, ("best", "mean"), strict=True):
            values = [r[key] for r in rows]
            ax.plot(millions, values, color=COLOURS[searcher], lw=0.5, alpha=0.25)
            ax.plot(millions, running_mean(values), color=COLOURS[searcher], ls="-" if seed == 0 else "--", lw=1.4,
                    label=f"{searcher}, seed {seed}")
    titles = ("best of the generation", "mean of the generation")
    for ax, what in zip(axes, (f"{t} (faint; bold: mean of {SMOOTH} generations)" for t in titles), strict=True):
        ax.set_xlabel("individual-steps (millions)")
        ax.set_title(what)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fitness (summed height, 500-step lifetime)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "curves.png", dpi=110)
    print("| searcher | seed | individual-steps | best (last 25 gen.) | mean (last 25 gen.) | best ever | "
          "final best, held-out [95% CI] |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, (steps, rows) in data.items():
        searcher, seed = RUNS[name]
        held_out = "-"
        if (HERE / f"eval_{name}.json").is_file():
            learned = json.loads((HERE / f"eval_{name}.json").read_text())["conditions"]["learned"]
            held_out = f"{learned['mean']:.1f} [{learned['ci95'][0]:.1f}, {learned['ci95'][1]:.1f}]"
        print(f"| {searcher} | {seed} | {steps[-1] / 1e6:.0f}M | {window_mean(rows, 'best'):.1f} | "
              f"{window_mean(rows, 'mean'):.1f} | {rows[-1]['best_ever']:.1f} | {held_out} |")

if __name__ == "__main__":
    main()
