"""Sharding the population evaluation over processes launched by ``torchrun``.

Without torchrun's environment (``RANK``, ``WORLD_SIZE``, ...) everything runs in one
process and no process group is created. Under torchrun every process holds the whole
population, evaluates one contiguous shard of it (`shard_range`) and all-gathers the
fitness, so every process gets the full fitness vector and takes the same GA step.
Because an individual's lifetime depends only on (seed, generation, evaluation, global
index), the result equals a single-process run exactly. Only rank 0 writes files.

Each gather also carries a checksum of the population and the generation number, so
processes that drifted apart (a bug, or different library versions on different
machines) stop the run at once instead of silently producing a wrong result.

Failures: a collective that waits longer than ``METARL_DIST_TIMEOUT`` seconds (default
600; it only has to cover the difference in finishing time between processes, not a
whole generation) or loses its peer raises `DistributedError` (one line, no
traceback). torchrun stops the remaining processes with SIGTERM when one fails; they
print one line and stop like Ctrl-C. The checkpoint is written atomically by rank 0 after
every complete generation, so it always holds the last complete generation.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sys
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch

from ..backends import use_threads
from ..backends.lifetime import ProgressFn, evaluate
from ..config import Config, resolve_device, to_yaml
from ..errors import UserError
from ..runs.signals import Stopped
from .problem import LifetimeProblem, Problem
from .trainer import layout_of

TIMEOUT_ENV = "METARL_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(UserError):
    """The process group failed: a peer died, timed out or disagrees with this process."""


def shard_range(size: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of ``rank``'s contiguous shard; the first ``size % world_size`` shards get one more."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    base, extra = divmod(size, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting its variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def collective_timeout() -> timedelta:
    """How long a collective may wait for the other processes (``METARL_DIST_TIMEOUT`` seconds)."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise UserError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}")
    return timedelta(seconds=seconds)


def population_checksum(population: torch.Tensor) -> int:
    """52-bit hash of a CPU tensor's bytes (exact as a float64)."""
    data = population.detach().cpu().contiguous().view(torch.uint8).numpy()
    return int.from_bytes(hashlib.blake2b(data.data, digest_size=8).digest(), "little") >> 12


@dataclass
class Context:
    """Where this process stands: device, rank and world size."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None  # None: no process group (single process)
    _old_sigterm: Any = field(default=None, repr=False)

    @property
    def is_writer(self) -> bool:
        """Only rank 0 prints and writes files."""
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device:
        """Where tensors must live for collectives (NCCL: this GPU, gloo: CPU)."""
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def evaluator(self, config: Config) -> Problem:
        """This process's `Problem`: the whole population here, or under a process group this process's
        shard, gathered from all processes (`ShardedProblem`)."""
        if self.backend is None:
            return LifetimeProblem(config, self.device)
        return ShardedProblem(self, config)

    def _all_gather(self, tensor: torch.Tensor, what: str) -> list[torch.Tensor]:
        """All-gather a float64 CPU vector of equal length on every rank; returns CPU tensors."""
        import torch.distributed as dist

        local = tensor.to(self.comm_device)
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        try:
            dist.all_gather(parts, local)
        except RuntimeError as e:  # gloo/NCCL/store errors all derive from RuntimeError
            raise DistributedError(f"rank {self.rank}: lost contact with the other processes during {what} "
                                   f"({_first_line(e)}); the run folder keeps the last complete generation, "
                                   f"continue it with --resume") from None
        return [p.cpu() for p in parts]

    def _check_config(self, config: Config) -> None:
        """Fail before any work if the processes do not run the same config (e.g. ``seed: null``)."""
        text = to_yaml(config).encode()
        digest = int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 12
        seed = -1 if config.seed is None else config.seed
        parts = self._all_gather(torch.tensor([digest, seed], dtype=torch.float64), "start-up")
        digests = [int(p[0]) for p in parts]
        if len(set(digests)) > 1:
            seeds = [int(p[1]) for p in parts]
            hint = ("; with seed: null every process draws its own seed, so give one (seed: N or --seed N)"
                    if len(set(seeds)) > 1 else "; every process must read the same config and overrides")
            self._fail_together(f"the processes run different configs (seeds per rank: {seeds}){hint}")

    def _check_same(self, parts: list[torch.Tensor], width: int, generation: int) -> None:
        sums = [int(p[width]) for p in parts]
        gens = [int(p[width + 1]) for p in parts]
        if len(set(sums)) > 1 or len(set(gens)) > 1:
            self._fail_together(f"processes diverged at generation {generation}: generations {gens}, population "
                                f"checksums {sums} (one per rank); they must run identical code and library "
                                f"versions")

    def _fail_together(self, message: str) -> None:
        """A failure every rank detects at once: rank 0 reports it, the others exit quietly."""
        if self.is_writer:
            raise DistributedError(message)
        raise SystemExit(2)

    def close(self) -> None:
        """Tear down the process group, if any, and restore the SIGTERM handler."""
        if self.backend is None:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None
        self.backend = None


class ShardedProblem:
    """The population's fitness under a process group: each process evaluates its contiguous shard
    (`shard_range`) and all-gathers, with a checksum of the population and the generation number."""

    def __init__(self, ctx: Context, config: Config) -> None:
        self.ctx = ctx
        self.config = config
        self.layout = layout_of(config)

    def evaluate(self, genomes: torch.Tensor, *, seed: int, generation: int,
                 progress: ProgressFn | None = None) -> torch.Tensor:
        """Fitness ``(P,)`` of the whole population, the same on every process."""
        ctx = self.ctx
        pop = genomes.shape[0]
        start, stop = shard_range(pop, ctx.rank, ctx.world_size)
        width = -(-pop // ctx.world_size)  # every rank sends the largest shard's length
        mine = torch.full((width + 2,), float("nan"), dtype=torch.float64)
        if stop > start:
            mine[: stop - start] = evaluate(genomes[start:stop].to(ctx.device), self.layout, self.config,
                                            seed=seed, generation=generation, indices=torch.arange(start, stop),
                                            progress=progress).cpu()
        mine[width] = population_checksum(genomes)
        mine[width + 1] = generation
        parts = ctx._all_gather(mine, f"generation {generation}")
        ctx._check_same(parts, width, generation)
        return torch.cat([p[: b - a] for p, (a, b) in
                          zip(parts, (shard_range(pop, r, ctx.world_size) for r in range(ctx.world_size)),
                              strict=True)])


def setup(config: Config) -> Context:
    """This process's `Context`: single-process, or a joined process group under torchrun.

    Under torchrun it returns after every process has joined and checked that all run
    the same config (seed included), so rank 0 may start writing files.
    """
    if not launched():
        return Context(resolve_device(config.device))
    missing = [k for k in LAUNCH_ENV if k not in os.environ]
    if missing:
        raise UserError(f"distributed launch: environment variable(s) {', '.join(missing)} not set "
                        f"(start the script with torchrun)")
    import torch.distributed as dist

    if not dist.is_available():
        raise UserError("this PyTorch build has no torch.distributed; run without torchrun")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    wants_cuda = config.device == "auto" or config.device.startswith("cuda")
    if wants_cuda and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {local_rank} has no GPU (this machine has {torch.cuda.device_count()}); "
                            f"use --nproc_per_node <= the number of GPUs")
        # Each process takes the GPU of its local rank; an index in the config is ignored.
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = resolve_device(config.device), "gloo"
    use_threads(config.runtime.threads, default=max(1, _cpu_count() // max(1, local_world)))
    kwargs: dict[str, Any] = {"device_id": device} if backend == "nccl" else {}
    try:
        dist.init_process_group(backend, timeout=collective_timeout(), **kwargs)
    except RuntimeError as e:
        raise DistributedError(f"rank {rank}: could not join the process group ({_first_line(e)})") from None
    ctx = Context(device, rank, world, local_rank, local_world, backend)
    ctx._old_sigterm = _install_sigterm(rank)
    try:
        ctx._check_config(config)
    except BaseException:
        ctx.close()
        raise
    return ctx


def _install_sigterm(rank: int) -> Any:
    """Turn torchrun's SIGTERM (sent when another process fails) into a clean Ctrl-C-like stop."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: Any) -> None:
        fresh_line = "\n" if rank == 0 else ""  # rank 0 may be drawing a progress bar
        print(f"{fresh_line}rank {rank}: stopped by SIGTERM (the launcher stops all processes when one fails "
              f"or the job is cancelled)", file=sys.stderr, flush=True)
        raise Stopped(signum)

    return signal.signal(signal.SIGTERM, stop)


def _first_line(e: BaseException) -> str:
    """The gist of a backend error: its first sentence without the ``[file.cc:123]`` prefix."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if not lines:
        return e.__class__.__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", lines[0])
    return text.split(". ")[0].rstrip(".") or lines[0]


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
