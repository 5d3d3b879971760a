"""Pendulum: a point mass on a massless rod, driven by a motor at the pivot.

``theta'' = -(g / l) sin(theta) + torque / (m l^2) - b * omega``, theta measured from the
downward vertical (0 hangs down, pi is upright).
"""

from __future__ import annotations

import torch

from .base import BatchedEnv

PARAM_DEFAULTS = {"length": 1.0, "mass": 1.0, "gravity": 9.81, "damping": 0.1}


class Pendulum(BatchedEnv):
    """Batched single pendulum; ``state (B, 2) = [theta, omega]``."""

    name = "Pendulum"
    links = 1
    param_defaults = PARAM_DEFAULTS
    link_length_names = ("length",)
    may_be_zero = ("damping",)  # no friction

    def derivatives(self, state: torch.Tensor, torque: torch.Tensor) -> torch.Tensor:
        """``[omega, alpha]`` of ``state (B, 2)`` under ``torque (B,)``."""
        p = self.params
        theta, omega = state[:, 0], state[:, 1]
        alpha = (-(p["gravity"] / p["length"]) * torch.sin(theta)
                 + torque / (p["mass"] * p["length"] ** 2) - p["damping"] * omega)
        return torch.stack((omega, alpha), dim=1)

    def energy(self, state: torch.Tensor | None = None) -> torch.Tensor:
        """``m l^2 omega^2 / 2 - m g l cos(theta)``, shape ``(B,)``."""
        state = self.state if state is None else state
        p = self.params
        theta, omega = state[:, 0], state[:, 1]
        return (0.5 * p["mass"] * p["length"] ** 2 * omega**2
                - p["mass"] * p["gravity"] * p["length"] * torch.cos(theta))
