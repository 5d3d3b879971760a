"""Counter-based random numbers keyed per individual.

Every random draw of a lifetime (actor initialisation, environment parameters, initial
state, sampling noise, sensor noise) is a pure function of the individual's 32-bit key and a counter.
The key hashes every bit of the seed (`hash_ints`; a 64-bit seed is not taken modulo 2^32).
An individual therefore gets the same numbers whether it is evaluated alone, in a chunk
or inside a population sharded over processes, on any device. The mixer is Chris
Wellons' ``lowbias32`` integer hash, computed in int64 tensors holding 32-bit values. Normal
numbers (`normal`) are made of IEEE operations only, so they are the same bits on every CPU.
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
              dtype: torch.dtype = torch.float32, exact: bool = True) -> torch.Tensor:
    """Standard normal numbers ``offset .. offset+count-1`` (Box-Muller), ``(P, count)``.

    ``base (P,)`` are stream keys (`stream_keys`). ``offset`` may be a 0-d int64 tensor, so
    that a compiled step function does not specialise on the step number.

    The numbers are ``sqrt(-2 log u1) * cos(2 pi u2)`` in float32 with `log32`, `cos32` and `sqrt32`, the
    native kernel's own functions (kernel/vecmath.h) written in IEEE operations only, so they are the same
    bits on every CPU and device (torch's log, cos and sqrt are MKL's on Intel builds, whose last bits
    depend on the CPU). ``exact=False`` uses torch's functions instead: within a few ulp, about 10x faster
    in torch. The spec's and the compiled path's sampling and sensor noise use it (every step, where the
    exact form would cost more than the rule; the native kernel draws the exact numbers and is checked
    against the spec with a tolerance); the actor's initial weights are exact on every backend.
    """
    first = 2 * (offset + torch.arange(count, device=base.device, dtype=torch.int64))
    if not exact:
        u1 = _uniform_at(base, first, dtype)
        u2 = _uniform_at(base, first + 1, dtype)
        return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
    rows = max(1, _CHUNK // max(count, 1))  # chunks that stay in cache: about 1.7x faster for large draws
    parts = [_box_muller32(_uniform_at(b, first, torch.float32), _uniform_at(b, first + 1, torch.float32))
             for b in base.split(rows)]
    if not parts:  # no individuals
        return torch.empty(0, count, dtype=dtype, device=base.device)
    return (parts[0] if len(parts) == 1 else torch.cat(parts)).to(dtype)


_CHUNK = 1 << 16  # numbers per piece of an exact draw


def _box_muller32(u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """``sqrt(-2 log u1) * cos(2 pi u2)`` in float32, as the kernel computes it."""
    return sqrt32(-2.0 * log32(u1)) * cos32(_TWO_PI * u2)


# ---------------------------------------------------------------------------- portable float32 functions
# The native kernel's log and cos (kernel/vecmath.h: Cephes logf and sinf/cosf) and a correctly rounded
# sqrt, operation for operation, from IEEE operations only (float32 and float64 +, -, *, comparisons, bit
# views, nextafter): each of those is correctly rounded, so the results are the same bits wherever they run.
# Every fused multiply-add of the kernel is `fma32`. tests/test_portable.py compares them with the kernel.

def _f32(c: float) -> float:
    """``c`` rounded to float32 (a C++ ``f`` literal), as a Python float."""
    return float(torch.tensor(c, dtype=torch.float32))


_TWO_PI = _f32(2.0 * _f32(math.pi))  # (2.0f * PI) of the kernel


def fma32(a: torch.Tensor, b: torch.Tensor | float, c: torch.Tensor | float) -> torch.Tensor:
    """``a * b + c`` in float32 with one rounding (IEEE fusedMultiplyAdd), for float32 ``a``, ``b``, ``c``.

    The product of two float32 numbers is exact in float64; its sum with ``c`` is rounded to odd (TwoSum
    gives the sum's error; an inexact sum with an even last bit moves one ulp towards the error), and a
    number rounded to odd at 53 bits rounds to 24 bits as the exact value would (53 >= 2 * 24 + 2)."""
    p = a.double() * (b.double() if isinstance(b, torch.Tensor) else b)
    c64 = c.double() if isinstance(c, torch.Tensor) else c
    s = p + c64
    bb = s - p
    err = (p - (s - bb)) + (c64 - bb)
    even = (s.view(torch.int64) & 1) == 0
    away = torch.copysign(torch.full_like(s, math.inf), err)  # towards the error's side
    s = torch.where((err != 0) & even, torch.nextafter(s, away), s)
    return s.float()


def log32(x: torch.Tensor) -> torch.Tensor:
    """Natural log of float32 ``x > 0``: the kernel's ``vlog`` (Cephes logf)."""
    x = torch.clamp_min(x, _f32(1.17549435e-38))
    e = (x.view(torch.int32) >> 23) - 126
    x = ((x.view(torch.int32) & ~0x7F800000) | 0x3F000000).view(torch.float32)  # mantissa in [0.5, 1)
    ef = e.float()
    small = x < _f32(0.707106781186547524)
    ef = torch.where(small, ef - 1.0, ef)
    x = torch.where(small, x + x, x) - 1.0
    z = x * x
    y = fma32(x, _f32(7.0376836292e-2), _f32(-1.1514610310e-1))
    for coefficient in (1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1,
                        -2.4999993993e-1, 3.3333331174e-1):
        y = fma32(y, x, _f32(coefficient))
    y = y * x * z
    y = fma32(ef, _f32(-2.12194440e-4), y)
    y = fma32(z, -0.5, y)
    return fma32(ef, 0.693359375, x + y)


def cos32(x: torch.Tensor) -> torch.Tensor:
    """Cosine of float32 ``x``, ``|x| < 8192``: the kernel's ``vcos`` (Cephes sinf/cosf)."""
    a = x.abs()
    j = (a * _f32(1.27323954473516)).to(torch.int32)  # truncation, as __builtin_convertvector
    j = (j + 1) & ~1
    y = j.float()
    negative = (~(j - 2) & 4) != 0
    use_sin_poly = (j & 2) == 0
    r = ((a - y * 0.78515625) - y * _f32(2.4187564849853515625e-4)) - y * _f32(3.77489497744594108e-8)
    z = r * r
    pc = fma32(z, _f32(2.443315711809948e-5), _f32(-1.388731625493765e-3))
    pc = fma32(pc, z, _f32(4.166664568298827e-2))
    pc = fma32(pc * z, z, fma32(z, -0.5, 1.0))
    ps = fma32(z, _f32(-1.9515295891e-4), _f32(8.3321608736e-3))
    ps = fma32(ps, z, _f32(-1.6666654611e-1))
    ps = fma32(ps * z, r, r)
    c = torch.where(use_sin_poly, pc, ps)
    return torch.where(negative, -c, c)


def sqrt32(x: torch.Tensor) -> torch.Tensor:
    """Correctly rounded square root of float32 ``x >= 0`` (the kernel's sqrtf): torch's float64 sqrt
    rounded to float32, then moved to the neighbour whose rounding interval holds ``x``. The interval's
    ends are midpoints of float32 neighbours, 25 bits, whose squares (50 bits) are exact in float64."""
    r = torch.sqrt(x.double()).float()
    x64 = x.double()
    for _ in range(2):
        up, down = torch.nextafter(r, torch.full_like(r, math.inf)), torch.nextafter(r, torch.zeros_like(r))
        hi, lo = (r.double() + up.double()) * 0.5, (r.double() + down.double()) * 0.5
        r = torch.where(x64 > hi * hi, up, torch.where((x64 < lo * lo) & (r > 0), down, r))
    return r


def normal(keys: torch.Tensor, stream: int, count: int, *, offset: int = 0,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal numbers (Box-Muller), shape ``(P, count)``."""
    return normal_at(stream_keys(keys, stream), offset, count, dtype=dtype)
