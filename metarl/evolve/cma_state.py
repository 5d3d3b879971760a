"""pycma's `CMAEvolutionStrategy` as data: a tree of tensors and plain values, read back without pickle.

`encode` walks the object as pickle would (every attribute; an object referenced twice is written once and
referenced), but writes only data: None, numbers, strings, lists, tuples, dicts and numpy arrays (as tensors);
a node is a dict tagged ``"~"``, or, for the frequent ones (a reference, a view, a dict, a list), a short list
``[tag, index, ...]`` (`decode`'s ``dec_short``).
Code is not written: functions, classes, the `TorchNormal` draws and pycma's options with the constants derived
from them (`CONFIG_ATTRIBUTES`: the run's config decides them). `decode` takes those from a fresh
`CMAEvolutionStrategy` made from the run's config and fills that object's attributes with the data, path by
path. A file cannot name a class: every object it fills is one pycma made from the config, and a node that does
not fit the fresh object at its path (an array of another shape or dtype, a list where a number belongs, an
object where there is none) is refused, as is any NaN, or an infinite array entry where the config's has none.

pycma keys the samples it hands out by ``hash(x.tobytes())``, which Python salts per process
(PYTHONHASHSEED). The tree holds such a dictionary (`SolutionDict`) as (sample, value) pairs and `decode`
computes the keys in the reading process, so `tell` finds its samples in any process; pickle kept the writing
process's keys, and a resumed run took some samples for injected ones and drifted.
"""

from __future__ import annotations

import math
import types
from typing import Any

import numpy as np
import torch

from ..errors import ModelFileError

# pycma's options and the parameters derived from them: made from the config, never read from a file.
CONFIG_ATTRIBUTES = ("opts", "inopts", "inputargs", "sp", "sp0")
_MISSING = object()
_DTYPES = {np.dtype(t): t for t in ("float64", "float32", "int64", "int32", "bool")}
_NUMBER = (int, float, np.number, np.bool_)


def _is_code(x: Any) -> bool:
    """A value that is behaviour, not state: taken from the fresh object, never from a file."""
    if isinstance(x, (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType, torch.Generator)):
        return True
    return callable(x) and not type(x).__module__.startswith("cma")


def _solution_dict() -> type:
    from cma.utilities.utils import SolutionDict  # type: ignore[import-untyped,import-not-found,unused-ignore]

    return SolutionDict  # type: ignore[no-any-return]


def encode(root: Any) -> Any:
    """The data tree of pycma's object ``root``, for `torch.save`."""
    memo: dict[int, int] = {}
    keep = {id(getattr(root, name)) for name in CONFIG_ATTRIBUTES if getattr(root, name, None) is not None}
    solution_dict = _solution_dict()
    alive: list[Any] = []  # holds what memo's ids name until the walk ends

    def enc(x: Any) -> Any:
        if x is None or type(x) in (bool, int, float, str):
            return x
        if isinstance(x, np.generic):
            if x.dtype not in _DTYPES:
                raise ValueError(f"cma state: a number of dtype {x.dtype}")
            return {"~": "np", "d": str(x.dtype), "v": x.item()}
        if id(x) in memo:
            return ["r", memo[id(x)]]
        if id(x) in keep or not isinstance(x, (np.ndarray, dict, list, tuple, range)) and _is_code(x):
            return {"~": "keep"}
        if isinstance(x, tuple):
            return {"~": "tuple", "v": [enc(v) for v in x]}
        if type(x) is range:  # pycma's index ranges of small populations
            return {"~": "range", "v": [x.start, x.stop, x.step]}
        i = memo[id(x)] = len(memo)
        alive.append(x)
        if isinstance(x, np.ndarray):
            if x.dtype not in _DTYPES:
                raise ValueError(f"cma state: an array of dtype {x.dtype}")
            if isinstance(x.base, np.ndarray):  # a view: of the same memory as in pycma (np.diag(C) follows C)
                base = x.base
                offset = x.__array_interface__["data"][0] - base.__array_interface__["data"][0]
                if x.shape == base.shape[1:] and x.strides == base.strides[1:]:
                    return ["v", i, enc(base), offset]  # a row (a sample of a population): the short form
                return ["v", i, enc(base), offset, list(x.shape), list(x.strides)]
            # The memory layout as in pycma too: BLAS sums a Fortran-ordered matrix in another order.
            fortran = x.flags.f_contiguous and not x.flags.c_contiguous
            data = np.ascontiguousarray(x.T if fortran else x)
            return {"~": "array", "i": i, "v": torch.from_numpy(data.copy()), "fortran": fortran}
        if isinstance(x, dict) and type(x) is dict:
            return ["d", i, [enc(k) for k in x], [enc(v) for v in x.values()]]
        if isinstance(x, list) and type(x) is list:
            return ["l", i, [enc(v) for v in x]]
        if not type(x).__module__.startswith("cma") or not hasattr(x, "__dict__"):
            raise ValueError(f"cma state: a {type(x).__module__}.{type(x).__qualname__}")
        attrs = dict(vars(x))
        node: dict[str, Any] = {"~": "obj", "i": i}
        if isinstance(x, solution_dict):
            data, unhashed, same = attrs.pop("data"), attrs.pop("_unhashed_keys"), attrs.pop("data_with_same_key")
            node["~"] = "solutions"
            node["e"] = [[enc(unhashed[k]), enc(v), enc(same[k]) if k in same else None] for k, v in data.items()]
        elif isinstance(x, dict):
            node["~"], node["k"], node["v"] = "dictobj", [enc(k) for k in x], [enc(v) for v in x.values()]
        elif isinstance(x, list):
            node["~"], node["v"] = "listobj", [enc(v) for v in x]
        node["a"] = {name: enc(v) for name, v in attrs.items()}
        return node

    return enc(root)


def decode(tree: Any, fresh: Any) -> Any:
    """``fresh`` (what `encode` was given, made anew from the run's config) filled with ``tree``'s data; a
    `ModelFileError` naming the path of the first node that does not fit."""
    memo: dict[int, Any] = {}
    solution_dict = _solution_dict()

    def bad(path: str, why: str) -> ModelFileError:
        return ModelFileError(f"corrupt checkpoint (its cma state at {path[:200]}: {why})")

    def check_fits(value: Any, old: Any, path: str) -> None:
        if old is _MISSING or old is None or value is None:
            return
        if isinstance(old, np.ndarray):
            # A 0-d array in the config's state is a placeholder for a scalar or a vector (sigma_vec.scaling).
            if not isinstance(value, np.ndarray) or value.dtype != old.dtype \
                    or value.shape != old.shape and old.shape != ():
                raise bad(path, f"{_kind(value)} where the config's state has {_kind(old)}")
        elif isinstance(old, _NUMBER):
            if not isinstance(value, _NUMBER):
                raise bad(path, f"{_kind(value)} where the config's state has a number")
        elif type(old) in (list, tuple, dict, str) and type(value) is not type(old):
            raise bad(path, f"{_kind(value)} where the config's state has {_kind(old)}")

    def fill_object(node: dict[str, Any], old: Any, path: str, kind: str) -> Any:
        cls = type(old)
        if old is _MISSING or old is None or not cls.__module__.startswith("cma") or not hasattr(old, "__dict__"):
            raise bad(path, "an object where the config's state has none")
        if (kind == "solutions") != isinstance(old, solution_dict) or (kind == "dictobj") != isinstance(old, dict) \
                or (kind == "listobj") != isinstance(old, list):
            raise bad(path, f"a {kind} where the config's state has a {cls.__qualname__}")
        memo[_index(node, path)] = old
        attrs = node.get("a")
        if not isinstance(attrs, dict) or not all(isinstance(k, str) for k in attrs):
            raise bad(path, "an object without its attributes")
        now = vars(old)
        for name in attrs:  # data only: never a name that would hide one of the class's methods
            if name.startswith("__") or name not in now and callable(getattr(cls, name, None)):
                raise bad(f"{path}.{name[:40]}", "an attribute that would hide the object's code")
        filled = {name: dec(v, now.get(name, _MISSING), f"{path}.{name}") for name, v in attrs.items()}
        if kind == "solutions":
            data: dict[Any, Any] = {}
            unhashed: dict[Any, Any] = {}
            same: dict[Any, Any] = {}
            for j, entry in enumerate(_items(node, "e", path)):
                if not isinstance(entry, list) or len(entry) != 3:
                    raise bad(path, "a solution entry that is not (sample, value, same-key values)")
                sample = dec(entry[0], _MISSING, f"{path}[{j}]")
                try:
                    key = old.key(sample)
                except TypeError:
                    raise bad(path, f"an unhashable sample {_kind(sample)}") from None
                unhashed[key], data[key] = sample, dec(entry[1], _MISSING, f"{path}[{j}]")
                if entry[2] is not None:
                    same[key] = dec(entry[2], _MISSING, f"{path}[{j}]")
            filled.update(data=data, _unhashed_keys=unhashed, data_with_same_key=same)
        elif kind == "dictobj":
            keys = [dec(k, _MISSING, path) for k in _items(node, "k", path)]
            values = _items(node, "v", path)
            if len(keys) != len(values):
                raise bad(path, "a mapping with more keys than values")
            try:
                items = {k: dec(v, dict.get(old, k, _MISSING), f"{path}[{k!r}]")
                         for k, v in zip(keys, values, strict=True)}
            except TypeError:
                raise bad(path, "a mapping with an unhashable key") from None
            dict.clear(old)
            dict.update(old, items)
        elif kind == "listobj":
            items_list = [dec(v, _MISSING, f"{path}[{j}]") for j, v in enumerate(_items(node, "v", path))]
            list.clear(old)
            list.extend(old, items_list)
        now.clear()
        now.update(filled)
        return old

    def _index(node: dict[str, Any] | list[Any], path: str) -> int:
        i = node.get("i") if isinstance(node, dict) else node[1]
        if not isinstance(i, int) or isinstance(i, bool) or i in memo:
            raise bad(path, "a node without a fresh index")
        return i

    def _items(node: dict[str, Any], key: str, path: str) -> list[Any]:
        items = node.get(key)
        if not isinstance(items, list):
            raise bad(path, f"a node without its {key!r} list")
        return items

    def dec_short(node: list[Any], old: Any, path: str) -> Any:
        """The frequent nodes, as short lists: ``["r", i]`` a reference, ``["v", i, base, offset(, shape,
        strides)]`` a view (without shape and strides: a row of its base), ``["d", i, keys, values]`` a dict,
        ``["l", i, items]`` a list."""
        tag = node[0] if node and isinstance(node[0], str) else None
        sizes = {"r": (2,), "v": (4, 6), "d": (4,), "l": (3,)}
        if tag not in sizes or len(node) not in sizes[tag]:
            raise bad(path, f"a list of {len(node)} that is not a state node")
        if tag == "r":
            if not isinstance(node[1], int) or node[1] not in memo:
                raise bad(path, "a reference to nothing read yet")
            return memo[node[1]]
        i = _index(node, path)
        if tag == "v":
            base = dec(node[2], _MISSING, f"{path}.base")
            if not isinstance(base, np.ndarray) or not (base.flags.c_contiguous or base.flags.f_contiguous):
                raise bad(path, "a view of no array")
            shape, strides = (node[4], node[5]) if len(node) == 6 else (base.shape[1:], base.strides[1:])
            try:
                value = np.ndarray(tuple(shape), base.dtype, buffer=base, offset=node[3], strides=tuple(strides))
            except (ValueError, TypeError, OverflowError):
                raise bad(path, "a view outside its array") from None
            memo[i] = value
            return value
        if tag == "l":
            if not isinstance(node[2], list):
                raise bad(path, "a list node without its items")
            items: list[Any] = []
            memo[i] = items
            olds = old if type(old) is list else []
            items.extend(dec(v, olds[j] if j < len(olds) else _MISSING, f"{path}[{j}]") for j, v in enumerate(node[2]))
            return items
        keys, values = node[2], node[3]
        if not isinstance(keys, list) or not isinstance(values, list) or len(keys) != len(values):
            raise bad(path, "a mapping with more keys than values")
        mapping: dict[Any, Any] = {}
        memo[i] = mapping
        olds_dict = old if type(old) is dict else {}
        for k, v in zip(keys, values, strict=True):
            key = dec(k, _MISSING, path)
            try:
                mapping[key] = dec(v, olds_dict.get(key, _MISSING), f"{path}[{key!r}]")
            except TypeError:
                raise bad(path, "a mapping with an unhashable key") from None
        return mapping

    def dec(node: Any, old: Any, path: str) -> Any:
        if node is None or isinstance(node, (bool, int, str)):
            value: Any = node
        elif isinstance(node, float):
            if math.isnan(node):
                raise bad(path, "NaN")
            value = node
        elif isinstance(node, list):
            value = dec_short(node, old, path)
        elif not isinstance(node, dict) or not isinstance(node.get("~"), str):
            raise bad(path, f"a {type(node).__name__}, not a state node")
        else:
            kind = node["~"]
            if kind == "keep":
                if old is _MISSING:
                    raise bad(path, "no such part in the config's state")
                return old
            if kind == "np":
                dtype = np.dtype(node.get("d")) if node.get("d") in _DTYPES_BY_NAME else None
                if dtype is None or not isinstance(node.get("v"), (bool, int, float)):
                    raise bad(path, "a number of no known type")
                value = dtype.type(node["v"])
                if dtype.kind == "f" and math.isnan(float(value)):
                    raise bad(path, "NaN")
            elif kind == "array":
                t = node.get("v")
                if not isinstance(t, torch.Tensor) or np.dtype(str(t.dtype).removeprefix("torch.")) not in _DTYPES:
                    raise bad(path, "an array that is not a tensor of a numeric type")
                value = t.numpy().copy()
                if node.get("fortran") is True:
                    value = value.T
                if value.dtype.kind == "f" and not bool(np.isfinite(value).all()) and not _same_infinities(value, old):
                    raise bad(path, "NaN or infinite entries")
                memo[_index(node, path)] = value
            elif kind == "range":
                bounds = node.get("v")
                if not isinstance(bounds, list) or len(bounds) != 3 or not all(type(b) is int for b in bounds) \
                        or bounds[2] == 0:
                    raise bad(path, "a range that is not three integers")
                value = range(*bounds)
            elif kind == "tuple":
                value = tuple(dec(v, _MISSING, f"{path}[{j}]") for j, v in enumerate(_items(node, "v", path)))
            elif kind in ("obj", "solutions", "dictobj", "listobj"):
                return fill_object(node, old, path, kind)
            else:
                raise bad(path, f"an unknown node {kind[:40]!r}")
        check_fits(value, old, path)
        return value

    try:
        return dec(tree, fresh, "es")
    except RecursionError:
        raise bad("es", "nested too deep") from None


_DTYPES_BY_NAME = {str(d) for d in _DTYPES}


def _same_infinities(value: np.ndarray, old: Any) -> bool:
    """Whether ``value``'s non-finite entries are ``old``'s, the config's (pycma's bounds: ±inf), and no NaN."""
    if not isinstance(old, np.ndarray) or old.shape != value.shape or np.isnan(value).any():
        return False
    finite = np.isfinite(value)
    return bool((finite == np.isfinite(old)).all() and (value[~finite] == old[~finite]).all())


def _kind(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"a {x.dtype} array of shape {x.shape}"
    return f"a {type(x).__name__}"
