#!/usr/bin/env python3
"""The generated native kernel on the shipped rules and on a new rule and a new environment written in Python.

    python3 bench/generated.py                                  # population 10,000, 100 steps, 1 thread, 5 repeats
    python3 bench/generated.py --baseline ../metarl-526823d     # and the same cases on another checkout's kernel
    python3 bench/generated.py --population 2000 --repeats 3 --json out.json

Cases (configs/base.yaml with the population, the lifetime and one thread; random genomes, scale 0.5):
``standard`` and ``reward_change`` (the shipped rules, Pendulum), ``clocked`` (`examples/custom_rule.py`'s rule:
the node cell also reads ``lifetime_fraction``), ``abs_reward`` (the standard rule plus a source written here,
``|reward|``, in the reward cell), ``cartpole`` (`examples/custom_env.py`'s CartPole, the standard rule). Each repeat
runs every case once, in turn, each in a fresh process (so all see the same machine load, and a case's build and
self-check are never timed: a warm-up run comes first); ``--baseline DIR`` adds the cases the checkout at ``DIR``
can run (a git worktree of an earlier revision: ``git worktree add DIR REV``). Printed: each case's median
individual-steps/s, its median ratio to ``standard`` over the repeats, the backend it ran and the load average
before and after. Whole-process noise is excluded: the timer covers `run_lifetimes` only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = ("standard", "reward_change", "clocked", "abs_reward", "cartpole")
BASELINE_CASES = ("standard", "reward_change")  # what the hand-written kernel ran natively

# One measurement, run in a fresh process in the checkout under test (its own metarl); prints one JSON line.
WORKER = r'''
import importlib.util, json, sys, time, warnings
sys.path.insert(0, ".")
import torch
from metarl import backends
from metarl.backends import lifetime
from metarl.config import load
from metarl.core import rng
from metarl.core.genome import GenomeLayout
case, pop, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
sets = [f"ga.population_size={pop}", f"ga.lifetime_steps={steps}", "runtime.threads=1", "device=cpu"]

def example(name):
    spec = importlib.util.spec_from_file_location(name, f"examples/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

if case == "reward_change":
    sets.append("rule.declaration=reward_change")
elif case == "clocked":
    example("custom_rule")
    sets.append("rule.declaration=clocked")
elif case == "abs_reward":
    from metarl.core.rule import STANDARD, Input, register_rule, register_source, with_input

    @register_source("reward.abs", ("reward_network", "node_network"))
    def _abs(site):
        """|reward|"""
        return site.per_individual(site.reward.abs())

    register_rule(with_input(STANDARD, "reward_network", Input("abs", 1, "reward.abs"), name="abs_reward"))
    sets.append("rule.declaration=abs_reward")
elif case == "cartpole":
    example("custom_env")
    sets += ["env.name=CartPole", "env.max_torque=10.0"]
config = load("configs/base.yaml", sets)
rule = backends.config_rule(config)
layout = GenomeLayout(config.rule.signal_dim, config.rule.state_dim, rule)
genomes = layout.random(pop, 0.5, torch.Generator().manual_seed(0))
keys = rng.individual_keys(0, 0, 0, torch.arange(pop))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    chosen = backends.select_backend(config, torch.device("cpu"), torch.float32, rule=rule)
    lifetime.run_lifetimes(genomes[:64], layout, config, keys[:64], steps=5)  # builds, checks, warms up
start = time.perf_counter()
lifetime.run_lifetimes(genomes, layout, config, keys, steps=steps)
seconds = time.perf_counter() - start
print(json.dumps({"rate": pop * steps / seconds, "backend": chosen.name,
                  "warnings": [str(w.message)[:200] for w in caught]}))
'''


def measure(checkout: Path, case: str, population: int, steps: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", WORKER, case, str(population), str(steps)], cwd=checkout,
                          capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"error: {case} in {checkout}: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--population", type=int, default=10000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    p.add_argument("--baseline", type=Path, default=None, help="another checkout whose kernel to time beside")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = p.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown or args.population < 64 or args.steps < 1 or args.repeats < 1:
        raise SystemExit(f"error: cases must be among {', '.join(CASES)}; population >= 64, steps and repeats >= 1")
    runs = [("current", ROOT, c) for c in cases]
    if args.baseline is not None:
        if not (args.baseline / "metarl").is_dir():
            raise SystemExit(f"error: --baseline {str(args.baseline)[:200]}: not a metarl checkout")
        runs += [("baseline", args.baseline.resolve(), c) for c in cases if c in BASELINE_CASES]
    load_before = os.getloadavg()
    rates: dict[str, list[float]] = {f"{who}:{c}": [] for who, _, c in runs}
    backend: dict[str, str] = {}
    for repeat in range(args.repeats):
        for who, checkout, case in runs:
            got = measure(checkout, case, args.population, args.steps)
            rates[f"{who}:{case}"].append(got["rate"])
            backend[f"{who}:{case}"] = got["backend"]
            if got["warnings"]:
                print(f"  {who}:{case} warned: {got['warnings'][0]}")
        print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)
    load_after = os.getloadavg()
    base = rates.get("current:standard")
    print(f"population {args.population}, {args.steps} steps, 1 thread, {args.repeats} interleaved repeats; "
          f"load {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"{'case':28s} {'backend':9s} {'median ind-steps/s':>20s} {'x current standard':>20s}")
    out = {"population": args.population, "steps": args.steps, "repeats": args.repeats,
           "load": [load_before[0], load_after[0]], "cases": {}}
    for name, values in rates.items():
        ratio = statistics.median(v / b for v, b in zip(values, base, strict=True)) if base else float("nan")
        print(f"{name:28s} {backend[name]:9s} {statistics.median(values):20.4g} {ratio:20.3f}")
        out["cases"][name] = {"backend": backend[name], "rates": values, "median": statistics.median(values),
                              "ratio_to_standard": ratio}
    if args.json:
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=1) + "\n")
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
