#!/usr/bin/env python3
"""The CUDA path, measured: is it right, how fast is it, how much memory does it take.

    python3 bench/gpu_check.py                           # on a GPU machine (at most ~8 minutes)
    python3 bench/gpu_check.py --out docs/gpu_check_h200.json
    python3 bench/gpu_check.py --device cpu --tiny       # the same code on tiny sizes, in seconds

On ``--device`` (default ``cuda``) it runs, in this order:

1. Self-check: the spec and the compiled backend (its mathematics eagerly, then the compiled code)
   against the spec on the CPU in float64 (`metarl.backends.lifetime.self_check`): ``--lifetimes`` random
   genomes, 20 steps, tolerance 1e-4.
2. Score: the shipped swing-up model (``--model``) on ``--lifetimes`` held-out lifetimes (the keys
   and the ``learned`` condition of ``show_results.py --evaluate``) on each backend, against the same
   lifetimes on the CPU (native kernel, else the spec): the mean must lie in the CPU mean's 95% CI.
3. Throughput: individual-steps/s and peak GPU memory (``torch.cuda.max_memory_allocated``) of
   ``metarl.backends.lifetime.run_lifetimes`` at each of ``--populations`` for ``--steps`` steps, spec and
   compiled (compilation is a warm-up, not timed). Then each again with CUDA graphs: 10 steps recorded
   once and replayed (`StepGraph`); its fitness must match the plain run's. An out-of-memory is
   recorded as ``oom``, any other failure as ``error`` (with its traceback), and what does not fit in
   ``--budget`` seconds as ``skipped``. The native CPU kernel's rate on one thread is measured too,
   and every rate is given as a multiple of it.

Writes one JSON (``--out``) and prints a table. Exit status 0 when every check passed and every
measurement ran (or ran out of memory), 1 otherwise, 2 for a bad argument or a device that is not there.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import platform
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metarl import backends, resources  # noqa: E402
from metarl.analysis import evaluation  # noqa: E402
from metarl.backends import (  # noqa: E402
    compiled,
    lifetime,
    use_threads,  # noqa: E402
)
from metarl.backends import native as native_mod  # noqa: E402
from metarl.backends.lifetime import Lifetime  # noqa: E402
from metarl.cli.args import ArgumentParser  # noqa: E402
from metarl.cli.main import run_main  # noqa: E402
from metarl.config import Config, RuntimeConfig  # noqa: E402
from metarl.core import rng  # noqa: E402
from metarl.core.genome import GenomeLayout  # noqa: E402
from metarl.core.step import transition  # noqa: E402
from metarl.errors import UserError  # noqa: E402
from metarl.runs.io import atomic_write_text, load_model  # noqa: E402

DEFAULT_MODEL = "experiments/pendulum_swingup/model.yaml"
DEFAULT_OUT = "results/gpu_check.json"
DEFAULT_BUDGET = 420.0  # seconds; the last measurement started may run past it
GRAPH_STEPS = 10  # steps recorded in one CUDA graph
SCORE_SEED = 0  # the default seed of show_results.py --evaluate
TORCH_BACKENDS = ("spec", "compiled")


@dataclass(frozen=True)
class Sizes:
    """How much the script runs."""

    populations: tuple[int, ...]
    steps: int  # lifetime steps of a throughput measurement
    lifetimes: int  # self-check individuals and scored lifetimes
    repeats: int  # timed runs per measurement (the median is reported)
    native_population: int  # the native CPU kernel's measurement
    native_steps: int


FULL = Sizes(populations=(10_000, 100_000, 1_000_000), steps=100, lifetimes=256, repeats=3,
             native_population=4096, native_steps=100)
# One population size on the CPU: each size compiles the step once (about 20 s).
TINY = Sizes(populations=(16,), steps=5, lifetimes=16, repeats=1, native_population=32, native_steps=5)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument("--tiny", action="store_true",
                   help=f"tiny sizes (populations {'/'.join(map(str, TINY.populations))}, {TINY.steps} steps, "
                        f"{TINY.lifetimes} lifetimes): runs on the CPU in seconds")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="PATH", help=f"the JSON (default {DEFAULT_OUT})")
    p.add_argument("--populations", metavar="N,N,...",
                   help=f"throughput populations (default {','.join(map(str, FULL.populations))})")
    p.add_argument("--steps", type=int, help=f"lifetime steps per throughput measurement (default {FULL.steps})")
    p.add_argument("--lifetimes", type=int, help=f"self-check individuals and scored lifetimes (default "
                                                 f"{FULL.lifetimes})")
    p.add_argument("--repeats", type=int, help=f"timed runs per measurement (default {FULL.repeats})")
    p.add_argument("--backends", default=",".join(TORCH_BACKENDS), metavar="NAME,...",
                   help="spec and/or compiled (default both)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET, metavar="SECONDS",
                   help=f"start no throughput measurement after this many seconds (default {DEFAULT_BUDGET:g})")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"the model scored (default {DEFAULT_MODEL})")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's); the native rate uses 1")
    args = p.parse_args(argv)
    base = TINY if args.tiny else FULL
    populations = base.populations
    if args.populations is not None:
        try:
            populations = tuple(int(v) for v in args.populations.split(","))
        except ValueError:
            raise UserError(f"--populations {args.populations}: expected comma-separated integers") from None
    for name, values, low in (("--populations", populations, 1), ("--steps", (args.steps,), 1),
                              ("--lifetimes", (args.lifetimes,), 2), ("--repeats", (args.repeats,), 1),
                              ("--threads", (args.threads,), 1)):
        for v in values:
            if v is not None and v < low:
                raise UserError(f"{name} must be >= {low}, got {v}")
    if not args.budget > 0:
        raise UserError(f"--budget must be > 0, got {args.budget:g}")
    names = tuple(args.backends.split(","))
    for name in names:
        if name not in TORCH_BACKENDS:
            raise UserError(f"--backends: unknown backend {name!r}; expected spec and/or compiled")
    args.backend_names = tuple(dict.fromkeys(names))
    args.sizes = Sizes(populations, args.steps or base.steps, args.lifetimes or base.lifetimes,
                       args.repeats or base.repeats, base.native_population, base.native_steps)
    try:
        args.torch_device = torch.device(args.device)
    except RuntimeError:
        raise UserError(f"--device {args.device}: expected cuda, cuda:N or cpu") from None
    dev = args.torch_device
    if dev.type not in ("cuda", "cpu"):
        raise UserError(f"--device {args.device}: expected cuda, cuda:N or cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {args.device}: CUDA is not available (torch {torch.__version__}, "
                            f"built for CUDA {torch.version.cuda or 'none'}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {args.device}: there are {torch.cuda.device_count()} CUDA devices")
        # An index, for the calls that need one (torch.cuda.set_device).
        args.torch_device = torch.device("cuda", torch.cuda.current_device() if dev.index is None else dev.index)
    if not Path(args.model).is_file():
        raise UserError(f"--model {args.model}: no such file")
    return args


# ---------------------------------------------------------------------------- CUDA graphs

Capture = Callable[[Callable[[], None], Callable[[], None]], Callable[[], None]]


def cuda_capture(warmup: Callable[[], None], body: Callable[[], None]) -> Callable[[], None]:
    """Run ``warmup`` on a side stream, record ``body`` as a CUDA graph on it; returns the replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        warmup()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        body()
    return graph.replay


def tensors(obj: object) -> list[torch.Tensor]:
    """The tensors in ``obj`` (a tensor, or dataclasses and lists of them), in a fixed order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in tensors(item)]
    if dataclasses.is_dataclass(obj):
        return [t for f in dataclasses.fields(obj) for t in tensors(getattr(obj, f.name))]
    return []


class StepGraph:
    """``steps`` steps of a `Lifetime` recorded once and replayed: each replay advances it ``steps`` steps.

    First ``steps`` steps run as usual (warm-up: compiled code, cuBLAS workspaces); their carry becomes
    the graph's input, and the recorded steps end by copying the new carry into it, so every replay
    continues where the last ended. ``fitness (P,)`` float64 receives every step's reward.
    ``capture(warmup, body) -> replay`` records (default `cuda_capture`; the tests pass one that
    replays by calling ``body``). Lifetimes without episodes and with their own rewards only: a
    replay does not advance the lifetime's Python step counter.
    """

    def __init__(self, life: Lifetime, steps: int, fitness: torch.Tensor, capture: Capture = cuda_capture) -> None:
        if life.env.options.episode_steps is not None:
            raise ValueError("StepGraph: lifetimes of one episode only")
        self.life, self.steps, self.fitness = life, steps, fitness
        self.static = life.carry
        self.replay = capture(self._warmup, self._body)

    def _warmup(self) -> None:
        self.life.run(self.steps, self.fitness)
        self.static = self.life.carry

    def _body(self) -> None:
        life = self.life
        life.carry = self.static
        life.run(self.steps, self.fitness)
        for dst, src in zip(tensors(self.static), tensors(life.carry), strict=True):
            dst.copy_(src)
        life.carry = self.static


def graph_steps(steps: int) -> int:
    """Steps per graph: the largest divisor of ``steps`` up to `GRAPH_STEPS` that leaves a replay
    after the warm-up; 0 if ``steps`` < 2."""
    return max((k for k in range(1, min(GRAPH_STEPS, steps // 2) + 1) if steps % k == 0), default=0)


# ---------------------------------------------------------------------------- measurements

class Skip(Exception):
    """A measurement that does not apply here (its reason is recorded)."""


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    """Give back what the last measurement left, and start the peak-memory count afresh."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


@contextmanager
def recorded(entry: dict[str, Any], device: torch.device) -> Iterator[None]:
    """Run a measurement into ``entry``: its warnings, and ``status`` ok, oom, error or skipped."""
    free(device)  # what the last measurement held is gone now (after an error, its frame held it until then)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
            entry.setdefault("status", "ok")
        except torch.cuda.OutOfMemoryError as e:
            entry.update(status="oom", error=first_line(e))
        except Skip as e:
            entry.update(status="skipped", reason=str(e))
        except Exception as e:  # noqa: BLE001 - recorded, so that one failure does not lose the other results
            entry.update(status="error", error=first_line(e),
                         traceback=traceback.format_exc().splitlines()[-30:])
    messages = list(dict.fromkeys(str(w.message).splitlines()[0][:300] for w in caught))
    if messages:
        entry["warnings"] = messages
    entry["seconds"] = round(time.perf_counter() - start, 3)
    free(device)


def population(config: Config, pop: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, GenomeLayout]:
    """Random genomes from the GA's initial distribution and the keys of one lifetime each, on ``device``."""
    layout = GenomeLayout(config.rule.signal_dim, config.rule.state_dim)
    genomes = layout.random(pop, config.rule.init_std, torch.Generator(device=device).manual_seed(0))
    keys = rng.individual_keys(0, 0, 0, torch.arange(pop, device=device))
    return genomes, keys, layout


def sized(config: Config, pop: int, steps: int) -> Config:
    """``config`` for ``pop`` individuals of ``steps`` steps (one chunk on a GPU, none padded), default runtime."""
    ga = replace(config.ga, population_size=pop, num_survivors=1, lifetime_steps=steps)
    return config.replace(ga=ga, runtime=RuntimeConfig())


def compiled_usable(device: torch.device) -> str | None:
    """Why the compiled backend cannot run on ``device``, or None."""
    if device.type == "cpu" and not native_mod.compiler_found():
        return "torch.compile on the CPU needs a C++ compiler"
    return None


def check_compiled(entry: dict[str, Any]) -> None:
    if compiled.fell_back(transition):
        entry["status"] = "compile_failed"


def self_checks(config: Config, device: torch.device, names: tuple[str, ...], individuals: int
                ) -> list[dict[str, Any]]:
    """`metarl.backends.lifetime.self_check` of each backend on ``device`` against the spec on the CPU in float64."""
    out = []
    runs = [(name, True) for name in names] + ([("compiled", False)] if "compiled" in names else [])
    for name, eager in runs:
        entry: dict[str, Any] = {"backend": name, "code": "eager" if eager or name == "spec" else "compiled",
                                 "device": str(device), "dtype": "float32", "against": "spec, cpu, float64",
                                 "individuals": individuals, "steps": lifetime.CHECK_STEPS,
                                 "tolerance": lifetime.CHECK_TOLERANCE, "passed": False}
        with recorded(entry, device):
            if name == "compiled" and (why := compiled_usable(device)):
                raise Skip(why)
            try:
                entry["difference"] = lifetime.self_check(name, config, device=device, spec_device="cpu",
                                                          spec_dtype=torch.float64, eager=eager,
                                                          individuals=individuals)
                entry["passed"] = True
            except lifetime.SelfCheckError as e:
                entry.update(error=str(e), status="failed")
            if name == "compiled":
                check_compiled(entry)
        out.append(entry)
    return out


def score(model_path: str, config: Config, genome: torch.Tensor, device: torch.device, names: tuple[str, ...],
          lifetimes: int) -> dict[str, Any]:
    """The model's summed reward on ``lifetimes`` held-out lifetimes: on the CPU, and on ``device``'s backends."""
    steps = config.ga.lifetime_steps
    cfg = sized(config, lifetimes, steps)
    layout = GenomeLayout(config.rule.signal_dim, config.rule.state_dim)
    keys = evaluation.evaluation_keys(SCORE_SEED, lifetimes)
    cpu = torch.device("cpu")
    reference_cfg = cfg.replace(runtime=RuntimeConfig(compile=False))
    backend = backends.select_backend(reference_cfg, cpu).name
    genomes = genome.expand(lifetimes, -1).contiguous()
    start = time.perf_counter()
    want, _ = lifetime.run_lifetimes(genomes, layout, reference_cfg, keys, backend=backend)
    summary = evaluation.Summary.of(want)
    lo, hi = summary.ci95
    out: dict[str, Any] = {"model": model_path, "lifetimes": lifetimes, "steps": steps, "seed": SCORE_SEED,
                           "keys": "show_results.py --evaluate, condition learned",
                           "cpu": {"backend": backend, **summary.to_dict(),
                                   "seconds": round(time.perf_counter() - start, 3)},
                           "runs": []}
    for name in names:
        entry: dict[str, Any] = {"backend": name, "device": str(device), "within_ci": False}
        with recorded(entry, device):
            if name == "compiled" and (why := compiled_usable(device)):
                raise Skip(why)
            got, _ = lifetime.run_lifetimes(genomes.to(device), layout, cfg, keys.to(device), backend=name)
            s = evaluation.Summary.of(got)
            entry.update(mean=s.mean, std=s.std, n=s.n, difference=s.mean - summary.mean,
                         within_ci=lo <= s.mean <= hi,
                         largest_lifetime_difference=lifetime.max_difference([want], [got]))
            if not entry["within_ci"]:
                entry["status"] = "failed"
            if name == "compiled":
                check_compiled(entry)
        out["runs"].append(entry)
    return out


def timed(device: torch.device, run: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def native_rate(config: Config, sizes: Sizes) -> dict[str, Any]:
    """The native CPU kernel on one thread (one core), as `run_lifetimes` runs it on a CPU."""
    pop, steps = sizes.native_population, sizes.native_steps
    cfg = sized(config, pop, steps)
    cpu = torch.device("cpu")
    entry: dict[str, Any] = {"backend": "native", "device": "cpu", "threads": 1, "population": pop, "steps": steps}
    with recorded(entry, cpu):
        why = backends.NATIVE.why_not(cfg, cpu, torch.float32, cfg.layer_sizes)
        if why is not None:
            raise Skip(why)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            genomes, keys, layout = population(cfg, pop, cpu)
            lifetime.run_lifetimes(genomes, layout, cfg, keys, steps=min(steps, 2), backend="native")
            times = timed(cpu, lambda: lifetime.run_lifetimes(genomes, layout, cfg, keys, backend="native"),
                          sizes.repeats)
        finally:
            torch.set_num_threads(threads)
        entry.update(times=times, rate=pop * steps / statistics.median(times))
    return entry


def throughput(config: Config, name: str, pop: int, sizes: Sizes, device: torch.device, graphs: bool,
               plain: dict[str, Any] | None, deadline: float, subset: int | None = None) -> dict[str, Any]:
    """Individual-steps/s and peak memory of ``pop`` lifetimes on backend ``name`` (with CUDA graphs or not).
    ``subset``: also run the first this many individuals on their own, to see whether an individual's
    numbers depend on the size of the batch it runs in."""
    steps = sizes.steps
    cfg = sized(config, pop, steps)
    entry: dict[str, Any] = {"backend": name, "graphs": graphs, "population": pop, "steps": steps}
    fitness_of_plain = None if plain is None else plain.pop("_fitness", None)
    with recorded(entry, device):
        if time.perf_counter() > deadline:
            raise Skip("time budget (--budget) spent")
        if name == "compiled" and (why := compiled_usable(device)):
            raise Skip(why)
        if graphs and device.type != "cuda":
            raise Skip("CUDA graphs need a CUDA device")
        k = graph_steps(steps)
        if graphs and k == 0:
            raise Skip("CUDA graphs need at least 2 steps")
        base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        genomes, keys, layout = population(cfg, pop, device)
        if graphs:
            with torch.no_grad():
                life = Lifetime(genomes, layout, cfg, keys, backend=name)
                fitness = torch.zeros(pop, dtype=torch.float64, device=device)
                start = time.perf_counter()
                graph = StepGraph(life, k, fitness)
                synchronize(device)
                entry["warmup_seconds"] = round(time.perf_counter() - start, 3)
                replays = steps // k - 1
                times = timed(device, lambda: [graph.replay() for _ in range(replays)], 1)
            entry.update(steps_per_graph=k, timed_steps=k * replays, times=times,
                         rate=pop * k * replays / times[0],
                         timed="replays of the recorded steps (not the lifetime's set-up, warm-up and recording)")
            if fitness_of_plain is not None:
                entry["difference_to_plain"] = lifetime.max_difference([fitness_of_plain], [fitness])
                if not entry["difference_to_plain"] <= lifetime.CHECK_TOLERANCE:
                    entry["status"] = "failed"
        else:
            start = time.perf_counter()
            lifetime.run_lifetimes(genomes, layout, cfg, keys, steps=min(steps, 2), backend=name)  # compiles
            synchronize(device)
            entry["warmup_seconds"] = round(time.perf_counter() - start, 3)
            result: list[torch.Tensor] = []

            def run() -> None:
                result[:] = [lifetime.run_lifetimes(genomes, layout, cfg, keys, backend=name)[0]]

            times = timed(device, run, sizes.repeats)
            entry.update(times=times, rate=pop * steps / statistics.median(times),
                         timed="run_lifetimes: the lifetimes' set-up and every step")
            entry["_fitness"] = result[0].cpu()
            if subset:
                alone, _ = lifetime.run_lifetimes(genomes[:subset], layout, sized(config, subset, steps),
                                                  keys[:subset], backend=name)
                whole = result[0][:subset]
                entry["smaller_batch"] = {"individuals": subset, "identical": bool(torch.equal(alone, whole)),
                                          "difference": lifetime.max_difference([whole], [alone])}
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) - base
            entry.update(peak_bytes=peak, bytes_per_individual=peak / pop)
        # What `metarl.resources` expects a run to need on the device (it refuses runs that do not fit).
        entry["estimated_bytes_per_individual"] = resources.estimate(cfg, torch.device("cuda")).device / pop
        if name == "compiled":
            check_compiled(entry)
    return entry


# ---------------------------------------------------------------------------- report

def machine(device: torch.device) -> dict[str, Any]:
    out: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
                           "cpu": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(gpu=props.name, gpu_memory_bytes=props.total_memory,
                   compute_capability=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version(),
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
        try:
            import triton

            out["triton"] = triton.__version__
        except ImportError:
            out["triton"] = None
    else:
        out["gpu"] = None
    return out


def rate_text(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.3g}"


def table(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"device {report['device']}: {m['gpu'] or m['cpu']}; torch {m['torch']}, CUDA {m['cuda'] or '-'}"]
    checks = report["self_check"]
    if checks:
        first = checks[0]
        lines.append(f"self-check against the spec on the CPU in float64 ({first['individuals']} individuals, "
                     f"{first['steps']} steps, tolerance {first['tolerance']:g}):")
    for c in checks:
        diff = f"{c['difference']:.2g}" if "difference" in c else "-"
        lines.append(f"  {c['backend'] + ' (' + c['code'] + ')':<22}{diff:>10}  {c['status']}")
    s = report["score"]
    cpu = s["cpu"]
    lines.append(f"{s['model']}, {s['lifetimes']} lifetimes x {s['steps']} steps (keys of show_results.py "
                 f"--evaluate):")
    lines.append(f"  {'cpu (' + cpu['backend'] + ')':<22}{cpu['mean']:>10.3f}  95% CI [{cpu['ci95'][0]:.3f}, "
                 f"{cpu['ci95'][1]:.3f}]")
    for r in s["runs"]:
        mean = f"{r['mean']:.3f}" if "mean" in r else "-"
        extra = f"  largest lifetime difference {r['largest_lifetime_difference']:.2g}" if "mean" in r else ""
        lines.append(f"  {report['device'] + ' ' + r['backend']:<22}{mean:>10}  {r['status']}"
                     f"{' (within the CI)' if r['within_ci'] else ''}{extra}")
    n = report["native_cpu"]
    lines.append(f"native CPU kernel, 1 thread: {rate_text(n.get('rate'))} individual-steps/s (population "
                 f"{n['population']}, {n['steps']} steps) {n['status']}")
    lines.append(f"throughput ({report['sizes']['steps']} steps):")
    lines.append(f"  {'backend':<10}{'graphs':<8}{'population':>11}{'ind-steps/s':>13}{'x native':>10}"
                 f"{'peak MiB':>11}{'KiB/ind':>9}{'est.':>7}{'warm-up s':>11}  status")
    for e in report["throughput"]:
        ratio = e.get("ratio_to_native_cpu")
        peak = e.get("peak_bytes")
        per = e.get("bytes_per_individual")
        est = e.get("estimated_bytes_per_individual")
        lines.append(f"  {e['backend']:<10}{'yes' if e['graphs'] else 'no':<8}{e['population']:>11}"
                     f"{rate_text(e.get('rate')):>13}{'-' if ratio is None else f'{ratio:.3g}':>10}"
                     f"{'-' if peak is None else f'{peak / 2**20:.1f}':>11}"
                     f"{'-' if per is None else f'{per / 1024:.1f}':>9}{'-' if est is None else f'{est / 1024:.1f}':>7}"
                     f"{e.get('warmup_seconds', '-'):>11}  {e['status']}"
                     + (f" ({e.get('error') or e.get('reason')})" if e['status'] not in ('ok',) else ""))
    lines.append("  KiB/ind: peak GPU memory per individual, genomes included; est.: what metarl.resources "
                 "expects (it refuses runs that do not fit)")
    for e in report["throughput"]:
        if "smaller_batch" in e:
            alone = e["smaller_batch"]
            lines.append(f"  {e['backend']}: the first {alone['individuals']} of {e['population']} alone: "
                         f"{'identical' if alone['identical'] else 'differ by ' + format(alone['difference'], '.2g')}")
    lines.append(f"passed: {report['passed']}; complete: {report['complete']}; {report['seconds']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_threads(args.threads)
    start = time.perf_counter()
    device, sizes, names = args.torch_device, args.sizes, args.backend_names
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # One compilation per population (static shapes): allow them all, so none silently runs eagerly.
    dynamo = torch._dynamo.config
    limit = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
    setattr(dynamo, limit, max(getattr(dynamo, limit), len(sizes.populations) + 4))
    model = load_model(args.model)
    config = model.config
    report: dict[str, Any] = {
        "script": "bench/gpu_check.py", "argv": sys.argv[1:] if argv is None else list(argv), "tiny": args.tiny,
        "device": str(device), "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(device), "sizes": dataclasses.asdict(sizes), "backends": list(names),
        "config": {"model": args.model, "env": config.env.name, "layer_sizes": config.layer_sizes,
                   "genes": model.layout.size, "dtype": "float32"}}
    print(f"bench/gpu_check.py on {device} ({report['machine']['gpu'] or report['machine']['cpu']})", flush=True)
    report["self_check"] = self_checks(config, device, names, sizes.lifetimes)
    report["score"] = score(args.model, config, model.genome, device, names, sizes.lifetimes)
    report["native_cpu"] = native_rate(config, sizes)
    deadline = start + args.budget
    plain: dict[tuple[str, int], dict[str, Any]] = {}
    entries = []
    for graphs in (False, True):  # every plain run first: a failed graph capture cannot spoil them
        for pop in sizes.populations:
            for name in names:
                first = pop == sizes.populations[0] and not graphs and pop >= 2
                e = throughput(config, name, pop, sizes, device, graphs, plain.get((name, pop)), deadline,
                               subset=min(sizes.lifetimes, pop // 2) if first else None)
                if not graphs:
                    plain[name, pop] = e
                entries.append(e)
                print(f"  {name} {'graphs ' if graphs else ''}{pop}: {e['status']} {rate_text(e.get('rate'))}",
                      flush=True)
    native = report["native_cpu"].get("rate")
    for e in entries:
        e.pop("_fitness", None)
        if native and e.get("rate"):
            e["ratio_to_native_cpu"] = e["rate"] / native
    report["throughput"] = entries
    report["passed"] = (all(c["passed"] for c in report["self_check"] if c["status"] != "skipped")
                        and all(r["within_ci"] for r in report["score"]["runs"] if r["status"] != "skipped")
                        and not any(e["status"] == "failed" for e in entries))
    report["complete"] = all(e["status"] in ("ok", "oom", "skipped") for e in
                             [*report["self_check"], *report["score"]["runs"], report["native_cpu"], *entries])
    report["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(finite(report), indent=2, allow_nan=False) + "\n")
    except OSError as e:
        raise UserError(f"{args.out}: cannot write ({e.strerror})") from None
    print(table(report))
    print(f"wrote {out}")
    return 0 if report["passed"] and report["complete"] else 1


def finite(obj: object) -> object:
    """``obj`` with every non-finite float written as a string ("inf", "nan"): strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


if __name__ == "__main__":
    sys.exit(run_main(main))
