"""Gymnasium's Pendulum-v1, batched in torch: the same equations, integrator, limits and cost.

A rod of length ``l`` and mass ``m`` (``g = 10``): ``thdot += (3 g / (2 l) sin th + 3 / (m l^2) u) dt``,
clamped to ``max_speed = 8``, then ``th += thdot dt`` (semi-implicit Euler), with ``u`` clipped to
``max_torque = 2`` N·m. The reward is ``-(angle_normalize(th)^2 + 0.1 thdot^2 + 0.001 u^2)`` of the
state *before* the step. Unlike metarl's own environments, ``th`` is measured from the upright
position and is not wrapped (as in Gymnasium), and the observation is ``[cos th, sin th, thdot]``.
Not a training environment (the lifetime backends do not implement it): `metarl.gym` uses it for
``gymnasium.make("metarl/Pendulum-v0", dynamics="gymnasium")``.
"""

from __future__ import annotations

import math

import torch

from .base import BatchedEnv, EnvOptions, EnvState

GRAVITY, MASS, LENGTH, DT, MAX_SPEED, MAX_TORQUE = 10.0, 1.0, 1.0, 0.05, 8.0, 2.0


def angle_normalize(x: torch.Tensor) -> torch.Tensor:
    """Gymnasium's ``((x + pi) % (2 pi)) - pi``."""
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


class PendulumV1(BatchedEnv):
    """``state (B, 2) = [th, thdot]``, ``th`` from upright; actions are torques in N·m."""

    name = "Pendulum-v1"
    links = 1
    param_defaults = {"gravity": GRAVITY}
    link_length_names = ()

    def __init__(self, batch_size: int, gravity: float = GRAVITY, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float64) -> None:
        params = {"gravity": torch.full((batch_size,), float(gravity), dtype=dtype, device=device)}
        super().__init__(batch_size, params, EnvOptions(dt=DT, max_torque=MAX_TORQUE, max_speed=MAX_SPEED,
                                                        init="down"), device=device, dtype=dtype)

    def observation(self, state: torch.Tensor) -> torch.Tensor:
        th, thdot = state[:, 0], state[:, 1]
        return torch.stack((torch.cos(th), torch.sin(th), thdot), dim=1)

    def torque(self, action: torch.Tensor) -> torch.Tensor:
        """The torque as Gymnasium computes with it: the float32 action clipped in float32."""
        return action.to(torch.float32).clamp(-MAX_TORQUE, MAX_TORQUE)

    def transition(self, env_state: EnvState, action: torch.Tensor) -> tuple[EnvState, torch.Tensor]:
        """Pure: the state after torque ``action (B,)`` and the reward of the state before it."""
        th, thdot = env_state.state[:, 0], env_state.state[:, 1]
        # Gymnasium's terms in u are float32 (a float32 action times Python floats, NumPy 2's promotion rules);
        # the rest is float64. The same here, so that the two agree to float64 rounding.
        u = self.torque(action)
        costs = angle_normalize(th) ** 2 + 0.1 * thdot**2 + (0.001 * (u**2)).to(self.dtype)
        g = self.params["gravity"]
        push = (3.0 / (MASS * LENGTH**2) * u).to(self.dtype)
        newthdot = thdot + (3 * g / (2 * LENGTH) * torch.sin(th) + push) * DT
        newthdot = newthdot.clamp(-MAX_SPEED, MAX_SPEED)
        newth = th + newthdot * DT
        return EnvState(torch.stack((newth, newthdot), dim=1), None, env_state.t + 1), -costs

    def height(self, state: torch.Tensor | None = None) -> torch.Tensor:
        """``1 + cos th`` (0 hanging, 2 upright), as metarl's height reward."""
        state = self._state if state is None else state
        return 1 + torch.cos(state[:, 0])
