"""A new task in Python alone: a cart-pole swing-up, registered and evolved on in one file.

    python3 examples/custom_env.py
    python3 run_config.py configs/tiny.yaml --plugin examples/custom_env.py --set env.name=CartPole   # as a plugin

A cart on a track with end stops carries a pole (a point mass on a massless rod) on a free
joint; the motor pushes the cart, not the pole. The pole starts hanging and the reward is
its height minus a penalty on the cart's distance from the centre, so a good rule learns to
pump the pole up by moving the cart back and forth. The class follows the environment
protocol of `metarl.envs.base.BatchedEnv` (docs/extending.md, "Add an environment"): parameters, state, pure
dynamics, observation, height and reward; `metarl.envs.register` makes ``env.name: CartPole``
valid in a config. The native kernel runs it: its step is generated from this file's Python
(`metarl.backends.codegen`), with no C++ written here, and checked against the torch step at start-up.
From the scripts: ``python3 run_config.py CONFIG --plugin examples/custom_env.py --set env.name=CartPole``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from metarl import backends, envs  # noqa: E402
from metarl.config import from_dict  # noqa: E402
from metarl.envs.base import RANDOM_SPEED, UP_OFFSET, BatchedEnv, wrap_angle  # noqa: E402
from metarl.evolve.trainer import Trainer, new_run  # noqa: E402

# The track's end stops (m from the centre): the cart stops dead there.
TRACK = 2.4
# The reward's penalty per square metre of the cart's distance from the centre.
POSITION_COST = 0.05


class CartPole(BatchedEnv):
    """Batched cart-pole; ``state (B, 4) = [x, x_dot, theta, theta_dot]``, theta from the downward vertical.

    With cart mass ``M``, pole mass ``m`` at distance ``l`` from the joint, ``s, c = sin, cos theta``, the
    force ``F`` on the cart and viscous friction ``b_c`` (cart) and ``b_p`` (joint), Lagrange's equations are

        (M + m) x'' + m l c theta'' = F + m l s theta'^2 - b_c x'
        m l c x''   + m l^2 theta''  = -m g l s - b_p theta'

    solved in closed form (determinant ``m l^2 (M + m s^2)``). ``max_torque`` is the largest force (N).
    """

    name = "CartPole"
    links = 1  # one pole
    param_defaults = {"cart_mass": 1.0, "pole_mass": 0.1, "length": 0.5, "gravity": 9.81,
                      "cart_friction": 0.0, "pole_friction": 0.0}
    may_be_zero = ("cart_friction", "pole_friction")
    rewards = ("height", "height_delta")
    inits = ("down", "up", "random")

    @classmethod
    def state_size(cls) -> int:
        return 4

    @classmethod
    def observation_size(cls) -> int:
        return 5  # x, x_dot, sin theta, cos theta, theta_dot

    def observation(self, state: torch.Tensor) -> torch.Tensor:
        x, x_dot, theta, theta_dot = state.unbind(dim=1)
        return torch.stack((x, x_dot, torch.sin(theta), torch.cos(theta), theta_dot), dim=1)

    def initial_state(self, uniform: torch.Tensor | None = None) -> torch.Tensor:
        """The cart at rest at the centre; the pole hanging (``down``), almost upright (``up``), or at a
        random angle and speed (``random``, from ``uniform (B, 4)``)."""
        state = torch.zeros(self.batch_size, 4, device=self.device, dtype=self.dtype)
        if self.options.init == "up":
            state[:, 2] = math.pi * (1 + UP_OFFSET)
        elif self.options.init == "random":
            if uniform is None:
                raise ValueError("init 'random' needs uniform numbers")
            u = 2 * uniform.to(device=self.device, dtype=self.dtype) - 1
            state[:, 2], state[:, 3] = u[:, 2] * math.pi, u[:, 3] * RANDOM_SPEED
        return self.wrap(state)

    def wrap(self, state: torch.Tensor) -> torch.Tensor:
        state = state.clone()
        state[:, 2] = wrap_angle(state[:, 2])  # the pole's angle; the cart's position is not an angle
        return state

    def advance(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The pendulums' step (integrate, wrap, clamp the speeds), then the end stops: a cart past
        ``TRACK`` is put back at it with no speed (the pole keeps its own)."""
        state = super().advance(state, action)
        stopped = state[:, 0].abs() > TRACK
        state[:, 0] = state[:, 0].clamp(-TRACK, TRACK)
        state[:, 1] = torch.where(stopped, torch.zeros_like(state[:, 1]), state[:, 1])
        return state

    def derivatives(self, state: torch.Tensor, force: torch.Tensor) -> torch.Tensor:
        p = self.params
        big_m, m, length, g = p["cart_mass"], p["pole_mass"], p["length"], p["gravity"]
        _, x_dot, theta, theta_dot = state.unbind(dim=1)
        s, c = torch.sin(theta), torch.cos(theta)
        f_x = force + m * length * s * theta_dot**2 - p["cart_friction"] * x_dot
        f_theta = -m * g * length * s - p["pole_friction"] * theta_dot
        d = big_m + m * s**2
        x_acc = (length * f_x - c * f_theta) / (length * d)
        theta_acc = ((big_m + m) * f_theta - m * length * c * f_x) / (m * length**2 * d)
        return torch.stack((x_dot, x_acc, theta_dot, theta_acc), dim=1)

    def height(self, state: torch.Tensor | None = None) -> torch.Tensor:
        """The pole's height ``1 - cos theta``: 0 hanging, 2 upright."""
        state = self.state if state is None else state
        return 1 - torch.cos(state[:, 2])

    def reward(self, start: torch.Tensor, state: torch.Tensor, height: torch.Tensor,
               prev_height: torch.Tensor | None, t: int | torch.Tensor, torque: torch.Tensor | None = None
               ) -> torch.Tensor:
        """The pendulums' ``height`` or ``height_delta`` (times the goal), minus ``POSITION_COST x^2``."""
        return super().reward(start, state, height, prev_height, t, torque) - POSITION_COST * state[:, 0] ** 2

    def energy(self, state: torch.Tensor | None = None) -> torch.Tensor:
        """Kinetic plus potential energy ``(B,)`` (zero potential at the joint's height)."""
        state = self.state if state is None else state
        p = self.params
        big_m, m, length, g = p["cart_mass"], p["pole_mass"], p["length"], p["gravity"]
        _, x_dot, theta, theta_dot = state.unbind(dim=1)
        kinetic = (0.5 * (big_m + m) * x_dot**2 + m * length * torch.cos(theta) * x_dot * theta_dot
                   + 0.5 * m * length**2 * theta_dot**2)
        return kinetic - m * g * length * torch.cos(theta)

    def geometry(self, index: int = 0) -> list[tuple[float, float]]:
        """The cart's joint and the pole's tip (metres, y up)."""
        x, _, theta, _ = self.state[index].double().tolist()
        length = float(self.params["length"][index])
        return [(x, 0.0), (x + length * math.sin(theta), -length * math.cos(theta))]


envs.register("CartPole", CartPole)

# Seconds on one core: 24 rules, 4 generations of 150-step lifetimes (7.5 s of simulated time).
CONFIG: dict[str, Any] = {
    "seed": 0,
    "device": "cpu",
    "env": {"name": "CartPole", "init": "down", "reward": "height", "max_torque": 10.0},
    "actor": {"hidden": [8]},
    "ga": {"population_size": 24, "num_survivors": 6, "generations": 4, "lifetime_steps": 150},
    "runtime": {"threads": 1},  # batches this small are fastest on one thread
}


def main() -> int:
    config = from_dict(CONFIG)
    device = torch.device("cpu")
    torch.set_num_threads(config.runtime.threads or 1)
    # The native kernel generates the cart-pole's step from the class above; what it could not generate it
    # would name in one line here (and the torch step would run).
    why = backends.NATIVE.why_not(config, device, torch.float32, config.layer_sizes)
    print(f"native kernel: {why or 'runs it (generated from the Python above)'}")
    print(f"backend: {backends.select_backend(config, device).name}")
    trainer = Trainer(new_run(config), "unused", writer=False, device=device)
    for _ in range(config.ga.generations):
        row = trainer.run_generation()
        print(f"generation {row['generation']}: best fitness {row['best']:.2f} (mean {row['mean']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
