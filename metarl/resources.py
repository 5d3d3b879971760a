"""What a run needs from the machine, checked before any work: memory and a step that is not slow.

`estimate` adds up the population (the genomes, and the copies the GA makes while
breeding and checkpointing) and the lifetime state of the individuals that live at the
same time (the actor's weights, biases, noise scales and activations, every rule cell's
state and the rule step's temporaries, the expanded genome): on CPU a chunk of
individuals at a time, on CUDA the whole population. `check` refuses a run that does not
fit in the memory available to this process (or on the device) unless ``allow_large``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .backends.native import MAX_LAYERS as MAX_NATIVE_LAYERS
from .config import Config
from .core.genome import layout_of
from .errors import UserError

FLOAT = 4  # bytes; the population and lifetimes are float32
# Copies of the population alive at the peak of a generation: the population, the parents,
# the mutation's uniform draws, mask, noise and masked noise, the sum and the concatenated
# next population, and the checkpoint's serialised bytes (twice).
POPULATION_COPIES = 10
NATIVE_CPU_CHUNK = 2048  # `metarl.backends.lifetime.DEFAULT_NATIVE_CHUNK`
TORCH_CPU_CHUNK = 1024  # the largest automatic chunk of the torch steps on CPU
PROCESS = 300 * 2**20  # the interpreter with torch and metarl loaded (measured: 221 MiB)
# Drawing a weight takes int64 hashes (`metarl.core.rng`): about 10 floats' worth at the peak, for a moment.
INIT_DRAW_FLOATS = 10
# CMA-ES (pycma, float64): measured peaks (tracemalloc, 1,368 genes, 8 and 200 samples, a tell and a checkpoint)
# of 10-12 genes x genes matrices with the full covariance (C, its eigenvectors B, the eigendecomposition's
# copies, the rank-mu update, the checkpoint's copies) and 21-30 samples x genes arrays with either.
CMA_MATRICES = 12
CMA_SAMPLE_COPIES = 32
DOUBLE = 8


class ResourceError(UserError):
    """A run that cannot fit in this machine's memory, or would run on a much slower step."""


@dataclass(frozen=True)
class Estimate:
    """Bytes a run needs in host memory and on its CUDA device (0 on CPU)."""

    host: int
    device: int
    population: int  # of which: the population and its copies (host)
    lifetimes: int  # of which: the lifetime state (host on CPU, device on CUDA)
    alive: int  # individuals whose lifetimes run at the same time
    searcher: int = 0  # of which: CMA-ES's state (host; 0 for the GA)


def lifetime_floats(config: Config) -> tuple[int, int]:
    """Floats of one individual's lifetime: the state kept from step to step, and the torch
    step's temporaries.

    Kept: the actor (W, b, sigma, s, z, y) and every cell's state, each in the two layouts a
    lifetime holds while it starts (population-major, then feature-major), the transient
    integer hashes that draw the initial weights, and copies of the genome. Temporaries: the
    edge and node cells' inputs, new states and outputs while a layer is updated.
    """
    sizes = config.layer_sizes
    h = config.rule.state_dim
    edges = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    neurons = sum(sizes[1:])
    layout = layout_of(config)
    genome = layout.size
    actor = edges + 6 * neurons
    states = h * (edges + neurons + sizes[-1])
    draws = INIT_DRAW_FLOATS * (edges + neurons)
    kept = 2 * (actor + states) + draws + 3 * genome + 64
    edge, node = layout.cells["connection_network"], layout.cells["node_network"]
    work = edges * (edge.inputs + 2 * h + edge.outputs) + neurons * (node.inputs + 2 * h + node.outputs)
    return kept, work


def estimate(config: Config, device: torch.device) -> Estimate:
    """Memory a run of ``config`` on ``device`` needs at its peak (an estimate, on the high side).

    On CPU the native kernel, when the config allows it, needs no per-individual temporaries.
    """
    pop = config.ga.population_size
    genes = layout_of(config).size
    population = POPULATION_COPIES * pop * genes * FLOAT + 64 * pop  # + fitness, keys, ranks
    searcher = searcher_bytes(config)
    kept, work = lifetime_floats(config)
    if device.type == "cuda":
        lifetimes = pop * (kept + work) * FLOAT
        return Estimate(PROCESS + population + searcher, lifetimes + 2 * pop * genes * FLOAT, population, lifetimes,
                        pop, searcher)
    native = config.runtime.native is not False and len(config.layer_sizes) - 1 <= MAX_NATIVE_LAYERS
    alive = min(pop, config.runtime.chunk_size or (NATIVE_CPU_CHUNK if native else TORCH_CPU_CHUNK))
    lifetimes = alive * (kept + (0 if native else work)) * FLOAT
    return Estimate(PROCESS + population + lifetimes + searcher, 0, population, lifetimes, alive, searcher)


def searcher_bytes(config: Config) -> int:
    """Host memory of the searcher's own state beyond the population: CMA-ES's (float64) samples and, with the
    full covariance, its genes x genes matrices; 0 for the GA."""
    if config.search.name != "cma":
        return 0
    genes = layout_of(config).size
    matrices = 0 if config.search.diagonal else CMA_MATRICES * genes * genes
    return (matrices + CMA_SAMPLE_COPIES * config.ga.population_size * genes) * DOUBLE


def available_memory() -> tuple[int, str]:
    """Bytes this process may allocate, and where the number comes from: the smallest of
    ``MemAvailable`` (/proc/meminfo; else the physical memory), a cgroup limit and what the
    process's address-space limit (``ulimit -v``, RLIMIT_AS) leaves beyond what it maps already."""
    limit, source = _system_memory()
    room = _address_space_left()
    if room is not None and room < limit:
        limit, source = room, "the address-space limit (ulimit -v) less what this process maps"
    return limit, source


def _address_space_left() -> int | None:
    """RLIMIT_AS minus this process's current virtual size, or None without a limit."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    mapped = 0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                mapped = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return max(0, soft - mapped)


def _system_memory() -> tuple[int, str]:
    limit, source = _physical_memory()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limit, source = int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, ValueError, IndexError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            cgroup = int(Path(path).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if cgroup < limit:
            limit, source = cgroup, f"the cgroup limit {path}"
    return limit, source


def _physical_memory() -> tuple[int, str]:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "physical memory"
    except (ValueError, OSError, AttributeError):
        return 2**63 - 1, "unknown"


def device_memory(device: torch.device) -> int:
    """Free bytes on a CUDA ``device``."""
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


def device_of(config: Config) -> torch.device:
    """The device a run of ``config`` will use (as `metarl.config.resolve_device`, without its warning)."""
    if config.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda" if config.device == "auto" else config.device)


def check(config: Config, device: torch.device, *, allow_large: bool = False) -> Estimate:
    """Refuse (`ResourceError`, one line) a run that would not fit in memory (unless
    ``allow_large``) or whose actor is too deep for the native kernel while ``runtime.native``
    is left to choose (null); returns the estimate."""
    layers = len(config.layer_sizes) - 1
    if device.type == "cpu" and config.runtime.native is None and layers > MAX_NATIVE_LAYERS:
        raise ResourceError(
            f"actor.hidden: {layers - 1} hidden layers make {layers} layers, more than the native kernel's "
            f"{MAX_NATIVE_LAYERS}; the torch step runs them many times slower. Set runtime.native: false to "
            f"run them anyway, or use at most {MAX_NATIVE_LAYERS - 1} hidden layers")
    est = estimate(config, device)
    if allow_large:
        return est
    limit, source = available_memory()
    genes = layout_of(config).size
    parts = (f"population {config.ga.population_size} x {genes} genes: {_size(est.population)}; "
             f"lifetimes of {est.alive} individuals at a time: {_size(est.lifetimes)}")
    reduce = "reduce ga.population_size, actor.hidden or the rule sizes"
    if est.searcher:
        full = not config.search.diagonal
        parts += f"; CMA-ES's state{f' (covariance {genes} x {genes}, float64)' if full else ''}: " \
                 f"{_size(est.searcher)}"
        reduce = f"set search.diagonal: true, {reduce}" if full else reduce
    if est.host > limit:
        raise ResourceError(f"memory: the run needs about {_size(est.host)} ({parts}) but {_size(limit)} is "
                            f"available ({source}); {reduce}, or pass --allow-large to try anyway")
    if device.type == "cuda":
        free = device_memory(device)
        if est.device > free:
            raise ResourceError(f"memory: the run needs about {_size(est.device)} on {device} ({parts}) but "
                                f"{_size(free)} is free there; reduce ga.population_size, actor.hidden or the "
                                f"rule sizes, or pass --allow-large to try anyway")
    return est


def _brief(sizes: list[int]) -> str:
    text = str(sizes)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(sizes)} layers)"


def _size(n: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n / 2**10:.3g} KiB"


# Work guards outside training (show_results): beyond these a job needs --allow-large. Work is counted in
# multiply-adds of the actor and the rule cells (`step_cost`); the native kernel does ~10^10 a second on a few
# cores, the torch step and large actors (memory-bound) 10 to 100 times fewer, so 10^13 is from a quarter of an
# hour to hours. A replay steps one actor in Python at ~10^4 steps/s (and draws), so 10^6 steps is minutes.
MAX_WORK = 10**13
MAX_REPLAY_STEPS = 10**6


def step_cost(config: Config, sizes: list[int]) -> int:
    """Multiply-adds of one individual's step on an actor of ``sizes``: the forward pass, the connection cell
    on every edge, the node cell on every neuron and the reward cell."""
    cells = layout_of(config).cells
    edges = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    neurons = sum(sizes[1:])

    def macs(name: str) -> int:
        c = cells[name]
        return (c.inputs + c.state) * (c.state + c.outputs)

    return edges * (1 + macs("connection_network")) + neurons * macs("node_network") + macs("reward_network")


def check_lifetimes(config: Config, sizes: list[int], *, lifetimes: int, steps: int, what: str,
                    traced_floats_per_step: int = 0, replay: bool = False, allow_large: bool = False,
                    reduce: str = "--episodes, --steps or --hidden") -> int:
    """Refuse (`ResourceError`, one line naming the figure and ``--allow-large``) a job of ``lifetimes``
    lifetimes of ``steps`` steps on an actor of ``sizes`` that would not fit in memory, or would take
    hours: the same estimate as `check`, for the lifetimes of evaluation, rescoring, plots and replays.
    ``traced_floats_per_step``: floats kept per lifetime and step (rewards, states, heights); ``reduce``: the
    options that make the job smaller. Returns the estimated bytes."""
    work = lifetimes * steps * step_cost(config, sizes)
    if replay and steps > MAX_REPLAY_STEPS and not allow_large:
        raise ResourceError(f"work: {what} steps one actor {steps} times, more than {MAX_REPLAY_STEPS:.0e} "
                            f"(hours in a replay); use --steps <= {MAX_REPLAY_STEPS}, or pass --allow-large to "
                            f"try anyway")
    if work > MAX_WORK and not allow_large:
        raise ResourceError(f"work: {what} needs about {work:.3g} multiply-adds ({lifetimes} lifetimes x {steps} "
                            f"steps on actor {_brief(sizes)}), more than {MAX_WORK:.0e} (hours); reduce {reduce}, or "
                            f"pass --allow-large to try anyway")
    shaped = config.replace(actor=replace(config.actor, hidden=list(sizes[1:-1])),
                            ga=replace(config.ga, population_size=max(1, lifetimes)))
    est = estimate(shaped, device_of(config))
    traced = lifetimes * steps * traced_floats_per_step * 8
    genes = layout_of(config).size
    # The lifetimes that run at once, the genomes (a copy per lifetime, twice) and what is kept per step;
    # not the population copies of a GA step.
    need = PROCESS + est.lifetimes + est.device + traced + 2 * lifetimes * genes * FLOAT
    if not allow_large:
        limit, source = available_memory()
        if need > limit:
            raise ResourceError(f"memory: {what} needs about {_size(need)} (lifetimes of {est.alive} individuals "
                                f"at a time on actor {sizes}: {_size(est.lifetimes)}; kept per step: "
                                f"{_size(traced)}) but {_size(limit)} is available ({source}); reduce {reduce}, or "
                                f"pass --allow-large to try anyway")
    return need


