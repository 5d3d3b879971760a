"""The native kernel's rule- and environment-specific code, generated from their Python definitions.

The native kernel (`metarl.backends.native`, ``kernel/``) is a hand-written skeleton that knows no rule, source,
trace or environment: lanes, blocks and threads, the actor, the cells' products, the noise, the goal. What a
rule's cells read (its declared sources, `metarl.core.rule.SOURCES`), how its traces change
(`metarl.core.rule.TRACES`) and what an environment does (`BatchedEnv.transition`, `BatchedEnv.observation`) is
written once, in Python, and this module turns it into the C++ of ``program.h``, which the skeleton includes:

- the Python functions run on *symbolic* tensors (`Sym`: a torch.Tensor subclass whose values are expressions
  over the kernel's buffers, the population one symbolic individual: every op is recorded, none computed);
- each recorded value is a vector expression (`Expr`) over loads of the kernel's buffers, constants and runtime
  scalars (options such as ``max_torque``, which may change without a rebuild);
- the expressions are emitted as straight-line vector C++ (GCC vector extensions, `kernel/vecmath.h`), each op
  the IEEE operation torch would do, in the order the Python does them (``-ffp-contract=off``: nothing is fused
  that the Python does not fuse), with common subexpressions computed once.

An op with no vector form (an unsupported torch function, a branch on a runtime value, a source that reads
what a cell cannot see) raises `Unsupported`, whose message names it: the native backend then declines the rule
or environment in that one line, and the torch step runs it.

The cells' inputs are classified by what they vary with (per individual, per neuron, per pre neuron, per
connection) so that the skeleton computes each part of a connection cell's sums once per neuron instead of once
per connection (`Program`), in the same order as the hand-written kernel did.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..core.rule import CELLS, SOURCES, TRACES, RuleDeclaration, Site
from ..envs.base import BatchedEnv, EnvState

# Runtime scalars: values read from `Options.scalars` at run time (not baked into the code), by name.
ENV_SCALARS = ("max_torque", "max_speed")  # EnvOptions fields a traced environment reads as runtime scalars


class Unsupported(Exception):
    """What the generator cannot turn into vector code (one line)."""


# ---------------------------------------------------------------------------- expressions

class Expr:
    """A vector value of the kernel: an op over other expressions, a constant, a load or a runtime scalar.

    Interned per generation (`_Table`): equal expressions are one object, so common subexpressions are emitted
    once. ``mask``: a comparison's result (a vector of all-ones / zero lanes), usable only by `where`.
    """

    __slots__ = ("op", "args", "deps", "mask", "__weakref__")

    def __init__(self, op: str, args: tuple, deps: frozenset[str], mask: bool) -> None:
        self.op, self.args, self.deps, self.mask = op, args, deps, mask

    @property
    def const(self) -> float | None:
        return float(self.args[0]) if self.op == "const" else None

    def __repr__(self) -> str:
        return f"Expr({self.op}, {self.args})"

    def __bool__(self) -> bool:
        raise Unsupported("a Python branch on a value computed in the step (use torch.where)")


class _Table:
    """Interning of expressions: one object per distinct (op, operands)."""

    def __init__(self) -> None:
        self.nodes: dict[tuple, Expr] = {}

    def make(self, op: str, args: tuple, mask: bool = False) -> Expr:
        key = (op, tuple(id(a) if isinstance(a, Expr) else a for a in args))
        node = self.nodes.get(key)
        if node is None:
            deps = frozenset().union(*(a.deps for a in args if isinstance(a, Expr)))
            if op == "load":
                deps = frozenset(args[1])
            node = Expr(op, args, deps, mask)  # its args keep the ids of the key alive
            self.nodes[key] = node
        return node


_table: _Table | None = None


def _t() -> _Table:
    if _table is None:
        raise RuntimeError("codegen: no generation in progress")
    return _table


def const(value: float) -> Expr:
    return _t().make("const", (float(np.float32(value)),))


def load(c_expr: str, deps: Iterable[str] = ()) -> Expr:
    """A value read from the kernel: ``c_expr`` (a C++ expression of type vf) varying with ``deps``."""
    return _t().make("load", (c_expr, tuple(sorted(deps))))


def poison(why: str) -> Expr:
    """A value the generated code cannot read (``why``): an error if a cell's input or the env's result uses it."""
    return _t().make("poison", (why,))


def _c(x: Any) -> Expr:
    if isinstance(x, Expr):
        return x
    if isinstance(x, (bool, int, float, np.floating, np.integer)):
        return const(float(x))
    raise Unsupported(f"a value of type {type(x).__name__} in an expression")


_FOLD: dict[str, Callable[..., Any]] = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,  # float32: a zero divisor gives IEEE's inf or NaN (errstate below)
    "neg": lambda a: -a, "min": lambda a, b: a if a < b else b, "max": lambda a, b: a if a > b else b,
    "abs": abs,
}


def op(name: str, *args: Any, mask: bool = False) -> Expr:
    """The expression ``name(args)``; constant operands fold (float32 arithmetic, as the kernel would)."""
    ex = tuple(_c(a) for a in args)
    if not mask and name in _FOLD and all(a.op == "const" for a in ex):
        with np.errstate(all="ignore"):
            values = [np.float32(a.const) for a in ex]
            return const(float(np.float32(_FOLD[name](*values))))
    for a in ex:
        if a.mask and name not in ("where", "and", "or"):
            raise Unsupported(f"a comparison's result used as a number in {name} (use torch.where)")
    return _t().make(name, ex, mask)


# ---------------------------------------------------------------------------- symbolic tensors

def _elementwise(fn: Callable[..., Expr], *arrays: Any) -> np.ndarray:
    parts = [a if isinstance(a, np.ndarray) else np.array(a, dtype=object) for a in arrays]
    return np.vectorize(fn, otypes=[object])(*parts) if parts else np.array(fn(), dtype=object)


def _arr(x: Any) -> Any:
    """The object array of a `Sym`, a real tensor's values as constants, or a Python number as it is."""
    if isinstance(x, Sym):
        return x.a
    if isinstance(x, torch.Tensor):
        values = x.detach().cpu().double().numpy()
        return _elementwise(lambda v: const(float(v)), values) if values.ndim else const(float(values))
    if isinstance(x, (bool, int, float)):
        return x
    raise Unsupported(f"an argument of type {type(x).__name__}")


def _binary(name: str, swap: bool = False, mask: bool = False) -> Callable[..., Sym]:
    def handler(a: Any, b: Any) -> Sym:
        x, y = (b, a) if swap else (a, b)
        return Sym.of(_elementwise(lambda p, q: op(name, p, q, mask=mask), _arr(x), _arr(y)))
    return handler


def _unary(name: str) -> Callable[..., Sym]:
    def handler(a: Any) -> Sym:
        return Sym.of(_elementwise(lambda p: op(name, p), _arr(a)))
    return handler


def _pow(a: Any, exponent: Any) -> Sym:
    if isinstance(exponent, (int, float)) and float(exponent) == 2.0:
        return Sym.of(_elementwise(lambda p: op("mul", p, p), _arr(a)))
    if isinstance(exponent, (int, float)) and float(exponent) == 1.0:
        return Sym.of(_arr(a))
    if isinstance(exponent, (int, float)) and float(exponent) == 0.5:
        return Sym.of(_elementwise(lambda p: op("sqrt", p), _arr(a)))
    raise Unsupported(f"pow with exponent {exponent!r} (the generator has x**2, x**0.5 and x**1)")


def _rpow(a: Any, base: Any) -> Sym:
    raise Unsupported("a number raised to a tensor's power")


def _remainder(a: Any, divisor: Any) -> Sym:
    """``torch.remainder(a, c)`` for a constant ``c``: ``a - floor(a * (1/c)) * c`` (the kernel's angle wrap)."""
    if not isinstance(divisor, (int, float)):
        raise Unsupported("torch.remainder by a tensor (the generator has it by a constant)")
    c = float(np.float32(divisor))
    inv = float(np.float32(1.0) / np.float32(c))
    return Sym.of(_elementwise(lambda p: op("sub", p, op("mul", op("floor", op("mul", p, inv)), c)), _arr(a)))


def _clamp(a: Any, min: Any = None, max: Any = None) -> Sym:  # noqa: A002 - torch's names
    out = _arr(a)
    if min is not None:
        out = _elementwise(lambda p, q: op("max", p, q), out, _arr(min))
    if max is not None:
        out = _elementwise(lambda p, q: op("min", p, q), out, _arr(max))
    return Sym.of(out)


def _where(cond: Any, a: Any, b: Any) -> Sym:
    def pick(m: Any, p: Any, q: Any) -> Expr:
        m = _c(m)
        if m.op == "const":
            return _c(p) if m.const else _c(q)
        if not m.mask:
            raise Unsupported("torch.where on a condition that is not a comparison")
        return op("where", m, p, q, mask=_c(p).mask)
    return Sym.of(_elementwise(pick, _arr(cond), _arr(a), _arr(b)))


def _isnan(a: Any) -> Sym:
    return Sym.of(_elementwise(lambda p: op("ne", p, p, mask=True), _arr(a)))


def _dim(x: Sym, dim: int) -> int:
    return dim % x.a.ndim


def _sum(a: Sym, dim: Any = None, keepdim: bool = False, dtype: Any = None) -> Sym:
    arr = a.a
    dims = range(arr.ndim) if dim is None else [dim] if isinstance(dim, int) else list(dim)
    for d in sorted((_dim(a, d) for d in dims), reverse=True):
        def fold(values: np.ndarray) -> Expr:
            total = values[0]
            for v in values[1:]:
                total = op("add", total, v)
            return _c(total)
        arr = np.apply_along_axis(fold, d, arr) if arr.shape[d] else np.zeros(
            [s for i, s in enumerate(arr.shape) if i != d], dtype=object)
        if keepdim:
            arr = np.expand_dims(arr, d)
    return Sym.of(np.asarray(arr, dtype=object))


def _stack(tensors: Sequence[Any], dim: int = 0) -> Sym:
    return Sym.of(np.stack([np.asarray(_arr(t), dtype=object) for t in tensors], axis=dim))


def _cat(tensors: Sequence[Any], dim: int = 0) -> Sym:
    return Sym.of(np.concatenate([np.asarray(_arr(t), dtype=object) for t in tensors], axis=dim))


def _like(value: float) -> Callable[..., Sym]:
    def handler(a: Any, *args: Any, **kwargs: Any) -> Sym:
        return Sym.of(_elementwise(lambda _: const(value), _arr(a)))
    return handler


def _full_like(a: Any, fill: float, **kwargs: Any) -> Sym:
    return Sym.of(_elementwise(lambda _: _c(fill), _arr(a)))


def _getitem(a: Sym, key: Any) -> Sym:
    key = key if isinstance(key, tuple) else (key,)
    if any(isinstance(k, torch.Tensor) for k in key):
        raise Unsupported("indexing by a tensor")
    return Sym.of(np.asarray(a.a[key], dtype=object), a.dtype)


def _setitem(a: Sym, key: Any, value: Any) -> None:
    key = key if isinstance(key, tuple) else (key,)
    if any(isinstance(k, torch.Tensor) for k in key):
        raise Unsupported("indexing by a tensor")
    a.a[key] = _arr(value)


def _reshape(a: Sym, *shape: Any) -> Sym:
    dims = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)) else shape
    return Sym.of(a.a.reshape(tuple(int(d) for d in dims)), a.dtype)


def _expand(a: Sym, *sizes: Any) -> Sym:
    dims = sizes[0] if len(sizes) == 1 and isinstance(sizes[0], (tuple, list, torch.Size)) else sizes
    dims = list(dims)
    lead = len(dims) - a.a.ndim
    shape = [a.a.shape[i - lead] if d == -1 else int(d) for i, d in enumerate(dims)]
    return Sym.of(np.array(np.broadcast_to(a.a, shape), dtype=object), a.dtype)


def _unsqueeze(a: Sym, dim: int) -> Sym:
    return Sym.of(np.expand_dims(a.a, dim % (a.a.ndim + 1)), a.dtype)


def _squeeze(a: Sym, dim: Any = None) -> Sym:
    if dim is None:
        return Sym.of(np.squeeze(a.a), a.dtype)
    d = _dim(a, dim)
    return Sym.of(np.squeeze(a.a, d) if a.a.shape[d] == 1 else a.a, a.dtype)


def _flatten(a: Sym, start_dim: int = 0, end_dim: int = -1) -> Sym:
    s, e = _dim(a, start_dim), _dim(a, end_dim)
    shape = a.a.shape
    return Sym.of(a.a.reshape(*shape[:s], -1, *shape[e + 1:]), a.dtype)


def _unbind(a: Sym, dim: int = 0) -> tuple[Sym, ...]:
    d = _dim(a, dim)
    return tuple(Sym.of(np.take(a.a, i, axis=d), a.dtype) for i in range(a.a.shape[d]))


def _same(a: Sym, *args: Any, **kwargs: Any) -> Sym:
    return Sym.of(a.a.copy(), a.dtype)


def _to(a: Sym, *args: Any, **kwargs: Any) -> Sym:
    dtype = kwargs.get("dtype") or next((x for x in args if isinstance(x, torch.dtype)), None)
    if dtype is not None and (dtype.is_complex or not dtype.is_floating_point) and a.dtype.is_floating_point:
        raise Unsupported(f"a conversion to {dtype}")
    return Sym.of(a.a.copy(), torch.float32 if dtype is not None and dtype.is_floating_point else a.dtype)


def _minmax(name: str) -> Callable[..., Sym]:
    def handler(a: Any, b: Any) -> Sym:
        return Sym.of(_elementwise(lambda p, q: op(name, p, q), _arr(a), _arr(b)))
    return handler


def _logical(name: str) -> Callable[..., Sym]:
    def handler(a: Any, b: Any) -> Sym:
        def both(p: Any, q: Any) -> Expr:
            p, q = _c(p), _c(q)
            if not (p.mask and q.mask):
                raise Unsupported(f"{name} of values that are not comparisons")
            return op(name, p, q, mask=True)
        return Sym.of(_elementwise(both, _arr(a), _arr(b)))
    return handler


_HANDLERS: dict[str, Callable[..., Any]] = {
    "add": _binary("add"), "__add__": _binary("add"), "__radd__": _binary("add", swap=True),
    "sub": _binary("sub"), "__sub__": _binary("sub"), "__rsub__": _binary("sub", swap=True),
    "mul": _binary("mul"), "__mul__": _binary("mul"), "__rmul__": _binary("mul", swap=True),
    "div": _binary("div"), "true_divide": _binary("div"), "__truediv__": _binary("div"),
    "__rtruediv__": _binary("div", swap=True), "__div__": _binary("div"), "__rdiv__": _binary("div", swap=True),
    "neg": _unary("neg"), "__neg__": _unary("neg"), "negative": _unary("neg"),
    "pow": _pow, "__pow__": _pow, "__rpow__": _rpow, "square": lambda a: _pow(a, 2),
    "sqrt": _unary("sqrt"), "sin": _unary("sin"), "cos": _unary("cos"), "exp": _unary("exp"), "log": _unary("log"),
    "tanh": _unary("tanh"), "abs": _unary("abs"), "__abs__": _unary("abs"), "floor": _unary("floor"),
    "remainder": _remainder, "clamp": _clamp, "clip": _clamp, "where": _where, "isnan": _isnan,
    "lt": _binary("lt", mask=True), "__lt__": _binary("lt", mask=True), "le": _binary("le", mask=True),
    "__le__": _binary("le", mask=True), "gt": _binary("gt", mask=True), "__gt__": _binary("gt", mask=True),
    "ge": _binary("ge", mask=True), "__ge__": _binary("ge", mask=True), "eq": _binary("eq", mask=True),
    "__eq__": _binary("eq", mask=True), "ne": _binary("ne", mask=True), "__ne__": _binary("ne", mask=True),
    "logical_and": _logical("and"), "__and__": _logical("and"), "logical_or": _logical("or"),
    "__or__": _logical("or"),
    "minimum": _minmax("min"), "maximum": _minmax("max"), "sum": _sum, "stack": _stack, "cat": _cat,
    "zeros_like": _like(0.0), "ones_like": _like(1.0), "full_like": _full_like,
    "__getitem__": _getitem, "__setitem__": _setitem, "reshape": _reshape, "view": _reshape, "expand": _expand,
    "unsqueeze": _unsqueeze, "squeeze": _squeeze, "flatten": _flatten, "unbind": _unbind,
    "clone": _same, "contiguous": _same, "detach": _same, "to": _to, "float": _same, "type_as": _same,
    "expand_as": lambda a, b: _expand(a, *b.shape),
}


class Sym(torch.Tensor):
    """A symbolic float32 tensor: its elements are `Expr`s (``a``, an object array of the tensor's shape); the
    population is one symbolic individual. Every torch function on it records expressions (`_HANDLERS`); any other
    is `Unsupported`."""

    a: np.ndarray

    @staticmethod
    def __new__(cls, a: np.ndarray, dtype: torch.dtype = torch.float32) -> Sym:
        t = torch.Tensor._make_wrapper_subclass(cls, a.shape, dtype=dtype,  # type: ignore[attr-defined]
                                                 device=torch.device("cpu"))
        t.a = a
        return t  # type: ignore[no-any-return]

    @classmethod
    def of(cls, a: Any, dtype: torch.dtype = torch.float32) -> Sym:
        return cls(np.asarray(a, dtype=object) if not isinstance(a, np.ndarray) else a, dtype)

    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None  # type: ignore[override]
                           ) -> Any:
        raise Unsupported(f"the torch op {func} (reached the dispatcher)")

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name == "__get__":  # shape, dtype, device, ...: the wrapper's own
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        if name in ("dim", "size", "numel", "__len__", "is_floating_point", "is_complex"):
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        handler = _HANDLERS.get(name)
        if handler is None:
            raise Unsupported(f"torch.{name} (the generator has no vector form of it)")
        return handler(*args, **kwargs)

    def __repr__(self) -> str:  # type: ignore[override]
        return f"Sym{tuple(self.a.shape)}"

    def __bool__(self) -> bool:
        raise Unsupported("a Python branch on a value computed in the step (use torch.where)")

    __hash__ = object.__hash__


def sym(c_expr: str | Callable[..., str], shape: tuple[int, ...] = (1,), deps: Iterable[str] = ()) -> Sym:
    """A symbolic tensor of ``shape`` (the population first, of size 1) loading each element from the kernel:
    ``c_expr`` a C++ expression for a one-element tensor, or a function of the element's index (its dimensions
    after the population)."""
    arr = np.empty(shape, dtype=object)
    for index in np.ndindex(*shape):
        text = c_expr if isinstance(c_expr, str) else c_expr(*index[1:])
        arr[index] = load(text, deps)
    return Sym(arr)


def scalar(name: str, index: int) -> Sym:
    """The runtime scalar ``name`` (`Options.scalars[index]`), as a population-wide value ``()``."""
    return Sym(np.array(load(f"splat(sc[{index}]) /* {name} */"), dtype=object).reshape(()))


def elements(value: Any) -> list[Expr]:
    """The expressions of a traced result, flattened (C order)."""
    return [_c(e) for e in np.asarray(_arr(value), dtype=object).reshape(-1)]


# ---------------------------------------------------------------------------- emission

_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "lt": "<", "le": "<=", "gt": ">", "ge": ">=",
          "eq": "==", "ne": "!=", "and": "&", "or": "|"}
_CALL = {"sin": "vsin", "cos": "vcos", "exp": "vexp", "log": "vlog", "tanh": "vtanh", "sqrt": "vsqrt",
         "abs": "vabs", "floor": "vfloor", "min": "vmin", "max": "vmax"}


def _literal(x: float) -> str:
    if math.isnan(x):
        return "__builtin_nanf(\"\")"
    if math.isinf(x):
        return "__builtin_inff()" if x > 0 else "(-__builtin_inff())"
    return f"{float(np.float32(x)).hex()}f /* {float(np.float32(x))!r} */" if x not in (0.0, 1.0, 2.0, -1.0) \
        else f"{x!r}f"


def emit(outputs: Sequence[tuple[str, Expr]], indent: str = "    ", prefix: str = "t") -> str:
    """Straight-line C++ computing each ``(target, expr)``: ``target = <expr>;`` after the temporaries it needs,
    each subexpression used more than once computed once."""
    uses: dict[int, int] = {}
    order: list[Expr] = []
    seen: set[int] = set()

    def visit(e: Expr) -> None:
        stack = [(e, False)]
        while stack:
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for a in node.args:
                if isinstance(a, Expr):
                    stack.append((a, False))

    for _, e in outputs:
        if e.mask:
            raise Unsupported("a comparison's result as a value (use torch.where)")
        visit(e)
    for node in order:
        for a in node.args:
            if isinstance(a, Expr):
                uses[id(a)] = uses.get(id(a), 0) + 1
    for _, e in outputs:  # an output that is also an operand is computed once
        uses[id(e)] = uses.get(id(e), 0) + 1
    names: dict[int, str] = {}
    lines: list[str] = []

    def text(e: Expr) -> str:
        if id(e) in names:
            return names[id(e)]
        if e.op == "const":
            c = e.const
            assert c is not None
            return f"splat({_literal(c)})"
        if e.op == "load":
            return f"({e.args[0]})"
        if e.op == "poison":
            raise Unsupported(str(e.args[0]))
        args = [text(a) for a in e.args]
        if e.op in _INFIX:
            return f"({args[0]} {_INFIX[e.op]} {args[1]})"
        if e.op == "neg":
            return f"(-{args[0]})"
        if e.op == "where":
            return f"({args[0]} ? {args[1]} : {args[2]})"
        if e.op in _CALL:
            return f"{_CALL[e.op]}({', '.join(args)})"
        raise Unsupported(f"the op {e.op}")

    # sin and cos of one value: one vsincos (both come out of the same range reduction, the same bits).
    trig: dict[int, dict[str, Expr]] = {}
    for node in order:
        if node.op in ("sin", "cos"):
            trig.setdefault(id(node.args[0]), {})[node.op] = node
    paired = {id(n) for pair in trig.values() if len(pair) == 2 for n in pair.values()}
    count = 0
    for node in order:
        if node.op in ("const", "load"):
            continue
        if id(node) in paired:
            if id(node) not in names:
                pair = trig[id(node.args[0])]
                sin, cos = f"{prefix}{count}", f"{prefix}{count + 1}"
                count += 2
                lines.append(f"{indent}vf {sin}, {cos};")
                lines.append(f"{indent}vsincos({text(node.args[0])}, &{sin}, &{cos});")
                names[id(pair["sin"])], names[id(pair["cos"])] = sin, cos
            continue
        if uses.get(id(node), 0) > 1:
            value = text(node)
            name = f"{prefix}{count}"
            count += 1
            lines.append(f"{indent}const {'vi' if node.mask else 'vf'} {name} = {value};")
            names[id(node)] = name
    for target, e in outputs:
        lines.append(f"{indent}{target} = {text(e)};")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the program of a rule and an env

@dataclass
class CellInputs:
    """One cell's inputs as expressions, in declaration order (variant: the first layer, or any other)."""

    features: list[Expr]

    def groups(self, levels: dict[frozenset[str], str]) -> dict[str, list[int]]:
        """Feature indices by level (``levels``: the deps of each level's name); constants under ``const``."""
        out: dict[str, list[int]] = {"const": []}
        for name in levels.values():
            out.setdefault(name, [])
        for f, e in enumerate(self.features):
            if e.op == "const":
                out["const"].append(f)
                continue
            for deps, name in levels.items():
                if e.deps <= deps:
                    out[name].append(f)
                    break
            else:
                raise Unsupported(f"an input that varies with {sorted(e.deps)}")
        return out


class _Layers(list):
    """An actor field's per-layer list as the sources see it at layer ``k``: index ``k - 1`` is the layer the
    cell runs at, ``k - 2`` the layer before; any other layer is not in a cell's reach."""

    def __init__(self, name: str, layer: int, current: Sym, previous: Sym | None) -> None:
        super().__init__([previous] * (layer - 1) + [current])
        self.name, self.layer = name, layer

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, int):
            j = i % len(self)
            if j == self.layer - 1:
                return super().__getitem__(j)
            if j == self.layer - 2 and super().__getitem__(j) is not None:
                return super().__getitem__(j)
            raise Unsupported(f"a source reads the actor's {self.name} of layer {i + 1} at layer {self.layer} "
                              f"(a cell reads its own layer and the one before)")
        raise Unsupported(f"the actor's {self.name} by a slice")


_ACTOR = ("weights", "biases", "sigmas", "sums", "samples", "outputs")


class _SymActor:
    """The actor as a cell at layer ``k`` sees it: this neuron's (``j``) and the pre neuron's (``i``) values."""

    def __init__(self, cell: str, layer: int) -> None:
        conn = cell == "connection_network"
        self.layer = layer
        for name in _ACTOR:
            if name == "weights":
                cur = sym("v[L.weights[k - 1] + i * L.sizes[k] + j]", (1, 1, 1), "ij") if conn else \
                    Sym(np.array([[[poison("a neuron cell reads the weights")]]], dtype=object))
                setattr(self, name, _Layers(name, layer, cur, None))
                continue
            cur = sym(f"v[L.{name}[k - 1] + j]", (1, 1), "j")
            prev = sym(f"v[L.{name}[k - 2] + i]", (1, 1), "i") if conn and layer > 1 else None
            setattr(self, name, _Layers(name, layer, cur, prev))

    @property
    def sizes(self) -> list[int]:
        raise Unsupported("a source reads the actor's layer sizes")


@dataclass
class Program:
    """The generated code of one rule declaration and one environment (their options baked in where the Python
    branches on them), and what the skeleton needs to know of it. ``code``: program.h's text; its hash is part of
    the library's cache key."""

    rule: str
    env: str
    code: str
    n_state: int
    n_obs: int
    n_params: int
    traces: tuple[str, ...]
    scalars: tuple[str, ...]

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.code.encode()).hexdigest()[:16]

    def scalar_values(self, values: dict[str, float]) -> list[float]:
        """The runtime scalars, in `Options.scalars` order, from ``values`` by name (each one the program reads)."""
        return [float(values[name]) for name in self.scalars]


@dataclass
class _Scalars:
    names: list[str] = field(default_factory=list)

    def get(self, name: str) -> Sym:
        if name not in self.names:
            self.names.append(name)
        return scalar(name, self.names.index(name))


def _poisoned(why: str) -> Sym:
    """A ``(1, 1)`` value that no generated code may read (`poison`)."""
    return Sym(np.array([[poison(why)]], dtype=object))


def _site(cell: str, layer: int, x: Sym, signal: Sym | None, scalars: _Scalars, traces: dict[str, Sym]) -> Site:
    """The symbolic `Site` of ``cell`` at ``layer``: the kernel's values as the sources and traces read them."""
    t = Sym(np.array(load("splat((float)t)"), dtype=object).reshape(()))
    return Site(cell, layer, _SymActor(cell, layer), x, sym("reward"), signal, t,  # type: ignore[arg-type]
                scalars.get("lifetime_steps"), traces, sym("v[L.dt]"),  # type: ignore[arg-type]
                scalars.get("reward_mean_time"))  # type: ignore[arg-type]


def _cell_inputs(rule: RuleDeclaration, cell: str, layer: int, signal_dim: int, scalars: _Scalars,
                 traces: dict[str, Sym]) -> CellInputs:
    conn = cell == "connection_network"
    signal: Sym | None
    if conn:
        x = sym("x[i]", (1, 1), "i") if layer == 1 else _poisoned(
            "a connection cell reads the observation beyond the first layer")
        signal = sym(lambda _, s: f"csig[j * S + {s}]", (1, 1, signal_dim), "j")
    else:
        x = _poisoned("a neuron cell reads the observation")
        signal = None if cell == "reward_network" else sym(lambda _, s: f"e[j * S + {s}]", (1, 1, signal_dim), "j")
    site = _site(cell, layer, x, signal, scalars, traces)
    features: list[Expr] = []
    for block in rule.cell(cell).inputs:
        try:
            value = SOURCES[block.source].fn(site)
        except Unsupported as e:
            raise Unsupported(f"the source {block.source} ({cell} input {block.name}): {e}") from None
        got = elements(value)
        want = block.size(signal_dim)
        if len(got) != want:
            raise Unsupported(f"the source {block.source} gave {len(got)} values per instance, expected {want}")
        features += got
    return CellInputs(features)


def _rows(indices: list[int]) -> str:
    return "{" + ", ".join(str(i) for i in indices) + "}"


def _array(name: str, values: list[int]) -> str:
    return f"static constexpr std::array<int, {len(values)}> {name} = {{{_rows(values)}}};"


def rule_code(rule: RuleDeclaration, signal_dim: int, scalars: _Scalars) -> tuple[str, tuple[str, ...]]:
    """program.h's rule part: the cells' inputs, output slots and the traces' updates."""
    names = rule.traces
    traces = {name: sym(f"v[L.traces + {n}]") for n, name in enumerate(names)}
    lines = [f"constexpr int N_TRACES = {len(names)};"]
    # Reward and node cells: all inputs per instance, in declaration order.
    for cell, fn in (("reward_network", "reward_inputs"), ("node_network", "node_inputs")):
        first = _cell_inputs(rule, cell, 1, signal_dim, scalars, traces)
        rest = _cell_inputs(rule, cell, 2, signal_dim, scalars, traces)
        n = len(first.features)
        upper = cell.split("_")[0].upper()
        lines.append(f"constexpr int {upper}_INPUTS = {n};")
        for variant, inputs in (("first", first), ("rest", rest)):
            body = emit([(f"in[{f}]", e) for f, e in enumerate(inputs.features)])
            lines.append(f"inline void {fn}_{variant}(const vf* v, const Layout& L, int k, int j, vf reward, "
                         f"const vf* e, uint32_t t, const float* sc, vf* in) {{\n"
                         f"    (void)v; (void)L; (void)k; (void)j; (void)reward; (void)e; (void)t; (void)sc;\n"
                         f"{body}\n}}")
    # Connection cell: inputs by level, so that the skeleton sums each level once per neuron.
    levels = {frozenset(): "post", frozenset("j"): "post", frozenset("i"): "pre", frozenset("ij"): "edge"}
    n_conn = 0
    for variant, layer in (("first", 1), ("rest", 2)):
        inputs = _cell_inputs(rule, "connection_network", layer, signal_dim, scalars, traces)
        n_conn = len(inputs.features)
        g = inputs.groups(levels)
        consts = [(f, inputs.features[f].const) for f in g["const"] if inputs.features[f].const != 0.0]
        lines.append(f"struct Conn_{variant} {{")
        lines.append("    " + _array("ONE", [f for f, c in consts if c == 1.0]))
        lines.append("    " + _array("CONST", [f for f, c in consts if c != 1.0]))
        values = [f"{c!r}f" for _, c in consts if c != 1.0]
        lines.append(f"    static constexpr std::array<float, {len(values)}> CONST_VALUE = {{{', '.join(values)}}};")
        for level in ("post", "pre", "edge"):
            idx = g[level]
            lines.append("    " + _array(level.upper(), idx))
            sig = {"post": "int j", "pre": "int i", "edge": "int i, int j"}[level]
            body = emit([(f"out[{n}]", inputs.features[f]) for n, f in enumerate(idx)], indent="        ")
            lines.append(f"    static inline void {level}(const vf* v, const Layout& L, int k, {sig}, vf reward, "
                         f"const vf* x, const vf* csig, uint32_t t, const float* sc, vf* out) {{\n"
                         f"        (void)v; (void)L; (void)k; (void)reward; (void)x; (void)csig; (void)t; (void)sc;"
                         f"\n{body}\n    }}")
        lines.append("};")
    lines.append(f"constexpr int CONN_INPUTS = {n_conn};")
    # Outputs: where each update lies in the cell's output.
    for cell in CELLS:
        slices = rule.cell(cell).output_slices(signal_dim)
        upper = {"reward_network": "REWARD", "node_network": "NODE", "connection_network": "CONN"}[cell]
        lines.append(f"constexpr int {upper}_OUTPUTS = {rule.cell(cell).output_size(signal_dim)};")
        for what in ("signal", "bias", "sigma", "weight"):
            lines.append(f"constexpr int {upper}_{what.upper()} = {slices[what].start if what in slices else -1};")
    # Traces: after the cells, from their values before the step (site: the reward cell's).
    site = _site("reward_network", 1, _poisoned("a trace reads the observation"), None, scalars, traces)
    updates = []
    for n, name in enumerate(names):
        try:
            after = elements(TRACES[name].update(traces[name], site))
        except Unsupported as e:
            raise Unsupported(f"the trace {name}: {e}") from None
        if len(after) != 1:
            raise Unsupported(f"the trace {name} gave {len(after)} values per individual, expected 1")
        updates.append((f"out[{n}]", after[0]))
    lines.append("inline void trace_updates(const vf* v, const Layout& L, vf reward, uint32_t t, const float* sc, "
                 f"vf* out) {{\n    (void)v; (void)L; (void)reward; (void)t; (void)sc; (void)out;\n{emit(updates)}\n}}")
    return "\n".join(lines), names


class _TracedOptions:
    """An env's options as its traced code reads them: ``max_torque`` and ``max_speed`` as runtime scalars."""

    def __init__(self, options: Any, scalars: _Scalars) -> None:
        self._options, self._scalars = options, scalars

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._options, name)
        if name in ENV_SCALARS and value is not None:
            return self._scalars.get(name)
        return value


def env_code(env: BatchedEnv, scalars: _Scalars) -> tuple[str, int, int, int]:
    """program.h's environment part: the observation, and the transition (state, height, reward) of ``env``'s
    class and options, traced on a symbolic population of one."""
    cls = type(env)
    n_state, params = cls.state_size(), list(cls.param_defaults)
    traced = copy.copy(env)  # the object's attributes, then the symbolic ones over them
    traced.__dict__.update(
        batch_size=1,
        params={name: sym(f"v[L.env_params + {n}]") for n, name in enumerate(params)},
        action_sign=sym("v[L.sign]"), goal=sym("goal"), dt=sym("v[L.dt]"), switch_sign=sym("splat(1.0f)"),
        switch_step=None, options=_TracedOptions(env.options, scalars))
    traced.goal_at = lambda t: sym("goal")  # type: ignore[method-assign]  # the skeleton computes the goal
    state = sym(lambda s: f"st[{s}]", (1, n_state))
    try:
        obs = elements(traced.observation(state))
        t = Sym(np.array(load("splat((float)t)"), dtype=object).reshape(()))  # the step number: not baked in
        after, reward = traced.transition(EnvState(state, sym("prev_height"), t), sym("action"))
    except Unsupported as e:
        raise Unsupported(f"the environment {cls.name}: {e}") from None
    new_state = elements(after.state)
    if len(new_state) != n_state:
        raise Unsupported(f"the environment {cls.name}'s transition gave {len(new_state)} state entries, "
                          f"its state_size() is {n_state}")
    height = elements(after.prev_height) if after.prev_height is not None else [const(math.nan)]
    rew = elements(reward)
    outs = [(f"x[{n}]", e) for n, e in enumerate(obs)]
    code = [f"constexpr int N_STATE = {n_state};", f"constexpr int N_OBS = {len(obs)};",
            f"constexpr int N_PARAMS = {len(params)};",
            "inline void env_observe(const vf* v, const Layout& L, const vf* st, const float* sc, vf* x) {\n"
            f"    (void)v; (void)L; (void)sc;\n{emit(outs)}\n}}",
            "inline void env_transition(const vf* v, const Layout& L, vf* st, vf action, vf prev_height, vf goal, "
            "uint32_t t, const float* sc, vf* height, vf* reward) {\n"
            "    (void)v; (void)L; (void)sc; (void)prev_height; (void)goal; (void)action; (void)t;\n"
            + emit([*((f"vf next{n}", e) for n, e in enumerate(new_state)), ("*height", height[0]),
                    ("*reward", rew[0])]) + "\n"
            + "\n".join(f"    st[{n}] = next{n};" for n in range(n_state)) + "\n}"]
    return "\n".join(code), n_state, len(obs), len(params)


def generate(rule: RuleDeclaration, env: BatchedEnv, signal_dim: int) -> Program:
    """The `Program` of ``rule`` (cells of signal size ``signal_dim``) and the environment ``env`` (its class and
    options: a built batch of any size); `Unsupported` names what has no vector form."""
    global _table
    saved, _table = _table, _Table()
    try:
        scalars = _Scalars()
        rcode, traces = rule_code(rule, signal_dim, scalars)
        ecode, n_state, n_obs, n_params = env_code(env, scalars)
    finally:
        _table = saved
    header = (f"// Generated by metarl/backends/codegen.py from the rule {rule.name} ({rule.signature()}) and the\n"
              f"// environment {type(env).name}; do not edit. Runtime scalars: {', '.join(scalars.names) or 'none'}.\n")
    code = (header + "#pragma once\n#include <array>\nnamespace {\n"
            f"constexpr int N_SCALARS = {len(scalars.names)};\n{rcode}\n{ecode}\n}}  // namespace\n")
    return Program(rule.name, type(env).name, code, n_state, n_obs, n_params, traces, tuple(scalars.names))
