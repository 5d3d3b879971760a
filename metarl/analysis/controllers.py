"""Classic controllers that know the physics and the goal: the `reference` of an evaluation.

A learned rule is judged against what a control engineer would write for the same task, not
only against a random actor. Each controller maps the env state ``(B, 2 * links)`` to an
action ``(B,)`` in [-1, 1]; it reads the env's physical parameters, motor direction and
hidden goal (which the actor never sees).

- **Pendulum**, reward ``height`` / ``height_delta``, goal +1: energy pumping (torque along
  the angular speed, scaled by the missing energy) until the swing reaches the upright
  energy, then an LQR balance controller (discrete-time Riccati iteration on the
  linearisation about upright, per individual) once the pendulum is near upright and slow.
  Goal -1 ("stay down"): above the horizontal push the pendulum off the top the way it leans,
  below it damp the swing (so it also comes down after a goal switch from +1 to -1).
- **Pendulum**, reward ``spin``: pump until the energy suffices to pass over the top, then
  push in the goal's direction at full torque.
- **DoublePendulum**: the same energy pumping on the first link (the motor's), with the
  pendulum's rules for the goal; no balance controller (balancing the double pendulum with a
  torque limit of 1 N·m from rest is beyond a few lines of classic control, so this is a
  pumping heuristic, a lower bound on what control can do).
"""

from __future__ import annotations

import math

import torch

from ..core import rng
from ..core.step import observe, reset_episode
from ..envs.base import RANDOM_INITS, BatchedEnv, wrap_angle
from ..errors import ConfigError

# The environments whose physics the controller knows (by name: a subclass registered under another name may
# have other physics).
KNOWN_ENVS = ("Pendulum", "DoublePendulum")

# Energy pumping: torque fraction per joule missing (saturates at the torque limit).
PUMP_GAIN = 5.0
# Switch to the LQR balance controller within this angle (rad) of upright ...
BALANCE_ANGLE = 0.5
# ... and below this angular speed (rad/s).
BALANCE_SPEED = 3.0
# LQR weights: state cost diag(angle, speed), control cost on the torque (N·m).
LQR_Q = (10.0, 1.0)
LQR_R = 0.1
RICCATI_ITERATIONS = 2000
# Spin: push in the goal's direction once the energy exceeds the top's by this fraction.
SPIN_MARGIN = 0.0
# ... and pump both ways while the energy is this fraction (of m g l) or more below the top's.
SPIN_NEAR = 0.1
# Stay down: damping gain (torque fraction per rad/s).
DAMP_GAIN = 1.0


def check_env(name: str) -> None:
    """A one-line `ConfigError` unless the controller knows the environment ``name`` (`KNOWN_ENVS`)."""
    if name not in KNOWN_ENVS:
        shown = name if len(name) <= 100 and name.isprintable() else f"{name[:60]!r}..."
        known = " and ".join(KNOWN_ENVS)
        raise ConfigError(f"the reference controller (metarl/analysis/controllers.py) knows {known}, "
                          f"not the environment {shown}: the evaluation and the robustness report compare the rule "
                          f"with it, so they cannot run on {shown} (a replay and --plot can)")


class ReferenceController:
    """Energy pumping + LQR balance (Pendulum) or pumping (DoublePendulum) for the batch of ``env``; any other
    environment is declined in one line (`check_env`)."""

    def __init__(self, env: BatchedEnv) -> None:
        check_env(env.name)
        self.env = env
        p = env.params
        if env.links == 1:
            self.inertia = p["mass"] * p["length"] ** 2
            self.mgl = p["mass"] * p["gravity"] * p["length"]
        else:
            # Pumping on the first link, treating the pendulum as one rigid body about the pivot.
            self.inertia = (p["mass1"] + p["mass2"]) * p["length1"] ** 2 + p["mass2"] * p["length2"] ** 2
            self.mgl = p["gravity"] * ((p["mass1"] + p["mass2"]) * p["length1"] + p["mass2"] * p["length2"])
        self.gain = self._lqr_gain() if env.links == 1 else None
        self.torque = env.options.max_torque * env.action_sign  # action 1 gives this torque (signed)

    def _lqr_gain(self) -> torch.Tensor:
        """Feedback gains ``(B, 2)`` on ``[phi, omega]`` (phi = angle from upright), torque units."""
        env, p = self.env, self.env.params
        dt = env.dt if isinstance(env.dt, float) else env.dt.double().cpu()  # per individual where drawn
        b = env.batch_size
        a = torch.zeros(b, 2, 2, dtype=torch.float64)
        a[:, 0, 0] = 1.0
        a[:, 0, 1] = dt
        a[:, 1, 0] = dt * (p["gravity"] / p["length"]).double().cpu()
        a[:, 1, 1] = 1.0 - dt * p["damping"].double().cpu()
        bm = torch.zeros(b, 2, 1, dtype=torch.float64)
        bm[:, 1, 0] = dt / self.inertia.double().cpu()
        q = torch.diag(torch.tensor(LQR_Q, dtype=torch.float64)).expand(b, 2, 2)
        # Every individual with the same physics has the same gain: iterate over the distinct ones.
        system, inverse = torch.unique(torch.cat((a.flatten(1), bm.flatten(1)), dim=1), dim=0, return_inverse=True)
        a, bm = system[:, :4].reshape(-1, 2, 2), system[:, 4:].reshape(-1, 2, 1)
        q = q[: a.shape[0]]
        s = q.clone()
        at, bt = a.transpose(1, 2), bm.transpose(1, 2)
        for _ in range(RICCATI_ITERATIONS):
            k = torch.linalg.solve(LQR_R + bt @ s @ bm, bt @ s @ a)  # (U, 1, 2)
            s_next = q + at @ s @ (a - bm @ k)
            converged = torch.allclose(s_next, s, rtol=1e-12, atol=0.0)
            s = s_next
            if converged:
                break
        return k[inverse, 0, :].to(device=env.device, dtype=env.dtype)

    def energy_gap(self, theta: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
        """Energy missing to reach upright at rest (J, of the first link's rigid-body model)."""
        energy = 0.5 * self.inertia * omega**2 - self.mgl * torch.cos(theta)
        return self.mgl - energy

    def action(self, state: torch.Tensor, t: int) -> torch.Tensor:
        """Action ``(B,)`` in [-1, 1] for ``state (B, 2 * links)`` at step ``t``."""
        env = self.env
        theta, omega = state[:, 0], state[:, 1]
        goal = env.goal_at(t)
        gap = self.energy_gap(theta, omega)
        direction = torch.where(omega >= 0, 1.0, -1.0).to(state.dtype)  # a kick from rest
        pump = direction * (PUMP_GAIN * gap / env.options.max_torque).clamp(0.0, 1.0)
        if env.options.reward == "spin":
            # Pump both ways while far below the top's energy; close to it, push only while turning the
            # goal's way (so it goes over the top that way) and coast otherwise; above it, push the goal's
            # way (keeps a right-way spin going, brakes a wrong-way one).
            far = gap > SPIN_NEAR * self.mgl
            goal_way = (goal * omega >= 0) | (gap < -SPIN_MARGIN * self.mgl)
            torque = torch.where(far, direction, torch.where(goal_way, goal, 0.0)) * env.options.max_torque
        else:
            torque = pump * env.options.max_torque
            if self.gain is not None:
                phi = wrap_angle(theta - math.pi)
                near = (phi.abs() < BALANCE_ANGLE) & (omega.abs() < BALANCE_SPEED)
                lqr = -(self.gain[:, 0] * phi + self.gain[:, 1] * omega)
                torque = torch.where(near, lqr, torque)
            # Stay down: above the horizontal push the way the pendulum leans (off the top, and against a rise
            # toward it), below it damp the swing. Damping alone holds an upright pendulum up, so after a goal
            # switch from +1 to -1 the controller kept it balanced (-1,000 over the second half).
            lean = torch.where(wrap_angle(theta - math.pi) >= 0, 1.0, -1.0).to(state.dtype)
            down = torch.where(torch.cos(theta) < 0, lean, -DAMP_GAIN * omega) * env.options.max_torque
            torque = torch.where(goal > 0, torque, down)
        return (torque / self.torque).clamp(-1.0, 1.0)


def run_reference(env: BatchedEnv, steps: int, keys: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``steps`` steps of the reference controller on ``env`` (advanced in place); with
    ``env.options.episode_steps`` the env is reset as in a lifetime (`metarl.core.step.reset_episode`:
    random inits draw the next episode's start from ``keys (B,)``, the lifetimes' keys). With
    ``env.options.obs_noise`` the controller acts on the state its observation shows, with the sensor
    noise the lifetimes of ``keys`` see (`metarl.core.step.observe`), so that it is judged under the same noise.

    Returns the summed reward ``(B,)`` float64, the rewards ``(B, T)`` and the states ``(B, T, 2 * links)``.
    """
    controller = ReferenceController(env)
    b = env.batch_size
    rewards = torch.zeros(b, steps, dtype=env.dtype, device=env.device)
    states = torch.zeros(b, steps, 2 * env.links, dtype=env.dtype, device=env.device)
    episodes = env.options.episode_steps is not None
    if episodes and keys is None and env.options.init in RANDOM_INITS:
        raise ValueError("run_reference: episodes with a random init need the lifetimes' keys")
    noisy, obs_keys = env.options.obs_noise > 0, None
    if noisy:
        if keys is None:
            raise ValueError("run_reference: env.obs_noise > 0 needs the lifetimes' keys (their sensor noise)")
        obs_keys = rng.stream_keys(keys, rng.STREAM_OBS_NOISE)
    for t in range(steps):
        if episodes:
            reset_episode(env, keys, t)
        seen = observed_state(env, observe(env, env.state, t, obs_keys)) if noisy else env.state
        _, rewards[:, t] = env.step(controller.action(seen, t))
        states[:, t] = env.state
    return rewards.double().sum(dim=1), rewards, states


def observed_state(env: BatchedEnv, x: torch.Tensor) -> torch.Tensor:
    """The state ``(B, 2 * links)`` that an observation ``x (B, 3 * links)`` shows (angles from the noisy sine
    and cosine, speeds as observed): what the controller acts on under sensor noise, as the actor does."""
    state = torch.empty(x.shape[0], 2 * env.links, dtype=x.dtype, device=x.device)
    state[:, 0::2] = torch.atan2(x[:, 0::3], x[:, 1::3])
    state[:, 1::2] = x[:, 2::3]
    return state
