"""DoublePendulum: two point masses on massless rods, motor torque on the first link.

Exact Lagrangian equations of motion with absolute angles from the downward vertical
(theta1 for the upper rod, theta2 for the lower one). The motor at the base applies the
generalised force ``torque`` on theta1; damping adds ``-b * omega_i`` to each angular
acceleration. With ``d = theta1 - theta2`` the equations are the 2x2 linear system

    (m1 + m2) l1^2 a1 + m2 l1 l2 cos(d) a2 = -m2 l1 l2 w2^2 sin(d) - (m1 + m2) g l1 sin(t1) + torque
    m2 l1 l2 cos(d) a1 + m2 l2^2 a2        =  m2 l1 l2 w1^2 sin(d) - m2 g l2 sin(t2)

solved in closed form (Cramer's rule).
"""

from __future__ import annotations

import torch

from .base import BatchedEnv

PARAM_DEFAULTS = {"length1": 1.0, "length2": 1.0, "mass1": 1.0, "mass2": 1.0,
                  "gravity": 9.81, "damping": 0.1}


class DoublePendulum(BatchedEnv):
    """Batched double pendulum; ``state (B, 4) = [theta1, omega1, theta2, omega2]``."""

    name = "DoublePendulum"
    links = 2
    param_defaults = PARAM_DEFAULTS
    link_length_names = ("length1", "length2")
    may_be_zero = ("damping",)  # no friction

    def derivatives(self, state: torch.Tensor, torque: torch.Tensor) -> torch.Tensor:
        """``[omega1, alpha1, omega2, alpha2]`` of ``state (B, 4)`` under ``torque (B,)``."""
        p = self.params
        l1, l2, m1, m2, g = p["length1"], p["length2"], p["mass1"], p["mass2"], p["gravity"]
        t1, w1, t2, w2 = state.unbind(dim=1)
        d = t1 - t2
        cos_d, sin_d = torch.cos(d), torch.sin(d)
        m11 = (m1 + m2) * l1 * l1
        m12 = m2 * l1 * l2 * cos_d
        m22 = m2 * l2 * l2
        f1 = -m2 * l1 * l2 * w2 * w2 * sin_d - (m1 + m2) * g * l1 * torch.sin(t1) + torque
        f2 = m2 * l1 * l2 * w1 * w1 * sin_d - m2 * g * l2 * torch.sin(t2)
        det = m11 * m22 - m12 * m12
        a1 = (m22 * f1 - m12 * f2) / det - p["damping"] * w1
        a2 = (m11 * f2 - m12 * f1) / det - p["damping"] * w2
        return torch.stack((w1, a1, w2, a2), dim=1)

    def energy(self, state: torch.Tensor | None = None) -> torch.Tensor:
        """Kinetic plus potential energy, shape ``(B,)``."""
        state = self.state if state is None else state
        p = self.params
        l1, l2, m1, m2, g = p["length1"], p["length2"], p["mass1"], p["mass2"], p["gravity"]
        t1, w1, t2, w2 = state.unbind(dim=1)
        kinetic = (0.5 * (m1 + m2) * l1**2 * w1**2 + 0.5 * m2 * l2**2 * w2**2
                   + m2 * l1 * l2 * w1 * w2 * torch.cos(t1 - t2))
        potential = -(m1 + m2) * g * l1 * torch.cos(t1) - m2 * g * l2 * torch.cos(t2)
        return kinetic + potential
