"""Counter-based random numbers keyed per individual.

Every random draw of a lifetime (actor initialisation, environment parameters, initial
state, sampling noise, sensor noise) is a pure function of the individual's 32-bit key and a counter.
The key hashes every bit of the seed (`hash_ints`; a 64-bit seed is not taken modulo 2^32).
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
STREAM_OBS_NOISE = 5  # sensor noise on the observation (env.obs_noise)


def hash32(x: torch.Tensor) -> torch.Tensor:
    """Bijective 32-bit integer hash of an int64 tensor of values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK
    return x ^ (x >> 16)


def hash_ints(*values: int) -> int:
    """Hash a tuple of non-negative Python ints into one 32-bit key; every bit of every value counts.

    The low 32 bits of each value are hashed in order; then, for each value of 2^32 or more (a 64-bit
    seed), its position and its higher 32-bit words. Values below 2^32 hash exactly as before, so the
    keys (and logs) of every run with such values are unchanged, while seeds 7 and 2^32 + 7 differ."""
    words = [int(v) & _MASK for v in values]
    for i, v in enumerate(values):
        high = int(v) >> 32 if int(v) >= 0 else 0
        while high:
            words += [0x80000000 | i, high & _MASK]
            high >>= 32
    h = 0x2545F491
    for w in words:
        h = int(hash32(torch.tensor([(h ^ w) & _MASK]))[0])
        h = (h + 0x9E3779B9) & _MASK
    return h


def individual_keys(seed: int, generation: int, evaluation: int, indices: torch.Tensor) -> torch.Tensor:
    """Keys ``(P,)`` of the individuals at population ``indices`` for one lifetime."""
    base = hash_ints(seed, generation, evaluation)
    return hash32((indices.to(torch.int64) * 0x9E3779B9 + base) & _MASK)


def stream_keys(keys: torch.Tensor, stream: int) -> torch.Tensor:
    """Keys ``(P,)`` of one stream of the individuals with ``keys (P,)``."""
    return hash32(keys ^ hash_ints(stream))


def _uniform_at(base: torch.Tensor, counters: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Uniform numbers in (0, 1), ``(P, C)``, for stream keys ``base (P,)`` and ``counters (C,)``."""
    bits = hash32(base[:, None] ^ hash32(counters)[None, :])
    return ((bits >> 8).to(dtype) + 0.5) * (1.0 / (1 << 24))


def uniform(keys: torch.Tensor, stream: int, count: int, *, offset: int = 0,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform numbers in (0, 1), shape ``(P, count)``."""
    counters = torch.arange(offset, offset + count, device=keys.device, dtype=torch.int64)
    return _uniform_at(stream_keys(keys, stream), counters, dtype)


def normal_at(base: torch.Tensor, offset: int | torch.Tensor, count: int, *,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal numbers ``offset .. offset+count-1`` (Box-Muller), ``(P, count)``.

    ``base (P,)`` are stream keys (`stream_keys`). ``offset`` may be a 0-d int64 tensor, so
    that a compiled step function does not specialise on the step number.
    """
    first = 2 * (offset + torch.arange(count, device=base.device, dtype=torch.int64))
    u1 = _uniform_at(base, first, dtype)
    u2 = _uniform_at(base, first + 1, dtype)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)


def normal(keys: torch.Tensor, stream: int, count: int, *, offset: int = 0,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal numbers (Box-Muller), shape ``(P, count)``."""
    return normal_at(stream_keys(keys, stream), offset, count, dtype=dtype)
