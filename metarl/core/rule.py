"""The learning rule, declared once: what each of its three cells reads and what it updates.

A cell with input ``x (…, I)``, state ``h (…, H)`` and output size ``O`` computes
``h' = tanh([h, x] @ w_state + b_state)`` and ``out = tanh([h', x] @ w_output + b_output)``
(SPEC, "Learning rule"). After every environment step:

1. the reward cell runs on each output neuron and gives the backward signal ``e_L``;
2. for ``k = L … 1`` the node cell runs on each neuron of layer ``k`` (its outputs update the
   neuron's bias and sigma and give the signal ``c`` its incoming connections read), then the
   connection cell on each connection into layer ``k`` (its outputs update the weight and give
   ``m``; ``e_{k-1} = mean_j m``).

That order of the step is fixed. What a cell *reads* and what its outputs *update* is the
`RuleDeclaration`: per cell, its inputs (name, width, source) and its outputs (name, width,
what they update). Everything else follows from it: the spec's input assembly
(`metarl.core.spec` concatenates the declared sources, looked up in `SOURCES`), the genome's
cell shapes (`metarl.core.genome.GenomeLayout`), the saved-model record (`metarl.runs.io`) and the native
kernel's code for the cells' inputs and the traces (`metarl.backends.codegen` generates it from the declaration
and the sources' functions; a source with no vector form runs on the spec or compiled backend).

A width is a number or ``"S"`` (the signal size, ``rule.signal_dim``). A source is a function
of the `Site` a cell instance runs at (`register_source`); the standard declaration reads the
neuron's node info ``[s, z, y, b, sigma]`` (`metarl.core.actor`), the reward, the signals, the
weight and the first-layer flag. `register_rule` names a declaration so that a config
(``rule.declaration``) can choose it. docs/extending.md shows how to change the rule.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .actor import ActorState

CELLS = ("reward_network", "node_network", "connection_network")  # genome order
UPDATES = ("signal", "bias", "sigma", "weight")  # what an output can update
# The outputs each cell may have besides its signal (exactly one, width S, in every cell).
CELL_UPDATES = {"reward_network": ("signal",), "node_network": ("signal", "bias", "sigma"),
                "connection_network": ("signal", "weight")}
Width = int | str  # a number of features, or "S"


def width_size(width: Width, signal_dim: int) -> int:
    """Features of a block of ``width`` (`Input`, `Output`): ``signal_dim`` for ``"S"``."""
    return signal_dim if width == "S" else int(width)
MAX_INPUTS = 64  # per cell, in a declaration (a saved model's record is untrusted input)
MAX_WIDTH = 1024
DECLARATION_FORMAT = 1  # of `RuleDeclaration.to_dict`

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,63}")


# ---------------------------------------------------------------------------- where a cell reads its inputs

REWARD_MEAN_TIME = 1.0  # seconds of simulated time: the default time constant of the reward's running mean


@dataclass
class Site:
    """What a source function may read for the instances of one cell at one place in the step.

    ``instances``: the instance shape after the population: ``(n_k,)`` for the reward cell (the
    output layer) and the node cell (layer ``k``), ``(n_{k-1}, n_k)`` for the connection cell
    (connections ``i -> j`` into layer ``k``, row-major). ``actor`` is the actor at that point of
    the step: the connection cell sees the post neurons' updated bias and sigma. ``signal`` is
    what reaches the instance: ``e_k (P, n_k, S)`` at a reward or node cell, ``c (P, n_k, S)`` of
    the post neuron at a connection cell.
    """

    cell: str
    layer: int  # k (1-based): the neuron's layer, or the post neuron's
    actor: ActorState
    x: torch.Tensor  # (P, n_0) the observation the actor acted on
    reward: torch.Tensor  # (P,) the reward the rule sees
    signal: torch.Tensor | None
    t: torch.Tensor | None  # the step number in the lifetime (0-d), if known
    lifetime_steps: int | None
    # The rule's traces (`TRACES`) as they were before this step, by name: ``(P,)`` each; only those the
    # declaration's sources read (`RuleDeclaration.traces`).
    traces: Mapping[str, torch.Tensor] = field(default_factory=dict)
    dt: float | torch.Tensor | None = None  # the env's time step: a float, or (P,) where it is drawn per individual
    reward_mean_time: float = REWARD_MEAN_TIME  # rule.reward_mean_time: seconds, the time constant of trace reward.mean

    @property
    def instances(self) -> tuple[int, ...]:
        n_post = self.actor.biases[self.layer - 1].shape[1]
        if self.cell == "connection_network":
            return (self.actor.weights[self.layer - 1].shape[1], n_post)
        return (n_post,)

    def per_individual(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` (0-d or ``(P,)``) broadcast to every instance: ``(P, *instances, 1)``."""
        pop = self.x.shape[0]
        value = value.to(self.x.dtype).reshape(-1, *[1] * (len(self.instances) + 1))
        return value.expand(pop, *self.instances, 1)


Source = Callable[[Site], torch.Tensor]  # -> (P, *instances, width)


@dataclass(frozen=True)
class SourceEntry:
    fn: Source
    cells: tuple[str, ...]  # the cells it can feed
    doc: str
    traces: tuple[str, ...] = ()  # the traces (`TRACES`) it reads from ``site.traces``


SOURCES: dict[str, SourceEntry] = {}


def register_source(name: str, cells: tuple[str, ...] = CELLS, *, traces: tuple[str, ...] = ()
                    ) -> Callable[[Source], Source]:
    """Decorator: make ``fn(site) -> (P, *site.instances, width)`` the source called ``name`` for ``cells``.
    ``traces``: the registered traces (`register_trace`) it reads from ``site.traces``; a rule with this source
    carries them from step to step."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"source name {name!r}: letters, digits, '_' and '.', at most 64")
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        raise ValueError(f"source {name!r}: unknown cells {unknown}; the cells are {', '.join(CELLS)}")
    missing = [t for t in traces if t not in TRACES]
    if missing:
        raise ValueError(f"source {name!r}: unknown traces {missing}; registered: {', '.join(TRACES) or 'none'}")

    def add(fn: Source) -> Source:
        SOURCES[name] = SourceEntry(fn, tuple(cells), (fn.__doc__ or "").strip().split("\n")[0], tuple(traces))
        return fn

    return add


# ---------------------------------------------------------------------------- what the rule carries besides its cells

TraceUpdate = Callable[[torch.Tensor, Site], torch.Tensor]  # (the trace before the step (P,), site) -> after (P,)


@dataclass(frozen=True)
class TraceEntry:
    update: TraceUpdate
    doc: str


# A trace is one number per individual that the rule carries from step to step (in `RuleState.traces`, zero at
# birth) for the sources that read it: a running statistic such as the reward's recent mean. Each step's sources
# read the traces as they were before the step; after the rule has run, ``update(before, site)`` gives the new
# value, with ``site`` the reward cell's (the reward, the observation, ``dt``).
TRACES: dict[str, TraceEntry] = {}


def register_trace(name: str) -> Callable[[TraceUpdate], TraceUpdate]:
    """Decorator: make ``update(before (P,), site) -> after (P,)`` the trace called ``name``."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"trace name {name!r}: letters, digits, '_' and '.', at most 64")

    def add(fn: TraceUpdate) -> TraceUpdate:
        TRACES[name] = TraceEntry(fn, (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return add


@register_trace("reward.mean")
def _reward_mean(before: torch.Tensor, site: Site) -> torch.Tensor:
    """The running mean of the reward the rule sees, time constant ``rule.reward_mean_time`` seconds (0 at birth)."""
    if site.dt is None:
        raise ValueError("the trace reward.mean needs the time step (dt)")
    rate = 1 - torch.exp(-torch.as_tensor(site.dt, dtype=before.dtype, device=before.device) / site.reward_mean_time)
    return before + rate * (site.reward.to(before.dtype) - before)


NEURON_FEATURES = {"sum": "sums", "sample": "samples", "output": "outputs", "bias": "biases", "sigma": "sigmas"}
NODE_INFO = tuple(NEURON_FEATURES)  # a neuron's node info, in the standard declaration's order


def _neuron(field: str) -> Source:
    def source(site: Site) -> torch.Tensor:
        return getattr(site.actor, field)[site.layer - 1].unsqueeze(2)
    return source


def _post(field: str) -> Source:
    def source(site: Site) -> torch.Tensor:
        v = getattr(site.actor, field)[site.layer - 1]
        return v[:, None, :, None].expand(-1, *site.instances, 1)
    return source


def _pre(field: str) -> Source:
    def source(site: Site) -> torch.Tensor:
        if site.layer == 1:  # the input layer: its neurons' output is the observation, the rest is 0
            v = site.x if field == "outputs" else torch.zeros_like(site.x)
        else:
            v = getattr(site.actor, field)[site.layer - 2]
        return v[:, :, None, None].expand(-1, *site.instances, 1)
    return source


for _feature, _field in NEURON_FEATURES.items():
    register_source(f"neuron.{_feature}", ("reward_network", "node_network"))(_neuron(_field))
    register_source(f"post.{_feature}", ("connection_network",))(_post(_field))
    register_source(f"pre.{_feature}", ("connection_network",))(_pre(_field))


@register_source("reward", ("reward_network", "node_network"))
def _reward(site: Site) -> torch.Tensor:
    """The reward the rule sees this step."""
    return site.per_individual(site.reward)


@register_source("signal", ("reward_network", "node_network"))
def _signal(site: Site) -> torch.Tensor:
    """The backward signal e_k reaching the neuron (S)."""
    if site.signal is None:
        raise ValueError(f"{site.cell}: no signal reaches this cell (the reward cell makes e_L)")
    return site.signal


@register_source("post.signal", ("connection_network",))
def _post_signal(site: Site) -> torch.Tensor:
    """The post neuron's node-cell signal c (S)."""
    assert site.signal is not None
    return site.signal.unsqueeze(1).expand(-1, *site.instances, site.signal.shape[-1])


@register_source("weight", ("connection_network",))
def _weight(site: Site) -> torch.Tensor:
    """The connection's weight."""
    return site.actor.weights[site.layer - 1].unsqueeze(3)


@register_source("first_layer", ("connection_network",))
def _first_layer(site: Site) -> torch.Tensor:
    """1 for connections out of the observation, else 0."""
    return torch.full((site.x.shape[0], *site.instances, 1), 1.0 if site.layer == 1 else 0.0, dtype=site.x.dtype,
                      device=site.x.device)


@register_source("lifetime_fraction")
def _lifetime_fraction(site: Site) -> torch.Tensor:
    """The fraction of the lifetime elapsed, t / lifetime_steps."""
    if site.t is None or site.lifetime_steps is None:
        raise ValueError("the source lifetime_fraction needs the step number and the lifetime's length")
    return site.per_individual(site.t / site.lifetime_steps)


@register_source("reward.change", traces=("reward.mean",))
def _reward_change(site: Site) -> torch.Tensor:
    """The reward relative to its recent mean: r minus the running mean before this step (trace reward.mean)."""
    return site.per_individual(site.reward - site.traces["reward.mean"])


@register_source("reward.mean", traces=("reward.mean",))
def _reward_mean_source(site: Site) -> torch.Tensor:
    """The reward's running mean before this step (trace reward.mean)."""
    return site.per_individual(site.traces["reward.mean"])


# ---------------------------------------------------------------------------- the declaration

@dataclass(frozen=True)
class _Block:
    """A named block of ``width`` features of a cell's input or output."""

    name: str
    width: Width

    def size(self, signal_dim: int) -> int:
        return width_size(self.width, signal_dim)


@dataclass(frozen=True)
class Input(_Block):
    """One input block of a cell: ``width`` features read from the source called ``source``."""

    source: str


@dataclass(frozen=True)
class Output(_Block):
    """One output block of a cell and what it updates (`UPDATES`)."""

    updates: str


@dataclass(frozen=True)
class CellDeclaration:
    """A cell's inputs, in the order they are concatenated (and their rows in the genome), and outputs."""

    name: str
    inputs: tuple[Input, ...]
    outputs: tuple[Output, ...]

    def input_size(self, signal_dim: int) -> int:
        return sum(i.size(signal_dim) for i in self.inputs)

    def output_size(self, signal_dim: int) -> int:
        return sum(o.size(signal_dim) for o in self.outputs)

    def output_slices(self, signal_dim: int) -> dict[str, slice]:
        """Where each updated quantity lies in the cell's output, by what it updates."""
        out, start = {}, 0
        for o in self.outputs:
            out[o.updates] = slice(start, start + o.size(signal_dim))
            start += o.size(signal_dim)
        return out


@dataclass(frozen=True)
class RuleDeclaration:
    """The three cells of a learning rule (`CELLS` order), with a name to refer to it by."""

    name: str
    cells: tuple[CellDeclaration, ...]

    def __post_init__(self) -> None:
        _check(self)
        # Derived once (the spec reads it every step); not a field, so equality and the record are unchanged.
        object.__setattr__(self, "_traces", tuple(dict.fromkeys(
            t for c in self.cells for i in c.inputs for t in SOURCES[i.source].traces)))

    def cell(self, name: str) -> CellDeclaration:
        return self.cells[CELLS.index(name)]

    def signature(self) -> str:
        """What the rule computes, in one line: per cell, the inputs' widths and sources and the outputs' widths
        and updates (not the names, which are labels)."""
        return ";".join(f"{c.name}({','.join(f'{i.width}:{i.source}' for i in c.inputs)})"
                        f"->({','.join(f'{o.width}:{o.updates}' for o in c.outputs)})" for c in self.cells)

    @property
    def traces(self) -> tuple[str, ...]:
        """The traces (`TRACES`) the rule carries: those its inputs' sources read, in order of first use."""
        return self._traces  # type: ignore[attr-defined, no-any-return]

    @property
    def fingerprint(self) -> str:
        """First 12 hex digits of the SHA-256 of `signature`."""
        return hashlib.sha256(self.signature().encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        """The saved-model record (`from_dict` reads it back)."""
        return {"format": DECLARATION_FORMAT, "name": self.name, "fingerprint": self.fingerprint,
                "cells": {c.name: {"inputs": [{"name": i.name, "width": i.width, "source": i.source}
                                              for i in c.inputs],
                                   "outputs": [{"name": o.name, "width": o.width, "updates": o.updates}
                                               for o in c.outputs]} for c in self.cells}}

    @classmethod
    def from_dict(cls, data: object) -> RuleDeclaration:
        """A declaration from its record (untrusted: a saved model's); ValueError names the first problem."""
        d = _mapping(data, "rule", {"format", "name", "fingerprint", "cells"})
        if d.get("format", DECLARATION_FORMAT) != DECLARATION_FORMAT:
            raise ValueError(f"rule.format: this version reads format {DECLARATION_FORMAT}, got "
                             f"{_brief(d.get('format'))}")
        name = d.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"rule.name: a name of letters, digits, '_' and '.', got {_brief(name)}")
        cells_in = _mapping(d.get("cells"), "rule.cells", set(CELLS))
        cells = []
        for cell in CELLS:
            c = _mapping(cells_in.get(cell), f"rule.cells.{cell}", {"inputs", "outputs"})
            inputs = tuple(Input(*_entry(e, f"rule.cells.{cell}.inputs", ("name", "width", "source")))
                           for e in _list(c.get("inputs"), f"rule.cells.{cell}.inputs"))
            outputs = tuple(Output(*_entry(e, f"rule.cells.{cell}.outputs", ("name", "width", "updates")))
                            for e in _list(c.get("outputs"), f"rule.cells.{cell}.outputs"))
            cells.append(CellDeclaration(cell, inputs, outputs))
        rule = cls(name, tuple(cells))
        recorded = d.get("fingerprint")
        if recorded is not None and recorded != rule.fingerprint:
            raise ValueError(f"rule.fingerprint: {_brief(recorded)} is not that of the declared cells "
                             f"({rule.fingerprint})")
        return rule

    def difference(self, other: RuleDeclaration) -> str | None:
        """The first difference in what the two rules compute, in words, or None if they compute the same."""
        for mine, theirs in zip(self.cells, other.cells, strict=True):
            a = [(i.width, i.source) for i in mine.inputs]
            b = [(i.width, i.source) for i in theirs.inputs]
            if a != b:
                extra = [f"{s} ({w})" for w, s in a if (w, s) not in b]
                missing = [f"{s} ({w})" for w, s in b if (w, s) not in a]
                what = [f"adds the inputs {', '.join(extra)}"] if extra else []
                what += [f"drops the inputs {', '.join(missing)}"] if missing else []
                return f"{mine.name} {' and '.join(what) or 'reads its inputs in another order'}"
            if [(o.width, o.updates) for o in mine.outputs] != [(o.width, o.updates) for o in theirs.outputs]:
                return f"{mine.name} has other outputs"
        return None


def _check(rule: RuleDeclaration) -> None:
    """ValueError unless ``rule`` is a rule the step can run (sources known and fit for the cell, widths, outputs)."""
    if tuple(c.name for c in rule.cells) != CELLS:
        raise ValueError(f"a rule declares the cells {', '.join(CELLS)} in this order")
    for c in rule.cells:
        if len(c.inputs) > MAX_INPUTS:
            raise ValueError(f"{c.name}: at most {MAX_INPUTS} inputs, got {len(c.inputs)}")
        names = [i.name for i in c.inputs] + [o.name for o in c.outputs]
        for block, name in [(i, i.name) for i in c.inputs] + [(o, o.name) for o in c.outputs]:
            where = f"{c.name} {'input' if isinstance(block, Input) else 'output'} {_brief(name)}"
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise ValueError(f"{where}: a name of letters, digits, '_' and '.', at most 64")
            if names.count(name) > 1:
                raise ValueError(f"{where}: named twice")
            w = block.width
            if w != "S" and (isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= MAX_WIDTH):
                raise ValueError(f"{where}: width must be \"S\" or an integer in [1, {MAX_WIDTH}], got {_brief(w)}")
        for i in c.inputs:
            entry = SOURCES.get(i.source) if isinstance(i.source, str) else None
            if entry is None:
                raise ValueError(f"{c.name} input {i.name}: unknown source {_brief(i.source)}; known: "
                                 f"{', '.join(s for s, e in SOURCES.items() if c.name in e.cells)}")
            if c.name not in entry.cells:
                raise ValueError(f"{c.name} input {i.name}: the source {i.source} feeds only "
                                 f"{', '.join(entry.cells)}")
        updates = [o.updates for o in c.outputs]
        for o in c.outputs:
            if o.updates not in CELL_UPDATES[c.name]:
                raise ValueError(f"{c.name} output {o.name}: updates must be one of "
                                 f"{', '.join(CELL_UPDATES[c.name])}, got {_brief(o.updates)}")
            if updates.count(o.updates) > 1:
                raise ValueError(f"{c.name}: two outputs update {o.updates}")
            if o.updates == "signal" and o.width != "S":
                raise ValueError(f"{c.name} output {o.name}: the signal has width \"S\"")
            if o.updates != "signal" and o.width != 1:
                raise ValueError(f"{c.name} output {o.name}: a {o.updates} update has width 1")
        if "signal" not in updates:
            raise ValueError(f"{c.name}: no output updates the signal")


def _mapping(value: object, where: str, keys: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping, got {_brief(value)}")
    unknown = sorted(str(k) for k in value if k not in keys)
    if unknown:
        raise ValueError(f"{where}: unknown keys {_brief(unknown)}")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list) or len(value) > MAX_INPUTS:
        raise ValueError(f"{where}: expected a list of at most {MAX_INPUTS} entries")
    return value


def _entry(value: object, where: str, keys: tuple[str, ...]) -> tuple[Any, ...]:
    d = _mapping(value, where, set(keys))
    missing = [k for k in keys if k not in d]
    if missing:
        raise ValueError(f"{where}: an entry lacks {', '.join(missing)}")
    return tuple(d[k] for k in keys)


def _brief(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _inputs(*pairs: tuple[str, Width, str]) -> tuple[Input, ...]:
    return tuple(Input(*p) for p in pairs)


def _info(prefix: str, source_prefix: str) -> list[tuple[str, Width, str]]:
    return [(f"{prefix}{f}", 1, f"{source_prefix}.{f}") for f in NODE_INFO]


# The rule of SPEC (and of the original project): node info [s, z, y, b, sigma]; with S=1, H=8, 520 genes.
STANDARD = RuleDeclaration("standard", (
    CellDeclaration("reward_network", _inputs(("r", 1, "reward"), *_info("", "neuron")),
                    (Output("e", "S", "signal"),)),
    CellDeclaration("node_network", _inputs(*_info("", "neuron"), ("e", "S", "signal")),
                    (Output("c", "S", "signal"), Output("db", 1, "bias"), Output("dsigma", 1, "sigma"))),
    CellDeclaration("connection_network",
                    _inputs(*_info("post_", "post"), *_info("pre_", "pre"), ("c", "S", "post.signal"),
                            ("w", 1, "weight"), ("flag", 1, "first_layer")),
                    (Output("m", "S", "signal"), Output("dw", 1, "weight"))),
))

RULES: dict[str, RuleDeclaration] = {STANDARD.name: STANDARD}


def register_rule(rule: RuleDeclaration) -> RuleDeclaration:
    """Make ``rule`` the declaration a config's ``rule.declaration: <its name>`` chooses. A name is given once:
    registering another rule under a taken name is a ValueError (the same rule again is fine)."""
    known = RULES.get(rule.name)
    if known is not None and known != rule:
        raise ValueError(f"a different rule is already registered as {rule.name!r} ({known.difference(rule)})")
    if known is not None:
        return known  # the same rule again: the registered object stays (`is` comparisons hold)
    RULES[rule.name] = rule
    return rule


def rule_named(name: str) -> RuleDeclaration:
    """The registered declaration called ``name``; ValueError lists the known ones."""
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(f"unknown rule declaration {_brief(name)}; registered: {', '.join(RULES)}") from None


def with_input(rule: RuleDeclaration, cell: str, new: Input, *, name: str) -> RuleDeclaration:
    """``rule`` with the input ``new`` appended to ``cell``, called ``name``."""
    cells = tuple(CellDeclaration(c.name, (*c.inputs, new), c.outputs) if c.name == cell else c for c in rule.cells)
    return RuleDeclaration(name, cells)


# The standard rule with the reward relative to its recent mean (source reward.change) as one more input of the
# reward cell and of the connection cell (where a three-factor rule multiplies it into the weight change): a flip of
# the hidden goal is a jump in it. With S=1, H=8, 539 genes; a standard genome embeds in it (`GenomeLayout.embed`).
REWARD_CHANGE = register_rule(with_input(with_input(STANDARD, "reward_network", Input("dr", 1, "reward.change"),
                                                    name="reward_change"),
                                         "connection_network", Input("dr", 1, "reward.change"), name="reward_change"))


# ---------------------------------------------------------------------------- the rule's recurrent state

@dataclass
class RuleState:
    """Recurrent states of every cell instance, and the rule's traces."""

    reward: torch.Tensor  # (P, n_L, H)
    nodes: list[torch.Tensor]  # (P, n_k, H) for k = 1..L
    edges: list[torch.Tensor]  # (P, n_{k-1}, n_k, H) for k = 1..L (row-major over (i, j))
    traces: dict[str, torch.Tensor] = field(default_factory=dict)  # (P,) by name (`RuleDeclaration.traces`)

    def clone(self) -> RuleState:
        """Deep copy."""
        return self.map(torch.Tensor.clone)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> RuleState:
        """``fn`` applied to every tensor."""
        return RuleState(fn(self.reward), [fn(t) for t in self.nodes], [fn(t) for t in self.edges],
                         {name: fn(t) for name, t in self.traces.items()})


def initial_rule_state(sizes: list[int], population: int, state_dim: int, *,
                       device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                       traces: tuple[str, ...] = (), population_last: bool = False) -> RuleState:
    """All-zero recurrent states, and the ``traces`` (`RuleDeclaration.traces`) at zero. ``population_last``: the
    population as the last dimension instead of the first (``(..., H, P)``, as the native kernel reads them)."""
    def z(*shape: int) -> torch.Tensor:
        dims = (*shape, state_dim, population) if population_last else (population, *shape, state_dim)
        return torch.zeros(dims, device=device, dtype=dtype)

    return RuleState(z(sizes[-1]), [z(n) for n in sizes[1:]],
                     [z(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)],
                     {name: torch.zeros(population, device=device, dtype=dtype) for name in traces})
