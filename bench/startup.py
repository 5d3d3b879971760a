#!/usr/bin/env python3
"""How long the three commands take to answer before doing any work: ``--help`` (answered from
`metarl.cli.parsers` before torch loads) and a usage error (answered after the command's imports).

    python3 bench/startup.py                  # 7 runs of each, medians
    python3 bench/startup.py --runs 15 --json out.json

Whole processes (``python3 SCRIPT ...``, start-up included), run in turn so that all see the same machine
load; the medians and the load average before and after are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    "run_config.py --help": ["run_config.py", "--help"],
    "show_environment.py --help": ["show_environment.py", "--help"],
    "show_results.py --help": ["show_results.py", "--help"],
    "run_config.py --generations 0 (usage error)": ["run_config.py", "base", "--generations", "0"],
    "show_results.py --seed -1 (usage error)": ["show_results.py", "pendulum_swingup", "--seed", "-1"],
}


def timed(args: list[str]) -> float:
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", MPLBACKEND="Agg")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 2):
        raise SystemExit(f"{' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=7, help="runs of each command (default 7), after one warm-up")
    p.add_argument("--json", metavar="OUT", help="also write the medians as JSON")
    args = p.parse_args()
    if args.runs < 1:
        p.error("--runs must be >= 1")
    load_before = os.getloadavg()[0]
    for case in CASES.values():
        timed(case)  # warm-up: bytecode caches, the page cache
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.runs):
        for name, case in CASES.items():
            times[name].append(timed(case))
    load_after = os.getloadavg()[0]
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, median in medians.items():
        print(f"{name:48s} median {median:6.3f} s  (min {min(times[name]):.3f}, max {max(times[name]):.3f})")
    print(f"load average {load_before:.2f} -> {load_after:.2f}, {args.runs} runs each")
    if args.json:
        Path(args.json).write_text(json.dumps({"medians_s": medians, "runs": args.runs,
                                               "load": [load_before, load_after]}, indent=1) + "\n")


if __name__ == "__main__":
    main()
