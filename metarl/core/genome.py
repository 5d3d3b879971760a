"""The genome: one flat ``(P, G)`` tensor with a named layout of the three rule cells.

Cells, in genome order: ``reward_network``, ``node_network``, ``connection_network``, each
of the sizes its declaration gives (`metarl.core.rule.RuleDeclaration`: input ``I`` = the sum of
its inputs' widths, output ``O`` the sum of its outputs'). Each holds ``w_state (I+H, H)``,
``b_state (H)``, ``w_output (I+H, O)``, ``b_output (O)``, each flattened row-major; the input
rows in the declaration's order. The standard rule has inputs 6, 5+S and 12+S and outputs S,
S+2 and S+1: with S=1, H=8 the genome has 520 numbers (135 + 165 + 220).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .rule import CELLS, STANDARD, Input, RuleDeclaration, rule_named

PARTS = ("w_state", "b_state", "w_output", "b_output")


@dataclass(frozen=True)
class CellShape:
    """Sizes of one recurrent cell: input ``I``, state ``H``, output ``O``."""

    inputs: int
    state: int
    outputs: int

    def part_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the parameter tensors (without the population dimension)."""
        i, h, o = self.inputs, self.state, self.outputs
        return {"w_state": (i + h, h), "b_state": (h,), "w_output": (i + h, o), "b_output": (o,)}

    @property
    def size(self) -> int:
        """Number of genes of this cell."""
        return sum(_numel(s) for s in self.part_shapes().values())


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@dataclass(frozen=True)
class GenomeLayout:
    """Where each cell parameter lives in the flat genome, for the rule's declaration, signal size S and state
    size H."""

    signal_dim: int = 1
    state_dim: int = 8
    rule: RuleDeclaration = field(default=STANDARD)

    def __post_init__(self) -> None:
        # Computed once here rather than as cached properties: `functools.cached_property` takes a lock, which
        # torch.compile cannot trace (the compiled backend runs `metarl.core.spec`, which calls `view`).
        s, h = self.signal_dim, self.state_dim
        cells = {c.name: CellShape(c.input_size(s), h, c.output_size(s)) for c in self.rule.cells}
        slices, start = {}, 0
        for cell in CELLS:
            for part, shape in cells[cell].part_shapes().items():
                n = _numel(shape)
                slices[cell, part] = (slice(start, start + n), shape)
                start += n
        object.__setattr__(self, "_cells", cells)
        object.__setattr__(self, "_slices", slices)

    @property
    def cells(self) -> dict[str, CellShape]:
        """Shapes of the three cells by name, from the declaration."""
        return self._cells  # type: ignore[attr-defined, no-any-return]

    @property
    def slices(self) -> dict[tuple[str, str], tuple[slice, tuple[int, ...]]]:
        """``(cell, part) -> (slice of the genome, shape)``."""
        return self._slices  # type: ignore[attr-defined, no-any-return]

    @property
    def size(self) -> int:
        """Genes per individual (520 for S=1, H=8)."""
        return sum(c.size for c in self.cells.values())

    def view(self, genome: torch.Tensor, cell: str, part: str) -> torch.Tensor:
        """Named view ``(P, *shape)`` of ``genome (P, G)``."""
        self.check(genome)
        sl, shape = self.slices[cell, part]
        return genome[:, sl].reshape(genome.shape[0], *shape)

    def check(self, genome: torch.Tensor) -> None:
        """Raise if ``genome`` is not ``(P, G)``."""
        if genome.dim() != 2 or genome.shape[1] != self.size:
            raise ValueError(f"genome must have shape (P, {self.size}), got {tuple(genome.shape)}")

    def random(self, population: int, std: float, generator: torch.Generator) -> torch.Tensor:
        """Initial population ``(P, G)`` drawn from ``Normal(0, std^2)``."""
        # In place: no second (P, G) tensor, so a population of 100,000 peaks at one genome copy.
        return torch.randn(population, self.size, generator=generator, device=generator.device).mul_(std)

    def input_genes(self, cell: str, name: str) -> torch.Tensor:
        """Boolean mask ``(G,)`` of the genes that read ``cell``'s input ``name``: its rows of ``w_state`` and
        ``w_output`` (the state's rows come first, then the inputs in declared order). Zeroed, the rule runs
        as if it had no such input; a ValueError names a cell without it."""
        for block, rows in self._input_rows(cell):
            if block.name == name:
                mask = torch.zeros(self.size, dtype=torch.bool)
                for part in ("w_state", "w_output"):
                    sl, shape = self.slices[cell, part]
                    reads = torch.zeros(shape, dtype=torch.bool)
                    reads[rows.start:rows.stop] = True
                    mask[sl] = reads.reshape(-1)
                return mask
        raise ValueError(f"{cell} has no input {name!r}")

    def _input_rows(self, cell: str) -> list[tuple[Input, range]]:
        """Each of ``cell``'s inputs with its rows of ``w_state`` and ``w_output``, in declared order (the
        state's ``H`` rows come first)."""
        out, start = [], self.state_dim
        for block in self.rule.cell(cell).inputs:
            n = block.size(self.signal_dim)
            out.append((block, range(start, start + n)))
            start += n
        return out

    def embed(self, genome: torch.Tensor, source: GenomeLayout) -> torch.Tensor:
        """The genome ``(G,)`` of this layout that computes what ``genome (G_source,)`` of ``source`` computes,
        where this rule is ``source``'s with inputs added: every gene of ``source`` in its place, the rows of
        the added inputs 0 (so they change nothing until a search moves them). Both rules must have the same
        signal and state sizes and outputs, and ``source``'s inputs must be this rule's in the same order with
        some left out; otherwise a ValueError names the first difference."""
        if (source.signal_dim, source.state_dim) != (self.signal_dim, self.state_dim):
            raise ValueError(f"signal_dim {source.signal_dim}, state_dim {source.state_dim} against "
                             f"{self.signal_dim}, {self.state_dim}")
        flat = genome.reshape(1, -1)
        source.check(flat)
        out = torch.zeros(1, self.size, dtype=genome.dtype, device=genome.device)
        for cell in CELLS:
            mine, theirs = self.rule.cell(cell), source.rule.cell(cell)
            if [(o.width, o.updates) for o in mine.outputs] != [(o.width, o.updates) for o in theirs.outputs]:
                raise ValueError(f"{cell} has other outputs")
            rows, j = list(range(self.state_dim)), 0  # the state rows, then each input's rows where it matches
            for block, block_rows in self._input_rows(cell):
                if j < len(theirs.inputs) and (theirs.inputs[j].width, theirs.inputs[j].source) == (
                        block.width, block.source):
                    rows += block_rows
                    j += 1
            if j < len(theirs.inputs):
                i = theirs.inputs[j]
                raise ValueError(f"{cell}: the input {i.name} ({i.source}) is not among this rule's, in order")
            for part in PARTS:
                target, src = self.view(out, cell, part), source.view(flat, cell, part)
                if part in ("w_state", "w_output"):
                    target[:, rows] = src
                else:
                    target.copy_(src)
        return out.reshape(-1)

    def to_cells(self, genome: torch.Tensor) -> dict[str, dict[str, object]]:
        """The saved-model form of one genome ``(G,)``: nested lists with a leading 1."""
        genome = genome.detach().reshape(1, -1).double().cpu()
        out: dict[str, dict[str, object]] = {}
        for cell in CELLS:
            entry: dict[str, object] = {p: self.view(genome, cell, p).tolist() for p in PARTS}
            entry["state_dim"] = self.state_dim
            out[cell] = entry
        return out

    @classmethod
    def from_cells(cls, cells: dict, rule: RuleDeclaration = STANDARD) -> tuple[GenomeLayout, torch.Tensor]:
        """Layout and genome ``(G,)`` (float32) of the saved-model form of a genome of ``rule`` (a model
        without a rule record has the standard rule); ValueError if inconsistent.

        The sizes are checked against the config's ranges and every part's nesting and shape against the
        layout before a tensor is made, so a hostile file can neither recurse deeply nor allocate much."""
        for cell in CELLS:
            if not isinstance(cells.get(cell), dict):
                raise ValueError(f"missing cell {cell!r}")
        state_dim = cells["reward_network"].get("state_dim", 0)
        if isinstance(state_dim, bool) or not isinstance(state_dim, int) or not 0 <= state_dim <= MAX_STATE_DIM:
            raise ValueError(f"reward_network.state_dim: must be an integer in [0, {MAX_STATE_DIM}], "
                             f"got {_brief(state_dim)}")
        signal_dim = _last_dim(cells["reward_network"].get("w_output"))
        if signal_dim is None or not 1 <= signal_dim <= MAX_SIGNAL_DIM:
            raise ValueError(f"reward_network.w_output: not a matrix of 1 to {MAX_SIGNAL_DIM} columns")
        layout = cls(signal_dim=signal_dim, state_dim=state_dim, rule=rule)
        pieces = []
        for cell in CELLS:
            other = cells[cell].get("state_dim", state_dim)
            if other != state_dim:
                raise ValueError(f"{cell}.state_dim: {_brief(other)}, but reward_network.state_dim is {state_dim}")
            for part in PARTS:
                _, shape = layout.slices[cell, part]
                value = cells[cell].get(part)
                found = _nested_shape(value, len(shape) + 1)
                if found not in (shape, (1, *shape)):
                    got = "missing" if value is None else f"shape {found}" if found is not None else \
                        "not a nested list of numbers of that shape"
                    of = "" if rule == STANDARD else f" of the rule {rule.name}"
                    raise ValueError(f"{cell}.{part}: expected shape {shape} for signal_dim {signal_dim}, "
                                     f"state_dim {state_dim}{of}, got {got}")
                try:
                    pieces.append(torch.as_tensor(value, dtype=torch.float64).reshape(-1))
                except (TypeError, ValueError, RuntimeError, OverflowError):
                    raise ValueError(f"{cell}.{part}: not numeric") from None
        genome = torch.cat(pieces)
        if not torch.isfinite(genome).all():
            raise ValueError("genome contains non-finite numbers")
        return layout, genome.float()


def layout_of(config: Any) -> GenomeLayout:
    """The genome layout of a config (`metarl.config.Config`): its rule's sizes and declaration
    (``rule.declaration``, `metarl.core.rule.rule_named`)."""
    return GenomeLayout(config.rule.signal_dim, config.rule.state_dim, rule_named(config.rule.declaration))


MAX_SIGNAL_DIM = 1024  # the config's ranges of rule.signal_dim and rule.state_dim
MAX_STATE_DIM = 1024


def _brief(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _last_dim(value: object) -> int | None:
    """Length of the innermost list along the first elements (at most 4 levels deep), or None."""
    for _ in range(4):
        if not isinstance(value, list) or not value:
            return None
        if not isinstance(value[0], list):
            return len(value)
        value = value[0]
    return None


def _nested_shape(value: object, max_depth: int) -> tuple[int, ...] | None:
    """Shape of a rectangular nested list of numbers at most ``max_depth`` deep (a number: ``()``), else None.
    Iterative: a hostile file nested thousands deep is refused without recursion."""
    shape: list[int] = []
    level: list[object] = [value]
    for _ in range(max_depth + 1):
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in level):
            return tuple(shape)
        lists = [v for v in level if isinstance(v, list)]
        if len(lists) != len(level):
            return None
        n = len(lists[0])
        if any(len(v) != n for v in lists):
            return None
        shape.append(n)
        if n == 0:  # empty rows (a cell without state, rule.state_dim 0): nothing deeper to check
            return tuple(shape)
        level = [x for v in lists for x in v]
    return None
