"""The native lifetime kernel: whole lifetimes on CPU, 16 individuals per SIMD vector.

`metarl/native.cpp` holds the step (observation, noise, actor, physics, reward, learning
rule) written with GCC vector extensions: each instruction advances 16 individuals, and a
block of 16 runs through all its steps inside the cache. It is the default lifetime path
on CPU (``runtime.native``).

The source is compiled on first use with the system C++ compiler (``$CXX``, else ``c++``
or ``g++``, the compiler `torch.compile` needs as well) for the rule's signal and state
sizes and this CPU, and cached in ``$METARL_CACHE`` (default ``~/.cache/metarl``); a later
process loads the cached library in milliseconds. If no compiler works, `run_lifetimes`
warns and uses the torch paths instead.

Results equal the torch paths up to rounding (tests: within 1e-5 of `metarl.reference`
over 50 steps). As everywhere in metarl, an individual's numbers do not depend on which
individuals share its block, call or thread.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from . import fused
from .actor import ActorState
from .envs.base import BatchedEnv
from .errors import UserError
from .rule import RuleState

SOURCE = Path(__file__).with_name("native.cpp")
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-std=c++17", "-shared", "-fPIC",
         "-pthread")
MAX_LAYERS = 8  # MAX_LAYERS of native.cpp
BUILD_TIMEOUT_S = 300

_libraries: dict[tuple[int, int], ctypes.CDLL | str] = {}
_lock = threading.Lock()


class NativeUnavailable(UserError):
    """The kernel cannot be built or loaded here (no compiler, a compile error); with
    ``runtime.native: true`` the scripts report it as one line."""


def library(signal_dim: int, state_dim: int) -> ctypes.CDLL:
    """The kernel for this rule shape, built or loaded once per process; raises `NativeUnavailable`."""
    key = (signal_dim, state_dim)
    with _lock:
        if key not in _libraries:
            try:
                _libraries[key] = _load(_build(signal_dim, state_dim))
            except NativeUnavailable as e:
                _libraries[key] = str(e)
        lib = _libraries[key]
    if isinstance(lib, str):
        raise NativeUnavailable(lib)
    return lib


def supported(sizes: list[int], links: int) -> str | None:
    """Why the kernel cannot run this network and env, or None if it can."""
    if not 1 <= len(sizes) - 1 <= MAX_LAYERS:
        return f"the native kernel handles 1 to {MAX_LAYERS} layers, got {len(sizes) - 1}"
    if links not in (1, 2):
        return f"the native kernel handles 1 or 2 links, got {links}"
    return None


def cache_dir() -> Path:
    """Where built kernels are kept (``$METARL_CACHE``, default ``~/.cache/metarl``)."""
    root = os.environ.get("METARL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "metarl")
    return Path(root) / "native"


def _compiler() -> str:
    chosen = os.environ.get("CXX")
    if chosen:
        found = shutil.which(chosen)
        if not found:
            raise NativeUnavailable(f"the C++ compiler CXX={chosen} was not found")
        return found
    for name in ("c++", "g++"):
        found = shutil.which(name)
        if found:
            return found
    raise NativeUnavailable("no C++ compiler found (set CXX, or install g++)")


def compiler_found() -> bool:
    """Whether a C++ compiler is there (``$CXX``, ``c++`` or ``g++``); `torch.compile` on CPU needs one too."""
    try:
        _compiler()
    except NativeUnavailable:
        return False
    return True


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the CPU's model and feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return os.uname().machine
    lines = [ln for ln in text.splitlines() if ln.startswith(("flags", "model name", "Features", "CPU part"))]
    return "\n".join(sorted(set(lines)))


def _build(signal_dim: int, state_dim: int) -> Path:
    compiler = _compiler()
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise NativeUnavailable(f"{compiler} --version failed: {e}") from None
    defines = (f"-DMETARL_S={signal_dim}", f"-DMETARL_H={state_dim}")
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(FLAGS + defines).encode(), version.encode(), _cpu_id().encode()):
        digest.update(part)
    directory = cache_dir()
    path = directory / f"native_s{signal_dim}_h{state_dim}_{digest.hexdigest()[:16]}.so"
    if path.exists():
        return path
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".so.tmp")
        os.close(fd)
    except OSError as e:
        raise NativeUnavailable(f"cannot write to {directory}: {e}") from None
    try:
        done = subprocess.run([compiler, *FLAGS, *defines, str(SOURCE), "-o", tmp], capture_output=True,
                              text=True, timeout=BUILD_TIMEOUT_S)
        if done.returncode != 0:
            raise NativeUnavailable(f"{compiler} failed: {done.stderr.strip()[-500:]}")
        os.replace(tmp, path)  # atomic: concurrent builders (torchrun ranks) each write their own temp file
    except (OSError, subprocess.SubprocessError) as e:
        raise NativeUnavailable(f"building the native kernel failed: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _load(path: Path) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise NativeUnavailable(f"cannot load {path}: {e}") from None
    lib.metarl_run.restype = ctypes.c_int64
    lib.metarl_run.argtypes = [ctypes.c_int64] * 5 + [ctypes.c_void_p] * 9
    lib.metarl_rule_steps.restype = ctypes.c_int64
    lib.metarl_rule_steps.argtypes = [ctypes.c_int64] * 3 + [ctypes.c_void_p] * 7
    lib.metarl_elementwise.restype = ctypes.c_int64
    lib.metarl_elementwise.argtypes = [ctypes.c_int64] * 2 + [ctypes.c_void_p] * 2
    lib.metarl_genome_size.restype = ctypes.c_int64
    return lib


def _buffers(genomes: torch.Tensor, env_buffers: list[torch.Tensor], actor: fused.FusedActor,
             rule: RuleState) -> list[torch.Tensor]:
    """The ``bufs`` of native.cpp in its order, each ``(features, P)``: genome, env parameters, motor
    sign, goal sign, env state, last height, then the actor's and the rule's state (updated in place)."""
    return [genomes.t().contiguous(), *env_buffers, *actor.weights, *actor.biases, *actor.sigmas, *actor.sums,
            *actor.samples, *actor.outputs, rule.reward, *rule.nodes, *rule.edges]


def _pointers(tensors: list[torch.Tensor]) -> ctypes.Array:
    return (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])


def _int64s(values: list[int]) -> ctypes.Array:
    return (ctypes.c_int64 * len(values))(*values)


class Runner:
    """Runs the kernel on the state of one `metarl.lifetime.Lifetime`, updating it in place.

    ``actor`` and ``rule`` are feature-major (`metarl.fused`); the env's state and last
    height are copied in and out on every call, so assigning ``env.state`` takes effect.
    """

    def __init__(self, lib: ctypes.CDLL, genomes: torch.Tensor, env: BatchedEnv, actor: fused.FusedActor,
                 rule: RuleState, noise_keys: torch.Tensor, *, learning_rate: float, weight_limit: float,
                 sigma_limit: float, plastic: bool, zero_reward: bool, seen_rewards: torch.Tensor | None = None
                 ) -> None:
        if genomes.device.type != "cpu" or genomes.dtype != torch.float32:
            raise ValueError("the native kernel runs float32 on CPU")
        if lib.metarl_genome_size() != genomes.shape[1]:
            raise ValueError(f"genome size {genomes.shape[1]} does not match the native kernel's "
                             f"{lib.metarl_genome_size()}")
        self.lib = lib
        self.env = env
        self.pop = genomes.shape[0]
        self.sizes = actor.view().sizes
        self.state = env.state.t().contiguous()
        self.prev_height = torch.full((1, self.pop), float("nan"))
        params = torch.stack([env.params[name] for name in env.param_defaults]).contiguous()
        self._buffers = _buffers(genomes, [params, env.action_sign.reshape(1, -1).contiguous(),
                                           env.goal.reshape(1, -1).contiguous(), self.state, self.prev_height],
                                 actor, rule)
        # (T, P): the rewards the rule sees instead of its own, or None.
        self._seen = None if seen_rewards is None else seen_rewards.t().float().contiguous()
        for t in self._buffers:
            if not (t.is_contiguous() and t.dtype == torch.float32 and t.shape[-1] == self.pop):
                raise ValueError("native kernel buffers must be contiguous float32 (features, P)")
        self._pointers = _pointers(self._buffers)
        self._sizes = _int64s(self.sizes)
        # 32-bit keys as int32 bit patterns (the kernel reads uint32).
        self._keys = torch.where(noise_keys >= 2**31, noise_keys - 2**32, noise_keys).to(torch.int32).contiguous()
        max_speed = env.options.max_speed if env.options.max_speed is not None else -1.0
        o = env.options
        self._scalars = (ctypes.c_float * 6)(o.dt, o.max_torque, max_speed, learning_rate, weight_limit,
                                             sigma_limit)
        self._flags = _int64s([env.links, int(o.integrator == "rk4"), int(o.reward == "height_delta"), int(plastic),
                               int(zero_reward), int(sigma_limit != 0), int(o.reward == "spin"),
                               -1 if o.goal_switch is None else o.goal_switch])

    def run(self, steps: int, t0: int, fitness: torch.Tensor, rewards: torch.Tensor | None = None,
            states: torch.Tensor | None = None) -> None:
        """Advance ``steps`` steps from step number ``t0``: ``fitness (P,)`` float64 += each reward;
        ``rewards (steps, P)`` float32 receives them and ``states (steps, 2 * links, P)`` float32 the
        env state after each step, if given."""
        if fitness.shape != (self.pop,) or fitness.dtype != torch.float64 or not fitness.is_contiguous():
            raise ValueError("fitness must be a contiguous float64 (P,) tensor")
        if rewards is not None and (rewards.shape != (steps, self.pop) or rewards.dtype != torch.float32
                                    or not rewards.is_contiguous()):
            raise ValueError(f"rewards must be a contiguous float32 ({steps}, {self.pop}) tensor")
        n_state = 2 * self.env.links
        if states is not None and (states.shape != (steps, n_state, self.pop) or states.dtype != torch.float32
                                   or not states.is_contiguous()):
            raise ValueError(f"states must be a contiguous float32 ({steps}, {n_state}, {self.pop}) tensor")
        seen = None
        if self._seen is not None:
            if self._seen.shape[0] < t0 + steps:
                raise ValueError(f"seen_rewards cover {self._seen.shape[0]} steps, need {t0 + steps}")
            seen = self._seen[t0:]
        env = self.env
        self.state.copy_(env.state.t())
        prev = env.prev_height
        self.prev_height[0] = float("nan") if prev is None else prev
        code = self.lib.metarl_run(self.pop, steps, t0, torch.get_num_threads(), len(self.sizes) - 1,
                                   ctypes.addressof(self._sizes), ctypes.addressof(self._pointers),
                                   self._keys.data_ptr(), fitness.data_ptr(),
                                   None if rewards is None else rewards.data_ptr(),
                                   None if states is None else states.data_ptr(),
                                   None if seen is None else seen.data_ptr(),
                                   ctypes.addressof(self._scalars), ctypes.addressof(self._flags))
        if code != 0:
            raise RuntimeError(f"native kernel failed with code {code}")
        env.restore(self.state.t().contiguous(), self.prev_height[0].clone(), t0 + steps)


def rule_steps(genomes: torch.Tensor, actor: fused.FusedActor, rule: RuleState, x: torch.Tensor,
               noise: torch.Tensor, reward: torch.Tensor, *, signal_dim: int, state_dim: int, learning_rate: float,
               weight_limit: float, sigma_limit: float) -> None:
    """For tests: ``T`` actor passes and rule applications with given inputs, updating ``actor``
    and ``rule`` (feature-major) in place. ``x (T, n_0, P)``, ``noise (T, neurons, P)``, ``reward (T, P)``."""
    lib = library(signal_dim, state_dim)
    pop = genomes.shape[0]
    sizes = actor.view().sizes
    links = sizes[0] // 3
    buffers = _buffers(genomes, [torch.zeros(n, pop) for n in (4 if links == 1 else 6, 1, 1, 2 * links, 1)],
                       actor, rule)
    pointers, c_sizes = _pointers(buffers), _int64s(sizes)
    scalars = (ctypes.c_float * 6)(0.05, 1.0, -1.0, learning_rate, weight_limit, sigma_limit)
    flags = _int64s([links, 1, 0, 1, 0, 1, 0, -1])
    x, noise, reward = (t.float().contiguous() for t in (x, noise, reward))
    code = lib.metarl_rule_steps(pop, x.shape[0], len(sizes) - 1, ctypes.addressof(c_sizes),
                                 ctypes.addressof(pointers), x.data_ptr(), noise.data_ptr(), reward.data_ptr(),
                                 ctypes.addressof(scalars), ctypes.addressof(flags))
    if code != 0:
        raise RuntimeError(f"native kernel failed with code {code}")


def elementwise(name: str, x: torch.Tensor) -> torch.Tensor:
    """For tests: the kernel's ``tanh``, ``sin``, ``cos``, ``log`` or ``exp`` of float32 ``x`` (size: 16k)."""
    lib = library(1, 0)
    x = x.float().contiguous()
    y = torch.empty_like(x)
    code = lib.metarl_elementwise(("tanh", "sin", "cos", "log", "exp").index(name), x.numel(), x.data_ptr(),
                                  y.data_ptr())
    if code != 0:
        raise RuntimeError(f"native kernel failed with code {code}")
    return y


def copy_actor(actor: fused.FusedActor) -> ActorState:
    """Population-first copies of a feature-major actor the kernel keeps updating."""
    return fused.FusedActor.of(actor, torch.Tensor.clone).view()
