"""What a training run reports while it runs: progress on a terminal or in a log file, TensorBoard.

On a terminal, run_config.py shows tqdm bars and one line per generation. When stdout is
not a terminal (nohup, SLURM, a pipe) it writes one plain line per reported generation and
no bars, so a log file grows by one line per generation instead of every bar refresh.
``--quiet`` keeps only the start and end lines; ``--log-every N`` (``logging.every``)
reports every N-th generation, the first and the last. ``TQDM_DISABLE=1`` turns the bars off as in any tqdm program.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from ..backends.lifetime import ProgressFn
from ..errors import UserError
from ..evolve.trainer import INNER_PROGRESS_MIN, Hook

if TYPE_CHECKING:
    from ..evolve.trainer import GenerationResult, Trainer


def format_row(row: dict[str, float]) -> str:
    """One generation's log line (without the generation number)."""
    bad = f"  non-finite {int(row['nonfinite'])}" if row.get("nonfinite") else ""
    return (f"best {row['best']:9.3f}  mean {row['mean']:9.3f}  median {row['median']:9.3f}  "
            f"best ever {row['best_ever']:9.3f}  {row['individual_steps_per_s']:.3g} ind-steps/s{bad}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def bars_wanted() -> bool:
    """tqdm bars (on stderr) only when stdout and stderr are terminals and ``TQDM_DISABLE`` is not set."""
    if os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    return all(s is not None and hasattr(s, "isatty") and s.isatty() for s in (sys.stdout, sys.stderr))


class Progress(Hook):
    """Per-generation output of a run: bars and lines on a terminal, plain lines otherwise (a `Hook`).

    ``steps_per_generation``: individual-steps this process runs per generation (inner bar).
    """

    def __init__(self, *, total: int, initial: int, steps_per_generation: int, every: int = 1,
                 quiet: bool = False, enabled: bool = True, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.total, self.every, self.quiet, self.enabled = total, every, quiet, enabled
        self.steps_per_generation = steps_per_generation
        self.bars = enabled and not quiet and bars_wanted()
        self._start, self._initial = time.perf_counter(), initial
        self._bar = tqdm(total=total, initial=initial, desc="generations", unit="gen",
                         dynamic_ncols=True) if self.bars else None
        self._inner: tqdm | None = None

    def generation_begins(self, trainer: Trainer, generation: int) -> ProgressFn | None:
        """Hook: the inner bar's callback."""
        return self.generation_started(generation)

    def generation_ends(self, trainer: Trainer, result: GenerationResult) -> None:
        """Hook: the generation's line."""
        self.generation_done(result.row)

    def generation_started(self, generation: int) -> ProgressFn | None:
        """Called before a generation; returns the inner progress callback (individual-steps), if any."""
        if self._bar is None or self.steps_per_generation < INNER_PROGRESS_MIN:
            return None
        self._inner = tqdm(total=self.steps_per_generation, desc=f"gen {generation}", unit="ind-step",
                           unit_scale=True, leave=False, dynamic_ncols=True)
        return self._inner.update

    def generation_done(self, row: dict[str, float]) -> None:
        """Called after a generation with its log row."""
        self._close_inner()
        g = int(row["generation"])
        if self._bar is not None:
            self._bar.update(1)
        # The first generation of this process is always reported: it shows the run is working.
        due = g == self._initial or (g + 1) % self.every == 0 or g + 1 >= self.total
        if not self.enabled or self.quiet or not due:
            return
        if self._bar is not None:
            self._bar.write(f"gen {g:5d}  {format_row(row)}", file=self.stream)
            return
        done = g + 1 - self._initial
        elapsed = time.perf_counter() - self._start
        eta = elapsed / done * (self.total - g - 1) if done > 0 else 0.0
        print(f"gen {g:5d}/{self.total}  {format_row(row)}  elapsed {_duration(elapsed)}  eta {_duration(eta)}",
              file=self.stream, flush=True)

    def _close_inner(self) -> None:
        if self._inner is not None:
            self._inner.close()
            self._inner = None

    def close(self) -> None:
        """Close the bars (before any final message, so it starts on its own line)."""
        self._close_inner()
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class TensorBoardLog(Hook):
    """Scalars per generation and histograms of the population's genes, via `torch.utils.tensorboard`
    (a `Hook`)."""

    def __init__(self, log_dir: str | os.PathLike[str], *, histogram_every: int) -> None:
        writer_class = tensorboard_writer()
        self.writer = writer_class(log_dir=str(log_dir))
        self.histogram_every = histogram_every

    def generation_begins(self, trainer: Trainer, generation: int) -> ProgressFn | None:
        """Hook: the histogram of the genomes about to be evaluated."""
        self.population(trainer.state.population, generation)
        return None

    def generation_ends(self, trainer: Trainer, result: GenerationResult) -> None:
        """Hook: the scalars."""
        self.generation(result.row)

    def population(self, population: torch.Tensor, generation: int) -> None:
        """Histogram of every gene value of the population ``(P, G)`` about to be evaluated."""
        if generation % self.histogram_every == 0:
            self.writer.add_histogram("population/genes", population.float(), generation)

    def generation(self, row: dict[str, float]) -> None:
        """The generation's fitness statistics and throughput."""
        g = int(row["generation"])
        for key in ("best", "mean", "median", "worst", "best_ever"):
            self.writer.add_scalar(f"fitness/{key}", row[key], g)
        self.writer.add_scalar("throughput/individual_steps_per_s", row["individual_steps_per_s"], g)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


def tensorboard_writer() -> Any:
    """`torch.utils.tensorboard.SummaryWriter`; a one-line `UserError` when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("TensorBoard logging needs the tensorboard package: pip install tensorboard "
                        "(or pip install 'metarl[tensorboard]')") from None
    return SummaryWriter
