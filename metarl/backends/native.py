"""The native lifetime kernel: whole lifetimes on CPU, 8 or 16 individuals per SIMD vector.

`metarl/backends/kernel/` holds the step (observation, noise, actor, physics, reward, learning
rule) written with GCC vector extensions: each instruction advances one register of
individuals (16 with AVX-512, else 8), and a block of them runs through all its steps
inside the cache. It is the default lifetime path
on CPU (``runtime.native``).

The source is compiled on first use with the system C++ compiler (``$CXX``, else ``c++``
or ``g++``, the compiler `torch.compile` needs as well) for the rule's signal and state
sizes and this CPU (``-march=native``, or ``$METARL_MARCH``), and cached in
``$METARL_CACHE`` (default ``~/.cache/metarl``); a later process loads the cached library
in milliseconds. If no compiler works, `run_lifetimes` warns and uses the torch paths instead.

The call's arguments are described structures (`Network`, `Options`, `GenomeMap`,
`Buffers`: ctypes mirrors of the structs of kernel/interface.h, checked at load field by field,
every offset and size by name, against the kernel's own table), built from the layer sizes,
`metarl.envs.base.EnvOptions`, `metarl.core.genome.GenomeLayout` and the tensors by name: nothing is
matched by position. The buffers are feature-major (`FeatureMajor`: the population last).

The kernel knows no rule declaration and no environment: what the rule's cells read, how its traces change and
what the environment does is ``program.h``, generated from their Python definitions by `metarl.backends.codegen`
(`program`); a library is built per program (cached by the hash of its code, the sizes and the flags). What
the generator cannot turn into vector code, `declines` names in one line, and `metarl.backends` then runs the
spec's step instead.

Results equal the torch paths up to rounding (tests: within 1e-5 of `metarl.core.spec`
over 50 steps), and are bit for bit the same on every x86-64 CPU with FMA, whatever the
``-march`` or vector width (tests/test_portable.py). As everywhere in metarl, an
individual's numbers do not depend on which individuals share its block, call or thread.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from .. import envs
from ..core import rng
from ..core.actor import ActorState
from ..core.genome import GenomeLayout
from ..core.rule import CELLS, REWARD_MEAN_TIME, RuleDeclaration, RuleState
from ..cpu import cpu_flags
from ..envs.base import OBS_PER_LINK, BatchedEnv, EnvOptions
from ..errors import UserError
from . import codegen

SOURCE_DIR = Path(__file__).with_name("kernel")  # vecmath.h, interface.h, rule.h, driver.cpp (and program.h, generated)
SOURCE = SOURCE_DIR / "driver.cpp"
# -ffp-contract=off: the compiler never fuses a multiply and an add on its own; the kernel writes every
# fused multiply-add it wants explicitly (vecmath.h `fma`), so its numbers are the same for every -march
# and every x86-64 CPU with FMA (Intel or AMD, AVX2 or AVX-512): IEEE operations in a fixed order.
FLAGS = ("-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-std=c++17", "-shared", "-fPIC",
         "-pthread")
# The instruction set it is compiled for: speed only, never the numbers. ``$METARL_MARCH`` overrides it
# (e.g. x86-64-v3 for a library that any AVX2+FMA machine can load).
DEFAULT_MARCH = "native"
MAX_LAYERS = 8  # MAX_LAYERS of kernel/vecmath.h
MAX_SCALARS = 16  # MAX_SCALARS of kernel/vecmath.h
BUILD_TIMEOUT_S = 300

_libraries: dict[tuple[int, int, str, int | None, str], ctypes.CDLL | str] = {}
_lock = threading.Lock()


class NativeUnavailable(UserError):
    """The kernel cannot be built or loaded here (no compiler, a compile error); with
    ``runtime.native: true`` the scripts report it as one line."""


def march() -> str:
    """The ``-march`` the kernel is built for: ``$METARL_MARCH``, else ``native``."""
    return os.environ.get("METARL_MARCH") or DEFAULT_MARCH


def library(signal_dim: int, state_dim: int, target: str | None = None, lanes: int | None = None,
            prog: codegen.Program | None = None) -> ctypes.CDLL:
    """The kernel for this rule shape and program (default: `default_program`), built or loaded once per process;
    raises `NativeUnavailable`. ``target`` is the ``-march`` (default `march()`) and ``lanes`` the individuals per
    vector (default: one register, 16 with AVX-512, else 8): both change the speed, never the numbers (tests
    compare them)."""
    prog = default_program(signal_dim) if prog is None else prog
    key = (signal_dim, state_dim, target or march(), lanes, prog.digest)
    with _lock:
        if key not in _libraries:
            try:
                _libraries[key] = _load(_build(*key[:4], prog), prog)
            except NativeUnavailable as e:
                _libraries[key] = str(e)
        lib = _libraries[key]
    if isinstance(lib, str):
        raise NativeUnavailable(lib)
    return lib


_programs: dict[tuple, codegen.Program | str] = {}


def program(rule: RuleDeclaration, env: BatchedEnv, signal_dim: int) -> codegen.Program:
    """The generated code (`metarl.backends.codegen.generate`) of ``rule`` and the environment ``env`` (its class
    and options), once per process for each; raises `NativeUnavailable` naming what has no vector form."""
    sources = tuple(id(codegen.SOURCES[i.source].fn) for c in rule.cells for i in c.inputs)
    traces = tuple(id(codegen.TRACES[t].update) for t in rule.traces)
    key = (rule.signature(), sources, traces, type(env), repr(env.options), signal_dim)
    with _lock:
        if key not in _programs:
            try:
                _programs[key] = codegen.generate(rule, env, signal_dim)
            except codegen.Unsupported as e:
                _programs[key] = (f"the native kernel cannot generate the rule {rule.name!r} with the environment "
                                  f"{type(env).name or type(env).__name__}: {e}")
        found = _programs[key]
    if isinstance(found, str):
        raise NativeUnavailable(found)
    return found


def default_program(signal_dim: int) -> codegen.Program:
    """The standard rule on the Pendulum: the program of `library` calls that run no lifetime (tests, noise)."""
    from ..core.rule import STANDARD
    return program(STANDARD, envs.make("Pendulum", 1), signal_dim)


def declines(rule: RuleDeclaration, env: BatchedEnv, signal_dim: int) -> str | None:
    """Why the kernel cannot run ``rule`` with the environment ``env`` (one line: what has no vector form), or
    None if it can (`program`)."""
    try:
        program(rule, env, signal_dim)
    except NativeUnavailable as e:
        return str(e)
    return None


def supported(sizes: list[int], prog: codegen.Program, signal_dim: int, state_dim: int) -> str | None:
    """Why the kernel cannot run this network and program with this rule shape here (one line), or None if it
    can. Builds or loads the kernel (`library`)."""
    if not 1 <= len(sizes) - 1 <= MAX_LAYERS:
        return f"the native kernel handles 1 to {MAX_LAYERS} layers, got {len(sizes) - 1}"
    if sizes[0] != prog.n_obs:
        return f"the actor reads {sizes[0]} observations, the environment gives {prog.n_obs}"
    if not cpu_has_fma():
        return "the native kernel needs a CPU with FMA (x86-64-v3: AVX2 and FMA); this one has none"
    try:
        library(signal_dim, state_dim, prog=prog)
    except NativeUnavailable as e:
        return str(e)
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


def cpu_has_fma() -> bool:
    """Whether this CPU has FMA, which the kernel's arithmetic is written in (x86-64-v3: AVX2 + FMA). Where
    the flags are unknown, the compiler's check (``#error`` without __FMA__) decides."""
    flags = cpu_flags()
    return flags is None or "fma" in flags


def default_lanes() -> int:
    """Individuals per vector of a build for this CPU: one register, 16 with AVX-512, else 8 (vecmath.h)."""
    flags = cpu_flags()
    return 16 if flags is not None and "avx512f" in flags else 8


def _build(signal_dim: int, state_dim: int, target: str, lanes: int | None, prog: codegen.Program) -> Path:
    compiler = _compiler()
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise NativeUnavailable(f"{compiler} --version failed: {e}") from None
    flags = (*FLAGS, f"-march={target}", f"-DMETARL_S={signal_dim}", f"-DMETARL_H={state_dim}",
             f"-DMETARL_PROGRAM={prog.digest}", *([] if lanes is None else [f"-DMETARL_LANES={lanes}"]))
    # The cache key: everything the library depends on. The numbers depend on the sources and the flags
    # alone; the compiler and the CPU (for -march=native) decide which instructions compute them.
    digest = hashlib.sha256()
    sources = [path.read_bytes() for path in sorted(SOURCE_DIR.iterdir()) if path.suffix in (".h", ".cpp")]
    for part in (*sources, prog.code.encode(), " ".join(flags).encode(), version.encode(), _cpu_id().encode()):
        digest.update(part)
    directory = cache_dir()
    safe_target = "".join(c if c.isalnum() or c in "-_." else "_" for c in target)
    width = "" if lanes is None else f"_l{lanes}"
    path = directory / (f"native_{prog.rule}_{prog.env}_s{signal_dim}_h{state_dim}_{safe_target}{width}_"
                        f"{digest.hexdigest()[:16]}.so")
    if path.exists():
        return path
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".so.tmp")
        os.close(fd)
        include = Path(tempfile.mkdtemp(dir=directory, prefix="program."))
        (include / "program.h").write_text(prog.code)
    except OSError as e:
        raise NativeUnavailable(f"cannot write to {directory}: {e}") from None
    try:
        done = subprocess.run([compiler, *flags, f"-I{include}", str(SOURCE), "-o", tmp], capture_output=True,
                              text=True, timeout=BUILD_TIMEOUT_S)
        if done.returncode != 0:
            raise NativeUnavailable(f"{compiler} failed: {done.stderr.strip()[-500:]}")
        os.replace(tmp, path)  # atomic: concurrent builders (torchrun ranks) each write their own temp file
    except (OSError, subprocess.SubprocessError) as e:
        raise NativeUnavailable(f"building the native kernel failed: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        shutil.rmtree(include, ignore_errors=True)
    return path


# ---------------------------------------------------------------------------- the call's structures
# Mirrors of the structures of kernel/interface.h (same names, same field order); `_load` checks their sizes.

_i32, _i64, _f32, _ptr = ctypes.c_int32, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
_LAYER_PTRS = _ptr * MAX_LAYERS


class Network(ctypes.Structure):
    """The actor's layer sizes ``[n_0 .. n_L]``."""

    _fields_ = [("layers", _i64), ("sizes", _i64 * (MAX_LAYERS + 1))]

    @classmethod
    def of(cls, sizes: list[int]) -> Network:
        return cls(len(sizes) - 1, (_i64 * (MAX_LAYERS + 1))(*sizes))


class Options(ctypes.Structure):
    """The skeleton's options (sensor noise, the rule's limits, the conditions, the goal's switch) and the program's
    runtime scalars (`metarl.backends.codegen.Program.scalars`)."""

    _fields_ = [("obs_noise", _f32), ("weight_limit", _f32), ("sigma_limit", _f32), ("sigma_min", _f32),
                ("plastic", _i32), ("zero_reward", _i32), ("noise", _i32), ("n_scalars", _i32),
                ("goal_switch", _i64), ("goal_switch_last", _i64), ("scalars", _f32 * MAX_SCALARS)]

    @classmethod
    def of(cls, env: EnvOptions, prog: codegen.Program, *, weight_limit: float, sigma_limit: float,
           sigma_min: float = 0.0, reward_mean_time: float = REWARD_MEAN_TIME, lifetime_steps: int = 1,
           plastic: bool = True, zero_reward: bool = False) -> Options:
        """The step ``dt`` and the learning rate are per individual: `Buffers` ``dt`` and ``learning_rate``."""
        # (max_speed None: the program has no clamp and reads no such scalar; -1 stands in, unread)
        values = {"max_torque": env.max_torque, "max_speed": -1.0 if env.max_speed is None else env.max_speed,
                  "reward_mean_time": reward_mean_time, "lifetime_steps": lifetime_steps}
        scalars = prog.scalar_values(values)
        if len(scalars) > MAX_SCALARS:
            raise NativeUnavailable(f"the program reads {len(scalars)} runtime scalars, the kernel takes at most "
                                    f"{MAX_SCALARS}")
        return cls(obs_noise=env.obs_noise, weight_limit=weight_limit, sigma_limit=sigma_limit,
                   sigma_min=sigma_min, plastic=plastic, zero_reward=zero_reward, noise=sigma_limit != 0,
                   n_scalars=len(scalars), goal_switch=-1 if env.goal_switch is None else env.switch_range[0],
                   goal_switch_last=-1 if env.goal_switch is None else env.switch_range[1],
                   scalars=(_f32 * MAX_SCALARS)(*scalars))


def _goal_rows(env: BatchedEnv) -> torch.Tensor:
    """The kernel's goal buffer ``(3, P)``: the goal before the switch, from it on, and the lifetime's switch step
    minus the range's first (0 for a single step or none; exact in float32, as the config bounds the range)."""
    step = torch.zeros_like(env.goal)
    if isinstance(env.switch_step, torch.Tensor):
        step = (env.switch_step - env.options.switch_range[0]).to(env.goal.dtype)
    return torch.stack((env.goal, env.goal_after_switch, step)).contiguous()


class CellMap(ctypes.Structure):
    """Where one cell's parameters start in the genome (each part row-major)."""

    _fields_ = [("inputs", _i32), ("outputs", _i32), ("w_state", _i32), ("b_state", _i32), ("w_output", _i32),
                ("b_output", _i32)]


class GenomeMap(ctypes.Structure):
    """The genome's row map, from `metarl.core.genome.GenomeLayout`."""

    _fields_ = [("reward", CellMap), ("node", CellMap), ("connection", CellMap), ("size", _i32)]

    @classmethod
    def of(cls, layout: GenomeLayout) -> GenomeMap:
        def cell(name: str) -> CellMap:
            shape = layout.cells[name]
            starts = {part: layout.slices[name, part][0].start for part in ("w_state", "b_state", "w_output",
                                                                            "b_output")}
            return CellMap(inputs=shape.inputs, outputs=shape.outputs, **starts)

        reward, node, connection = (cell(name) for name in CELLS)
        return cls(reward=reward, node=node, connection=connection, size=layout.size)


class Buffers(ctypes.Structure):
    """Pointers to the population's state, each ``(features, P)`` float32 (see kernel/interface.h)."""

    _fields_ = [("genome", _ptr), ("env_params", _ptr), ("sign", _ptr), ("goal", _ptr), ("dt", _ptr),
                ("learning_rate", _ptr), ("state", _ptr), ("prev_height", _ptr), ("weights", _LAYER_PTRS),
                ("biases", _LAYER_PTRS), ("sigmas", _LAYER_PTRS), ("sums", _LAYER_PTRS), ("samples", _LAYER_PTRS),
                ("outputs", _LAYER_PTRS), ("rule_reward", _ptr), ("nodes", _LAYER_PTRS), ("edges", _LAYER_PTRS),
                ("traces", _ptr)]

    @classmethod
    def of(cls, tensors: dict[str, torch.Tensor | list[torch.Tensor]]) -> Buffers:
        """From tensors by field name (lists for the per-layer fields); checks each is contiguous
        float32 ``(features, P)`` with one P. The caller keeps the tensors alive."""
        genome = tensors["genome"]
        if not isinstance(genome, torch.Tensor):
            raise ValueError("native kernel buffer genome must be a tensor, not a list")
        pop = genome.shape[-1]
        values: dict[str, int | ctypes.Array[ctypes.c_void_p]] = {}
        for name, value in tensors.items():
            for t in value if isinstance(value, list) else [value]:
                if not (t.is_contiguous() and t.dtype == torch.float32 and t.shape[-1] == pop):
                    raise ValueError(f"native kernel buffer {name} must be contiguous float32 (features, {pop})")
            if isinstance(value, list):
                values[name] = _LAYER_PTRS(*[t.data_ptr() for t in value])
            else:
                values[name] = value.data_ptr()
        return cls(**values)


def feature_major(t: torch.Tensor) -> torch.Tensor:
    """``(P, ...)`` -> a contiguous copy ``(..., P)``."""
    return t.movedim(0, -1).clone(memory_format=torch.contiguous_format)


def population_major(t: torch.Tensor) -> torch.Tensor:
    """``(..., P)`` -> a ``(P, ...)`` view."""
    return t.movedim(-1, 0)


_ACTOR_FIELDS = tuple(f.name for f in fields(ActorState))


@dataclass
class FeatureMajor:
    """The actor's and the rule's state with the population last, as the kernel reads and updates it:
    per `ActorState` field the per-layer tensors (weights ``(n_in, n_out, P)``, the rest ``(n, P)``), and the
    `RuleState` with its tensors ``(..., H, P)``."""

    actor: dict[str, list[torch.Tensor]]
    rule: RuleState

    @classmethod
    def of(cls, actor: ActorState, rule: RuleState, *, rule_population_last: bool = False) -> FeatureMajor:
        """Feature-major copies of ``actor`` (population first) and of ``rule`` (population first; or, with
        ``rule_population_last``, already feature-major, and then taken as it is)."""
        return cls({name: [feature_major(t) for t in getattr(actor, name)] for name in _ACTOR_FIELDS},
                   rule if rule_population_last else rule.map(feature_major))

    def actor_copy(self) -> ActorState:
        """Population-first copies of the actor."""
        return ActorState(*([population_major(t).clone() for t in self.actor[name]] for name in _ACTOR_FIELDS))

    def rule_copy(self) -> RuleState:
        """Population-first copies of the rule's state."""
        return self.rule.map(lambda t: population_major(t).clone())

    def buffers(self, genomes: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """The genome (transposed copy) and this state's tensors, by `Buffers` field (the traces as one ``(n, P)``
        tensor whose rows the rule state's traces then are, so that the kernel's updates show there)."""
        traces = {}
        if self.rule.traces:
            stacked = torch.stack(list(self.rule.traces.values())).contiguous()
            self.rule.traces = {name: stacked[n] for n, name in enumerate(self.rule.traces)}
            traces = {"traces": stacked}
        return {"genome": genomes.t().contiguous(), **{name: list(ts) for name, ts in self.actor.items()},
                "rule_reward": self.rule.reward, "nodes": list(self.rule.nodes), "edges": list(self.rule.edges),
                **traces}


MIRRORS: dict[str, type[ctypes.Structure]] = {"Network": Network, "Options": Options, "CellMap": CellMap,
                                              "GenomeMap": GenomeMap, "Buffers": Buffers}
MAX_FIELDS = 256


def check_structures(lib: ctypes.CDLL, mirrors: dict[str, type[ctypes.Structure]] | None = None) -> None:
    """Raise `NativeUnavailable` unless every structure of kernel/interface.h has its mirror here (``mirrors``,
    default `MIRRORS`) with the same size, the same fields, and each field at the same offset with the same size."""
    mirrors = MIRRORS if mirrors is None else mirrors
    names = (ctypes.c_char_p * MAX_FIELDS)()
    offsets, sizes = (ctypes.c_int64 * MAX_FIELDS)(), (ctypes.c_int64 * MAX_FIELDS)()
    count = lib.metarl_struct_fields(names, offsets, sizes, MAX_FIELDS)
    kernel = {(names[i] or b"").decode(): (offsets[i], sizes[i]) for i in range(min(count, MAX_FIELDS))}
    mine = {}
    for struct, cls in mirrors.items():
        for entry in cls._fields_:
            name = entry[0]
            field = getattr(cls, name)
            mine[f"{struct}.{name}"] = (field.offset, field.size)
    for name in sorted(set(kernel) | set(mine)):
        if kernel.get(name) != mine.get(name):
            def say(v: tuple[int, int] | None) -> str:
                return "no such field" if v is None else f"offset {v[0]}, size {v[1]}"
            raise NativeUnavailable(f"the native kernel's structure field {name} ({say(kernel.get(name))}) does not "
                                    f"match metarl/backends/native.py's mirror ({say(mine.get(name))})")
    table = (ctypes.c_int64 * 6)()
    lib.metarl_struct_sizes(table)
    want = [ctypes.sizeof(mirrors[n]) for n in ("Network", "Options", "GenomeMap", "Buffers")]
    if list(table[:4]) != want:
        raise NativeUnavailable(f"the kernel's structures (sizes {list(table[:4])}) do not match "
                                f"metarl/backends/native.py's mirrors ({want})")


def _load(path: Path, prog: codegen.Program) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise NativeUnavailable(f"cannot load {path}: {e}") from None
    described = [ctypes.POINTER(c) for c in (Network, Options, GenomeMap, Buffers)]
    lib.metarl_run.restype = ctypes.c_int64
    lib.metarl_run.argtypes = described + [ctypes.c_int64] * 4 + [ctypes.c_void_p] * 6
    lib.metarl_rule_steps.restype = ctypes.c_int64
    lib.metarl_rule_steps.argtypes = described + [ctypes.c_int64] * 2 + [ctypes.c_void_p] * 3
    lib.metarl_elementwise.restype = ctypes.c_int64
    lib.metarl_elementwise.argtypes = [ctypes.c_int64] * 2 + [ctypes.c_void_p] * 2
    lib.metarl_normal.restype = ctypes.c_int64
    lib.metarl_normal.argtypes = [ctypes.c_int64] * 3 + [ctypes.c_void_p] * 2
    lib.metarl_program.restype = ctypes.c_char_p
    lib.metarl_program.argtypes = [ctypes.c_void_p]
    lib.metarl_struct_sizes.restype = None
    lib.metarl_struct_sizes.argtypes = [ctypes.c_void_p]
    lib.metarl_struct_fields.restype = ctypes.c_int64
    lib.metarl_struct_fields.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64]
    try:
        check_structures(lib)
    except NativeUnavailable as e:
        raise NativeUnavailable(f"{path}: {e}") from None
    sizes = (ctypes.c_int64 * 5)()
    digest = lib.metarl_program(sizes)
    want = [prog.n_state, prog.n_obs, prog.n_params, len(prog.traces), len(prog.scalars)]
    if digest is None or digest.decode() != prog.digest or list(sizes) != want:
        raise NativeUnavailable(f"{path}: the library was built from another program than {prog.digest}")
    return lib


class Runner:
    """Runs the kernel on the state of one `metarl.backends.lifetime.Lifetime`, updating ``state`` in place.

    The env's state and last height are copied in and out on every call, so assigning
    ``env.state`` takes effect.
    """

    def __init__(self, lib: ctypes.CDLL, prog: codegen.Program, genomes: torch.Tensor, layout: GenomeLayout,
                 env: BatchedEnv,
                 state: FeatureMajor, noise_keys: torch.Tensor, *, learning_rate: float | torch.Tensor,
                 weight_limit: float, sigma_limit: float, plastic: bool, zero_reward: bool, sigma_min: float = 0.0,
                 reward_mean_time: float = REWARD_MEAN_TIME, lifetime_steps: int = 1,
                 seen_rewards: torch.Tensor | None = None, obs_keys: torch.Tensor | None = None) -> None:
        if genomes.device.type != "cpu" or genomes.dtype != torch.float32:
            raise ValueError("the native kernel runs float32 on CPU")
        self.program, self.lib = prog, lib  # `program` of the rule and env, `library` of it
        self.env = env
        self.pop = genomes.shape[0]
        self.sizes = [state.actor["weights"][0].shape[0]] + [w.shape[1] for w in state.actor["weights"]]
        self.state = state
        self.env_state = env.state.t().contiguous()
        self.prev_height = torch.full((1, self.pop), float("nan"))
        # The tensors the kernel reads and updates, kept alive here while it holds their pointers.
        params = [env.params[name] for name in env.param_defaults]
        self._tensors = dict(state.buffers(genomes),
                             env_params=torch.stack(params).contiguous() if params else torch.zeros(0, self.pop),
                             sign=env.action_sign.reshape(1, -1).contiguous(),
                             goal=_goal_rows(env),
                             dt=_per_individual(env.dt, self.pop),
                             learning_rate=_per_individual(learning_rate, self.pop), state=self.env_state,
                             prev_height=self.prev_height)
        self._buffers = Buffers.of(self._tensors)
        self._network = Network.of(self.sizes)
        self._genome_map = GenomeMap.of(layout)
        self._options = Options.of(env.options, self.program, weight_limit=weight_limit, sigma_limit=sigma_limit,
                                   sigma_min=sigma_min, reward_mean_time=reward_mean_time,
                                   lifetime_steps=lifetime_steps, plastic=plastic, zero_reward=zero_reward)
        # (T, P): the rewards the rule sees instead of its own, or None.
        self._seen = None if seen_rewards is None else seen_rewards.t().float().contiguous()
        self._keys = _key_bits(noise_keys)
        self._obs_keys = None
        if env.options.obs_noise > 0:
            if obs_keys is None:
                raise ValueError("env.obs_noise > 0 needs the sensor-noise keys")
            self._obs_keys = _key_bits(obs_keys)

    def run(self, steps: int, t0: int, fitness: torch.Tensor, rewards: torch.Tensor | None = None,
            states: torch.Tensor | None = None) -> None:
        """Advance ``steps`` steps from step number ``t0``: ``fitness (P,)`` float64 += each reward;
        ``rewards (steps, P)`` float32 receives them and ``states (steps, state_size, P)`` float32 the
        env state after each step, if given."""
        if fitness.shape != (self.pop,) or fitness.dtype != torch.float64 or not fitness.is_contiguous():
            raise ValueError("fitness must be a contiguous float64 (P,) tensor")
        if rewards is not None and (rewards.shape != (steps, self.pop) or rewards.dtype != torch.float32
                                    or not rewards.is_contiguous()):
            raise ValueError(f"rewards must be a contiguous float32 ({steps}, {self.pop}) tensor")
        n_state = self.env.state_size()
        if states is not None and (states.shape != (steps, n_state, self.pop) or states.dtype != torch.float32
                                   or not states.is_contiguous()):
            raise ValueError(f"states must be a contiguous float32 ({steps}, {n_state}, {self.pop}) tensor")
        seen = None
        if self._seen is not None:
            if self._seen.shape[0] < t0 + steps:
                raise ValueError(f"seen_rewards cover {self._seen.shape[0]} steps, need {t0 + steps}")
            seen = self._seen[t0:]
        env = self.env
        self.env_state.copy_(env.state.t())
        prev = env.prev_height
        self.prev_height[0] = float("nan") if prev is None else prev
        code = self.lib.metarl_run(self._network, self._options, self._genome_map, self._buffers, self.pop, steps,
                                   t0, torch.get_num_threads(), self._keys.data_ptr(),
                                   None if self._obs_keys is None else self._obs_keys.data_ptr(), fitness.data_ptr(),
                                   None if rewards is None else rewards.data_ptr(),
                                   None if states is None else states.data_ptr(),
                                   None if seen is None else seen.data_ptr())
        if code != 0:
            raise RuntimeError(f"native kernel failed with code {code}")
        env.restore(self.env_state.t().contiguous(), self.prev_height[0].clone(), t0 + steps)


def _per_individual(value: float | torch.Tensor, pop: int) -> torch.Tensor:
    """A float or ``(P,)`` value as the kernel's contiguous float32 ``(1, P)`` buffer."""
    return torch.as_tensor(value, dtype=torch.float32).expand(pop).reshape(1, pop).contiguous()


def _key_bits(keys: torch.Tensor) -> torch.Tensor:
    """32-bit keys ``(P,)`` as int32 bit patterns (the kernel reads uint32)."""
    return torch.where(keys >= 2**31, keys - 2**32, keys).to(torch.int32).contiguous()


def rule_steps(genomes: torch.Tensor, layout: GenomeLayout, actor: ActorState, rule: RuleState,
               x: torch.Tensor, noise: torch.Tensor, reward: torch.Tensor, *, learning_rate: float,
               weight_limit: float, sigma_limit: float, dt: float = 0.05) -> tuple[ActorState, RuleState]:
    """For tests: ``T`` actor passes and rule applications with given inputs from ``actor`` and ``rule``;
    returns the actor and rule state after them. ``x (T, P, n_0)``, ``noise (T, P, neurons)``, ``reward (T, P)``;
    ``dt``: the time step the rule's traces see."""
    pop = genomes.shape[0]
    sizes = actor.sizes
    env = envs.make(("Pendulum", "DoublePendulum")[sizes[0] // OBS_PER_LINK - 1], 1)
    prog = program(layout.rule, env, layout.signal_dim)
    lib = library(layout.signal_dim, layout.state_dim, prog=prog)
    state = FeatureMajor.of(actor, rule)
    x, noise = x.transpose(1, 2), noise.transpose(1, 2)
    tensors = dict(state.buffers(genomes), env_params=torch.zeros(len(env.param_defaults), pop),
                   sign=torch.ones(1, pop), goal=torch.ones(3, pop), dt=_per_individual(dt, pop),
                   learning_rate=_per_individual(learning_rate, pop), state=torch.zeros(env.state_size(), pop),
                   prev_height=torch.zeros(1, pop))
    options = Options.of(EnvOptions(), prog, weight_limit=weight_limit, sigma_limit=sigma_limit)
    x, noise, reward = (t.float().contiguous() for t in (x, noise, reward))
    code = lib.metarl_rule_steps(Network.of(sizes), options, GenomeMap.of(layout), Buffers.of(tensors), pop,
                                 x.shape[0], x.data_ptr(), noise.data_ptr(), reward.data_ptr())
    if code != 0:
        raise RuntimeError(f"native kernel failed with code {code}")
    return state.actor_copy(), state.rule_copy()


def normal(lib: ctypes.CDLL, keys: torch.Tensor, stream: int, count: int, *,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`metarl.core.rng.normal` computed by the kernel ``lib`` (about 10x faster than its IEEE-only torch
    form), for CPU ``keys (P,)``. Checked against that definition on its first rows at every call: a kernel
    that draws other numbers is a `RuntimeError`, not a silently different actor."""
    base = rng.stream_keys(keys.cpu(), stream).to(torch.int32).contiguous()  # the 32-bit values, as uint32 bits
    out = torch.empty(base.shape[0], count, dtype=torch.float32)
    code = lib.metarl_normal(base.shape[0], 0, count, base.data_ptr(), out.data_ptr())
    if code != 0:
        raise RuntimeError(f"native kernel failed with code {code}")
    head = min(base.shape[0], 4)
    if not torch.equal(out[:head], rng.normal(keys[:head].cpu(), stream, count)):
        raise RuntimeError("the native kernel's normal numbers differ from metarl.core.rng.normal's: a stale or "
                           "edited kernel (metarl/backends/kernel/vecmath.h)")
    return out.to(dtype)


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
