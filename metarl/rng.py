"""Counter-based random numbers keyed per individual.

Every random draw of a lifetime (actor initialisation, environment parameters, initial
state, sampling noise) is a pure function of the individual's 32-bit key and a counter.
An individual therefore gets the same numbers whether it is evaluated alone, in a chunk
or inside a population sharded over processes, on any device. The mixer is Chris
Wellons' ``lowbias32`` integer hash, computed in int64 tensors holding 32-bit values.
"""

from __future__ import annotations

import math

import torch

_MASK = 0xFFFFFFFF

# Stream ids: distinct random streams of one individual.
STREAM_ACTOR_INIT = 1
STREAM_ENV_PARAMS = 2
STREAM_ENV_INIT = 3
STREAM_NOISE = 4


def hash32(x: torch.Tensor) -> torch.Tensor:
    """Bijective 32-bit integer hash of an int64 tensor of values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK
    return x ^ (x >> 16)


def hash_ints(*values: int) -> int:
    """Hash a tuple of Python ints into one 32-bit key."""
    h = 0x2545F491
    for v in values:
        h = int(hash32(torch.tensor([(h ^ (int(v) & _MASK)) & _MASK]))[0])
        h = (h + 0x9E3779B9) & _MASK
    return h


def individual_keys(seed: int, generation: int, evaluation: int, indices: torch.Tensor) -> torch.Tensor:
    """Keys ``(P,)`` of the individuals at population ``indices`` for one lifetime."""
    base = hash_ints(seed, generation, evaluation)
    return hash32((indices.to(torch.int64) * 0x9E3779B9 + base) & _MASK)


def _bits(keys: torch.Tensor, stream: int, counters: torch.Tensor) -> torch.Tensor:
    """Random 32-bit values ``(P, C)`` for ``keys (P,)`` and ``counters (C,)``."""
    base = hash32(keys ^ hash_ints(stream))
    return hash32(base[:, None] ^ hash32(counters)[None, :])


def uniform(keys: torch.Tensor, stream: int, count: int, *, offset: int = 0,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform numbers in (0, 1), shape ``(P, count)``."""
    counters = torch.arange(offset, offset + count, device=keys.device, dtype=torch.int64)
    bits = _bits(keys, stream, counters)
    return ((bits >> 8).to(dtype) + 0.5) * (1.0 / (1 << 24))


def normal(keys: torch.Tensor, stream: int, count: int, *, offset: int = 0,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal numbers (Box-Muller), shape ``(P, count)``."""
    u = uniform(keys, stream, 2 * count, offset=2 * offset, dtype=dtype)
    u1, u2 = u[:, 0::2], u[:, 1::2]
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
