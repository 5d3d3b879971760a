"""Check a run of pendulum_reward_balance_lineage.yaml against what this folder holds: the shipped rule, bit for bit.

    python3 run_config.py experiments/pendulum_reward_balance/pendulum_reward_balance_lineage.yaml --out RUN
    python3 experiments/pendulum_reward_balance/check_lineage.py RUN

Per stage, one line: the generations of its ``log.csv`` whose fitness columns (best, mean, median, worst, best
ever) are the committed training log's (``attempts/log_<stage>.csv``), character for character, and whether the model
the stage shipped has the genome of the model the next training started from (its ``ga.init_model``; the last stage:
``model.yaml``). A stage still running is checked as far as it got. Exit code 0 when everything that exists matches
and ``RUN/model.yaml`` is ``model.yaml``'s genome; 1 otherwise; 2 for a folder that is not such a run.
"""

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from metarl import config as cfg_mod  # noqa: E402
from metarl.evolve import stages  # noqa: E402
from metarl.runs import io  # noqa: E402

FOLDER = Path(__file__).resolve().parent
ROOT = FOLDER.parents[1]
ATTEMPTS = FOLDER / "attempts"  # each training's config, log and models
COLUMNS = ("best", "mean", "median", "worst", "best_ever")


def rows(path: Path) -> list[tuple[str, ...]]:
    with path.open(newline="") as f:
        return [tuple(row[c] for c in COLUMNS) for row in csv.DictReader(f)]


def went_on(plan: list[stages.Stage]) -> list[Path]:
    """The committed model each stage must ship: the model the next training started from, then model.yaml."""
    nexts = [cfg_mod.load(ATTEMPTS / f"pendulum_reward_balance_{s.name}.yaml").ga.init_model for s in plan[1:]]
    return [ROOT / str(p) for p in nexts] + [FOLDER / "model.yaml"]


def same_genome(a: Path, b: Path) -> bool | None:
    """Whether two model files hold the same genome; None when ``a`` is not written yet."""
    if not a.is_file():
        return None
    return torch.equal(io.load_model(a).genome, io.load_model(b).genome)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="the run folder of pendulum_reward_balance_lineage.yaml")
    args = p.parse_args(argv)
    if not stages.is_stage_run(args.run):
        print(f"error: {args.run}: not the run folder of a multi-stage config (no {stages.STAGES_FILE})",
              file=sys.stderr)
        return 2
    plan = stages.load_run(args.run)
    ok = True
    for stage, model in zip(plan, went_on(plan), strict=True):
        log = stage.folder(args.run) / "log.csv"
        mine = rows(log) if log.is_file() else []
        theirs = rows(ATTEMPTS / f"log_{stage.name}.csv")
        equal = sum(1 for a, b in zip(mine, theirs, strict=False) if a == b)
        complete = len(mine) == stage.config.ga.generations  # (best_model.yaml exists from the first generation on)
        shipped = same_genome(stage.shipped(args.run), model) if complete else None
        ok &= equal == len(mine) and shipped is not False
        print(f"{stage.name:>8}: {equal} of {len(mine)} generations as log_{stage.name}.csv "
              f"(of {stage.config.ga.generations}); shipped {model.name}: "
              f"{'not yet' if shipped is None else 'same genome' if shipped else 'DIFFERENT genome'}")
    final = same_genome(args.run / stages.MODEL_FILE, FOLDER / "model.yaml")
    print(f"{args.run / stages.MODEL_FILE}: "
          f"{'not written yet' if final is None else 'model.yaml, bit for bit' if final else 'NOT model.yaml'}")
    return 0 if ok and final else 1


if __name__ == "__main__":
    sys.exit(main())
