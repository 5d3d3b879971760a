"""The mean height per step around a +1 -> -1 reversal at step 500 (issue 20: why no rule follows it), or a
-1 -> +1 one with a second argument -1 (the goal before the flip).

    python3 experiments/pendulum_reward_balance/reversal_heights.py \
        experiments/pendulum_reward_balance/attempts/model_floor2.yaml
    python3 experiments/pendulum_reward_balance/reversal_heights.py experiments/pendulum_reward_balance/model.yaml -1

128 held-out lifetimes (the evaluation keys of seed 0), nominal physics (length 1, mass 1, damping 0.1), no sensor
noise, goal +1 flipped to -1 (or -1 to +1) at step 500, learned and with the reward zeroed: the second half's
score, the mean height per link by 50-step window from step 400 (2 = upright), and the share of lifetimes hanging
still at the end (height below 0.2 for more than 90% of the last 100 steps).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from screen import STEPS, Conditions, evaluation, io, lifetimes  # noqa: E402 - the screen's lifetimes

LIFETIMES, SWITCH = 128, 500


def main(path: str, goal: int = 1) -> None:
    model = io.load_model(path)
    keys = evaluation.evaluation_keys(0, LIFETIMES)
    for name, conditions in (("learned", Conditions()),
                             ("reward zeroed", evaluation.CONDITIONS["reward_zeroed"])):
        rewards, h = lifetimes(model, keys, goal=goal, switch=SWITCH, sign=model.config.env.action_sign,
                               conditions=conditions)
        windows = [round(float(h[:, i:i + 50].mean()), 2) for i in range(SWITCH - 100, STEPS, 50)]
        still = float((((h[:, -100:] < 0.2).double().mean(1)) > 0.9).double().mean())
        print(f"{name}: second half {float(rewards[:, SWITCH:].sum(1).mean()):.1f}; mean height by 50 "
              f"steps from {SWITCH - 100}: {windows}; hanging still at the end: {still:.0%}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1)
