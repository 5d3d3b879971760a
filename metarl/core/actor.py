"""The stochastic actor: one fully connected network per individual.

Per layer ``k``: ``s = x W + b`` ("sum"), ``z ~ Normal(s, sigma)`` ("sample"),
``y = tanh(z)`` ("output"). Weights ``(P, n_{k-1}, n_k)``, biases and noise scales
``(P, n_k)``. All state lives in `ActorState`; the functions here are pure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import rng

Normal = Callable[..., torch.Tensor]  # (keys, stream, count, *, dtype) -> (P, count), as rng.normal


@dataclass
class ActorState:
    """Plastic parameters and last activations of a population of actors."""

    weights: list[torch.Tensor]  # (P, n_{k-1}, n_k) for k = 1..L
    biases: list[torch.Tensor]  # (P, n_k)
    sigmas: list[torch.Tensor]  # (P, n_k)
    sums: list[torch.Tensor]  # s of the last forward pass, (P, n_k)
    samples: list[torch.Tensor]  # z
    outputs: list[torch.Tensor]  # y

    @property
    def sizes(self) -> list[int]:
        """Layer sizes ``[n_0, ..., n_L]``."""
        return [self.weights[0].shape[1]] + [w.shape[2] for w in self.weights]

    def clone(self) -> ActorState:
        """Deep copy."""
        return ActorState(*([t.clone() for t in ts] for ts in (
            self.weights, self.biases, self.sigmas, self.sums, self.samples, self.outputs)))


def neuron_count(sizes: list[int]) -> int:
    """Number of neurons with a bias (all layers but the input)."""
    return sum(sizes[1:])


def initial_actor(sizes: list[int], keys: torch.Tensor, *, weight_init: float, weight_limit: float,
                  sigma_init: float, dtype: torch.dtype = torch.float32, normal: Normal | None = None
                  ) -> ActorState:
    """Fresh actors for individuals with ``keys (P,)``: ``W, b ~ Normal(0, (weight_init*weight_limit)^2)``,
    numbers of `metarl.core.rng.normal` (``normal``: a faster computation of the same numbers)."""
    pop = keys.shape[0]
    std = weight_init * weight_limit
    counts = [a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)] + sizes[1:]
    draws = std * (normal or rng.normal)(keys, rng.STREAM_ACTOR_INIT, sum(counts), dtype=dtype)
    parts = list(torch.split(draws, counts, dim=1))
    layers = len(sizes) - 1
    weights = [parts[k].reshape(pop, sizes[k], sizes[k + 1]).contiguous() for k in range(layers)]
    biases = [parts[layers + k].contiguous() for k in range(layers)]
    sigmas = [torch.full_like(b, sigma_init) for b in biases]
    zeros = [torch.zeros_like(b) for b in biases]
    return ActorState(weights, biases, sigmas, zeros, [z.clone() for z in zeros], [z.clone() for z in zeros])


def forward(state: ActorState, x: torch.Tensor, noise: torch.Tensor) -> ActorState:
    """Run the actors on ``x (P, n_0)`` with standard-normal ``noise (P, sum n_k)``.

    Returns a new state with the activations filled in; the action is ``outputs[-1]``.
    """
    sums, samples, outputs = [], [], []
    start = 0
    for w, b, sigma in zip(state.weights, state.biases, state.sigmas, strict=True):
        n = w.shape[2]
        s = torch.baddbmm(b.unsqueeze(1), x.unsqueeze(1), w).squeeze(1)
        z = s + sigma * noise[:, start:start + n]
        x = torch.tanh(z)
        sums.append(s)
        samples.append(z)
        outputs.append(x)
        start += n
    return ActorState(state.weights, state.biases, state.sigmas, sums, samples, outputs)
