#!/usr/bin/env python3
"""The native kernel's rate per core and on 2 threads, its ratio to the spec, and its share of the FLOP bound.

    python3 bench/kernel.py                          # population 10,000, 100 steps, 5 interleaved repeats
    python3 bench/kernel.py --population 2000 --steps 50 --repeats 3 --json out.json
    python3 bench/kernel.py --against HEAD~1         # A/B: this kernel against a git revision's, same bits?
    python3 bench/kernel.py --against HEAD~1 --signal-dim 256 --state-dim 256 --population 64 --steps 20

SPEC's default network ([3, 8, 8, 1], S = 1, H = 8) on the swing-up pendulum. Each repeat times, in turn,
the native kernel on 1 thread, on 2 threads, and (``--spec-steps`` steps, scaled) the spec on 1 thread, so
that all see the same machine load; the medians and the medians of the per-repeat ratios are printed with
the load average before and after. The FLOP bound is this CPU's peak fused multiply-add rate (2 FMA pipes
x the kernel's lanes per vector x the clock in /proc/cpuinfo) over the kernel's arithmetic per
individual-step, counted from its loops (`operations`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import metarl  # noqa: E402, F401, I001 - before torch: asks OpenMP for passive workers, read when torch loads
import torch  # noqa: E402

from metarl import backends  # noqa: E402
from metarl.backends import lifetime, native  # noqa: E402
from metarl.config import Config, GAConfig, RuleConfig, RuntimeConfig  # noqa: E402
from metarl.core import rng  # noqa: E402
from metarl.core.genome import GenomeLayout  # noqa: E402

TANH_OPS = 14  # vecmath.h vtanh: 9 FMA + 2 multiplies + 1 division + 2 compare/select (clamp, saturation)


def operations(sizes: list[int], signal: int, state: int) -> dict[str, int]:
    """Vector-lane floating-point instructions of one individual-step, counted from kernel/rule.h's loops
    (an FMA counts as one instruction; the noise, physics and copies, a few percent, are left out)."""
    s, h, info = signal, state, 5
    o = s + 1  # edge outputs: the message and the weight change
    conns = sum(a * b for a, b in zip(sizes, sizes[1:], strict=False))
    neurons = sum(sizes[1:])
    pre = sum(sizes[:-1])  # pre-synaptic neurons of every layer
    fma = (conns * (h * (h + 2) + o * (h + 2))  # per connection: w row + H recurrent, + the post/pre sums
           + neurons * (h + o) * (info + s)  # post-neuron rows
           + pre * (h + o) * info  # pre-neuron rows
           + neurons * (h + s + 2) * (info + s + h)  # node cell
           + sizes[-1] * (h + s) * (1 + info + h)  # reward cell
           + conns + neurons)  # actor forward and its noise
    tanh = conns * (h + o) + neurons * (h + s + 2) + sizes[-1] * (h + s) + neurons
    return {"fma": fma, "tanh": tanh, "total": fma + tanh * TANH_OPS}


def cpu_ghz() -> float | None:
    try:
        mhz = [float(ln.split(":")[1]) for ln in Path("/proc/cpuinfo").read_text().splitlines()
               if ln.startswith("cpu MHz")]
    except (OSError, ValueError):
        return None
    return max(mhz) / 1000 if mhz else None


def kernel_sources(revision: str, into: Path) -> Path:
    """The kernel's source files (metarl/backends/kernel/) as they were at a git revision, written under ``into``."""
    root = Path(__file__).resolve().parent.parent
    folder = native.SOURCE_DIR.relative_to(root).as_posix()
    names = subprocess.run(["git", "ls-tree", "--name-only", f"{revision}:{folder}"], cwd=root, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in names:
        data = subprocess.run(["git", "show", f"{revision}:{folder}/{name}"], cwd=root, check=True,
                              capture_output=True).stdout
        (into / name).write_bytes(data)
    return into


def against(args: argparse.Namespace, config: Config, layout: GenomeLayout, genomes: torch.Tensor,
            keys: torch.Tensor) -> None:
    """Time this checkout's kernel and a git revision's in turn (1 thread), and check they give the same bits. The
    revision's kernel skeleton is built with this checkout's generated program.h (revisions since the generator;
    against an earlier one, whose kernel was hand-written, use bench/generated.py --baseline)."""
    torch.set_num_threads(1)
    prog = native.program(layout.rule, backends.sample_env(config), layout.signal_dim)
    shape = (layout.signal_dim, layout.state_dim, native.march(), None, prog.digest)
    libraries = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, source in (("current", native.SOURCE_DIR), (args.against, kernel_sources(args.against, Path(tmp)))):
            native.SOURCE_DIR, native.SOURCE = source, source / "driver.cpp"  # only this process, only here
            native._libraries.clear()
            libraries[name] = native.library(layout.signal_dim, layout.state_dim, prog=prog)
    rates: dict[str, list[float]] = {name: [] for name in libraries}
    fitness = {}
    load_before = os.getloadavg()
    for _ in range(args.repeats):
        for name, lib in libraries.items():
            native._libraries[shape] = lib
            life = lifetime.Lifetime(genomes, layout, config, keys, backend="native")
            total = torch.zeros(args.population, dtype=torch.float64)
            start = time.perf_counter()
            life.run(args.steps, total, None)
            rates[name].append(args.population * args.steps / (time.perf_counter() - start))
            fitness[name] = total
    old = args.against
    ratio = statistics.median(a / b for a, b in zip(rates["current"], rates[old], strict=True))
    print(f"load average {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f}")
    print(f"current {statistics.median(rates['current']):.4g} individual-steps/s, {old} "
          f"{statistics.median(rates[old]):.4g}: {ratio:.2f}x (median of {args.repeats} paired repeats); "
          f"same fitness bits: {torch.equal(fitness['current'], fitness[old])}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--population", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--spec-steps", type=int, default=20, help="steps of the (slow) spec per repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--signal-dim", type=int, default=RuleConfig().signal_dim, help="the rule's S (SPEC: 1)")
    p.add_argument("--state-dim", type=int, default=RuleConfig().state_dim, help="the rule's H (SPEC: 8)")
    p.add_argument("--against", metavar="REV", default=None,
                   help="instead: this kernel against the kernel sources of git revision REV, 1 thread")
    args = p.parse_args()

    config = Config(ga=GAConfig(population_size=args.population, num_survivors=1, lifetime_steps=args.steps),
                    rule=RuleConfig(signal_dim=args.signal_dim, state_dim=args.state_dim),
                    runtime=RuntimeConfig(native=True, threads=1))
    config.validate()
    layout = GenomeLayout(config.rule.signal_dim, config.rule.state_dim)
    genomes = layout.random(args.population, config.rule.init_std, torch.Generator().manual_seed(0))
    keys = rng.individual_keys(0, 0, 0, torch.arange(args.population))
    if args.against is not None:
        against(args, config, layout, genomes, keys)
        return

    def rate(backend: str, threads: int, steps: int) -> float:
        torch.set_num_threads(threads)
        start = time.perf_counter()
        lifetime.run_lifetimes(genomes, layout, config, keys, steps=steps, backend=backend)
        return args.population * steps / (time.perf_counter() - start)

    load_before = os.getloadavg()
    rate("native", 1, 5)  # build/load the kernel and run the self-check outside the timing
    rate("spec", 1, 2)
    runs: dict[str, list[float]] = {"native_1": [], "native_2": [], "spec_1": []}
    for i in range(args.repeats):
        runs["native_1"].append(rate("native", 1, args.steps))
        runs["native_2"].append(rate("native", 2, args.steps))
        runs["spec_1"].append(rate("spec", 1, args.spec_steps))
        print(f"repeat {i}: " + "  ".join(f"{k} {v[-1]:.3g}" for k, v in runs.items()), flush=True)
    load_after = os.getloadavg()
    ratio = {"threads_2_over_1": [a / b for a, b in zip(runs["native_2"], runs["native_1"], strict=True)],
             "native_over_spec": [a / b for a, b in zip(runs["native_1"], runs["spec_1"], strict=True)]}
    ops = operations(config.layer_sizes, config.rule.signal_dim, config.rule.state_dim)
    ghz = cpu_ghz()
    bound = None if ghz is None else ghz * 1e9 * 2 * native.default_lanes() / ops["total"]
    result = {"population": args.population, "steps": args.steps, "sizes": config.layer_sizes,
              "march": native.march(), "lanes": native.default_lanes(), "cpu_ghz": ghz,
              "load_before": load_before, "load_after": load_after,
              "median": {k: statistics.median(v) for k, v in runs.items()},
              "ratio": {k: statistics.median(v) for k, v in ratio.items()},
              "operations_per_individual_step": ops, "flop_bound": bound,
              "share_of_bound": None if bound is None else statistics.median(runs["native_1"]) / bound}
    med = result["median"]
    print(f"load average {load_before[0]:.2f} -> {load_after[0]:.2f}")
    print(f"native 1 thread: {med['native_1']:.4g} individual-steps/s   2 threads: {med['native_2']:.4g} "
          f"({result['ratio']['threads_2_over_1']:.2f}x)   spec: {med['spec_1']:.4g} "
          f"(native {result['ratio']['native_over_spec']:.1f}x)")
    if bound is not None:
        print(f"{ops['total']} lane instructions per individual-step ({ops['fma']} FMA, {ops['tanh']} tanh); "
              f"bound at {ghz:.2f} GHz x 2 FMA pipes x {native.default_lanes()} lanes: {bound:.3g}/s; "
              f"share {result['share_of_bound']:.0%}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
