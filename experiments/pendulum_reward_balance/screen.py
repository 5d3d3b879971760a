"""Screen models on issue 20's bars, quickly: the numbers used to choose which snapshot of a run to evaluate in full.

    python3 experiments/pendulum_reward_balance/screen.py results/reward_balance_fast6/snapshots/gen_*.yaml
    python3 experiments/pendulum_reward_balance/screen.py experiments/pendulum_reward_balance/model.yaml --seeds 2 3

128 lifetimes per cell on the keys of each seed of ``--seeds`` (default 1; averaged over several), never seed 0's,
which the full evaluations (`show_results.py --evaluate`, seed 0) report: what chooses a model is not what scores
it. Nominal physics (length 1, mass 1, damping 0.1), no sensor noise, 1,000 steps. Per model, one line:

- ``dn+1``, ``dn-1``: goal +1 flipped to -1 at step 500, motor +1 / -1: the second half's score (the controller
  -68.6; bar 2 asks for at least -137);
- ``up+1``, ``up-1``: goal -1 flipped to +1 at step 500: the second half's score over the controller's 790.6;
- ``plain``: no reversal, goals +1 and -1, motor random: the score over the controller's 895.3;
- ``bal``: the share of those goal +1 lifetimes balanced (`metarl.analysis.evaluation.balanced_lifetimes`);
- ``L15``: the same share at length 1.5.

About 4 s per model on one core.
"""

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from metarl.analysis import evaluation  # noqa: E402
from metarl.backends.lifetime import Conditions, run_lifetimes  # noqa: E402
from metarl.errors import UserError  # noqa: E402
from metarl.runs import io  # noqa: E402

LIFETIMES, STEPS, SWITCH = 128, 1000, 500
NOMINAL = {"length": 1.0, "mass": 1.0, "damping": 0.1}
UP_SECOND_HALF, PLAIN = 790.6, 895.3  # the reference controller's scores (eval_*.txt)


def lifetimes(model: io.SavedModel, keys: torch.Tensor, *, goal: int, switch: int | None = None,
              sign: int | str = "random", params: dict[str, float] = NOMINAL,
              conditions: Conditions = Conditions()) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards and mean heights ``(N, T)`` of ``keys`` lifetimes of the model under one setting (no sensor noise,
    every lifetime reversed at ``switch`` if given), in ``conditions`` (e.g. the reward zeroed)."""
    c = model.config
    env = dataclasses.replace(c.env, obs_noise=0.0, params=dict(params), goal=goal, goal_switch=switch,
                              goal_switch_probability=1.0, action_sign=sign)
    config = c.replace(env=env, ga=dataclasses.replace(c.ga, antithetic=False))
    genomes = model.genome.expand(keys.shape[0], -1).contiguous()
    states = torch.zeros(keys.shape[0], STEPS, 2)
    _, rewards = run_lifetimes(genomes, model.layout, config, keys, steps=STEPS, trace=True, states=states,
                               conditions=conditions)
    assert rewards is not None
    return rewards.double(), evaluation.heights(states)


def screen(model: io.SavedModel, seed: int) -> dict[str, float]:
    keys = evaluation.evaluation_keys(seed, LIFETIMES)
    out = {}
    for sign in (1, -1):
        r, _ = lifetimes(model, keys, goal=1, switch=SWITCH, sign=sign)
        out[f"dn{sign:+d}"] = float(r[:, SWITCH:].sum(1).mean())
        r, _ = lifetimes(model, keys, goal=-1, switch=SWITCH, sign=sign)
        out[f"up{sign:+d}"] = float(r[:, SWITCH:].sum(1).mean()) / UP_SECOND_HALF
    up, h = lifetimes(model, keys, goal=1)
    down, _ = lifetimes(model, keys, goal=-1)
    out["plain"] = float((up.sum(1) + down.sum(1)).mean() / 2) / PLAIN
    out["bal"] = float(evaluation.balanced_lifetimes(h).mean())
    _, h = lifetimes(model, keys, goal=1, params={**NOMINAL, "length": 1.5})
    out["L15"] = float(evaluation.balanced_lifetimes(h).mean())
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="saved models (e.g. a run's snapshots/gen_*.yaml)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1], help="key seeds, averaged (default 1; not 0)")
    args = p.parse_args(argv)
    if 0 in args.seeds:
        p.error("seed 0's keys are the full evaluations': screen on others")
    for path in args.models:
        try:
            model = io.load_model(path)
        except UserError as e:
            p.error(str(e))
        scores = [screen(model, s) for s in args.seeds]
        mean = {k: sum(s[k] for s in scores) / len(scores) for k in scores[0]}
        print(path, " ".join(f"{k} {v:.3f}" if abs(v) < 10 else f"{k} {v:.1f}" for k, v in mean.items()), flush=True)


if __name__ == "__main__":
    main()
