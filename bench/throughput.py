#!/usr/bin/env python3
"""Time the lifetime loop of run_config.py (`metarl.backends.lifetime.evaluate`) in individual-steps/s.

    python3 bench/throughput.py --population 10000 --steps 100
    python3 bench/throughput.py --population 10000 --steps 100 --reference   # the plain rule
    python3 bench/throughput.py --population 10000 --steps 100 --compare     # both, and the speed-up
    python3 bench/throughput.py --population 100000 --steps 50 --repeats 1   # memory per individual
    python3 bench/throughput.py --plugin examples/custom_rule.py --set rule.declaration=clocked   # your own rule
    python3 bench/throughput.py --plugin examples/custom_env.py --set env.name=CartPole --set env.init=down

The config is SPEC's default with the given population, lifetime steps and env, then the
``--set KEY=VALUE`` overrides (as run_config.py's; ``--plugin`` imports a rule or environment
first). The first line names the backend that runs (spec, compiled or native). After a
warm-up (one chunk, a few steps, so compilation is not timed), the whole population is
evaluated ``--repeats`` times and the median is reported. The last line is
``individual-steps/s: X  peak-rss-MiB: Y`` (with ``--compare``, the line before it gives
the reference's rate and the median speed-up over interleaved repeats); the marginal memory per individual is the
difference of peak RSS between two runs (separate processes) divided by the difference
of populations.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import metarl  # noqa: E402, F401, I001 - before torch: asks OpenMP for passive workers, read when torch loads
import torch  # noqa: E402

from metarl import backends, plugins  # noqa: E402
from metarl.backends import compiled, lifetime, use_threads  # noqa: E402
from metarl.cli.main import run_main  # noqa: E402
from metarl.config import (  # noqa: E402
    Config,
    EnvConfig,
    GAConfig,
    RuleConfig,
    RuntimeConfig,
    apply_overrides,
    from_dict,
)
from metarl.core import rng  # noqa: E402  (before torch: sets its OpenMP wait policy)
from metarl.core.genome import layout_of  # noqa: E402
from metarl.core.step import transition  # noqa: E402
from metarl.errors import UserError  # noqa: E402


class ArgumentParser(argparse.ArgumentParser):
    """Usage mistakes are one ``error:`` line, as in the scripts."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see --help)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--population", type=int, default=10000)
    p.add_argument("--steps", type=int, default=100, help="lifetime steps")
    p.add_argument("--env", default="Pendulum", help="Pendulum | DoublePendulum")
    p.add_argument("--device", default="cpu")
    p.add_argument("--reference", action="store_true", help="time the plain reference rule step (the spec backend)")
    p.add_argument("--compare", action="store_true",
                   help="also time the plain reference, interleaved with the chosen path, and print the speed-up")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk-size", type=int, default=None, help="individuals per CPU chunk (default: automatic)")
    p.add_argument("--native", action=argparse.BooleanOptionalAction, default=None,
                   help="the native C++ kernel (default: auto, as run_config.py: on CPU when it builds)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="torch.compile the torch step when the native kernel is not used (default: on)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--rule", default="standard", help="a registered rule declaration (rule.declaration), e.g. "
                                                      "reward_change")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (parsed as YAML), as run_config.py's --set; repeatable")
    p.add_argument("--plugin", action="append", default=[], metavar="PATH_OR_MODULE",
                   help="a .py file or module to import first (it registers rules and environments); repeatable")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plugins.given(args.plugin)  # before the config names their rule or environment
    runtime = RuntimeConfig(chunk_size=args.chunk_size, threads=args.threads, compile=args.compile,
                            native=args.native)
    config = Config(device=args.device, env=EnvConfig(name=args.env),
                    ga=GAConfig(population_size=args.population, num_survivors=1, lifetime_steps=args.steps),
                    rule=RuleConfig(declaration=args.rule), runtime=runtime)
    config = from_dict(apply_overrides(config.to_dict(), args.set))  # validated, one line per problem
    args.population, args.steps = config.ga.population_size, config.ga.lifetime_steps
    use_threads(config.runtime.threads)
    layout = layout_of(config)
    gen = torch.Generator().manual_seed(0)
    genomes = layout.random(args.population, config.rule.init_std, gen).to(args.device)

    # What `lifetime.evaluate` does for one evaluation per individual, with the choice of rule step.
    keys = rng.individual_keys(0, 0, 0, torch.arange(args.population)).to(args.device)

    def run(pop: int, steps: int, reference: bool) -> None:
        lifetime.run_lifetimes(genomes[:pop], layout, config, keys[:pop], steps=steps,
                               backend="spec" if reference else path)

    path = "spec" if args.reference else backends.select_backend(config, genomes.device, genomes.dtype).name
    print(f"backend: {path}  env: {config.env.name}  rule: {config.rule.declaration}  population: {args.population}  "
          f"steps: {args.steps}  threads: {torch.get_num_threads()}", flush=True)
    paths = [args.reference] + ([True] if args.compare else [])
    start = time.perf_counter()
    for reference in paths:
        run(min(args.population, config.runtime.chunk_size or backends.SPEC.cpu_chunk), min(args.steps, 10),
            reference)
    print(f"warm-up: {time.perf_counter() - start:.1f} s")
    rates: dict[bool, list[float]] = {reference: [] for reference in paths}
    for i in range(args.repeats):
        for reference in paths:  # interleaved, so that both see the same machine load
            start = time.perf_counter()
            run(args.population, args.steps, reference)
            elapsed = time.perf_counter() - start
            rates[reference].append(args.population * args.steps / elapsed)
            label = "reference (spec)" if reference else path
            print(f"repeat {i} {label}: {elapsed:.2f} s  {rates[reference][-1]:.3g} individual-steps/s")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # ru_maxrss is KiB on Linux
    if args.compare:
        ratios = [a / b for a, b in zip(rates[args.reference], rates[True], strict=True)]
        print(f"reference individual-steps/s: {statistics.median(rates[True]):.4g}  "
              f"speed-up: {statistics.median(ratios):.2f}x (median of per-repeat ratios)")
    if path == "compiled" and compiled.fell_back(transition):
        print("backend: compiled fell back to the eager step (torch.compile failed; the warning above says why)")
    print(f"individual-steps/s: {statistics.median(rates[args.reference]):.4g}  peak-rss-MiB: {peak_mib:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
