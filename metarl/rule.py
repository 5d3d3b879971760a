"""The learning rule: recurrent cells passing messages backward through the actor.

A cell with input ``x (…, I)``, state ``h (…, H)`` and output size ``O`` computes
``h' = tanh([h, x] @ w_state + b_state)`` and ``out = tanh([h', x] @ w_output + b_output)``.
After every environment step (SPEC, "Learning rule"):

1. the reward cell turns ``[r, node_info]`` of each output neuron into a signal ``e_L``;
2. for ``k = L … 1`` the node cell turns ``[node_info, e_k]`` into ``[c, db, dsigma]``
   (bias and sigma updated), then the edge cell turns
   ``[info_post, info_pre, c_post, w, flag]`` of each connection into ``[m, dw]``
   (weight updated) and ``e_{k-1} = mean_j m``.

`metarl.reference` is the step written plainly: the single Python definition (the spec)
that every backend is checked against (`metarl.backends`). This module holds what the
backends share: the rule's recurrent state, and the genome split by input block for the
fast formulation of `metarl.fused` and the native kernel (the first matmul of a cell is
linear in its input, so the edge cell's input blocks that belong to a neuron -- post
info and ``c``; pre info; the constant flag -- are multiplied once per neuron and
broadcast over connections, and only the recurrent state and the weight per connection).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .genome import NODE_INFO, GenomeLayout


@dataclass
class CellParams:
    """Parameters of one cell for a population, split into the rows acting on the state and on the input."""

    state_h: torch.Tensor  # (P, H, H)   rows of w_state acting on the state
    state_x: torch.Tensor  # (P, I, H)   rows of w_state acting on the input
    state_b: torch.Tensor  # (P, 1, H)
    out_h: torch.Tensor  # (P, H, O)
    out_x: torch.Tensor  # (P, I, O)
    out_b: torch.Tensor  # (P, 1, O)


@dataclass
class EdgeParams:
    """The connection cell split by input block (``*_h`` feed the new state, ``*_o`` the output).

    Input rows: post info ``[0:5]``, pre info ``[5:10]``, ``c`` ``[10:10+S]``, ``w``
    ``[10+S]``, flag ``[11+S]``.
    """

    rec_h: torch.Tensor  # (P, H, H)   rows acting on the recurrent state
    rec_o: torch.Tensor  # (P, H, O)
    post_h: torch.Tensor  # (P, 5+S, H) rows acting on [post info, c]
    post_o: torch.Tensor  # (P, 5+S, O)
    pre_h: torch.Tensor  # (P, 5, H)   rows acting on the pre info
    pre_o: torch.Tensor  # (P, 5, O)
    obs_h: torch.Tensor  # (P, 1, H)   first layer: the pre info is [0, 0, x_i, 0, 0]
    obs_o: torch.Tensor  # (P, 1, O)
    w_h: torch.Tensor  # (P, 1, 1, H) row acting on the weight
    w_o: torch.Tensor  # (P, 1, 1, O)
    b_h: torch.Tensor  # (P, 1, H)   bias (hidden layers: flag = 0)
    b_o: torch.Tensor  # (P, 1, O)
    first_b_h: torch.Tensor  # (P, 1, H)   bias plus the flag row (first layer: flag = 1)
    first_b_o: torch.Tensor  # (P, 1, O)


@dataclass
class RuleParams:
    """The three cells of a population's genomes, ready for the fast rule step."""

    reward: CellParams
    node: CellParams
    edge: EdgeParams
    signal_dim: int
    state_dim: int


def rule_params(genome: torch.Tensor, layout: GenomeLayout) -> RuleParams:
    """Split ``genome (P, G)`` into per-block cell parameters (contiguous copies)."""
    h, s, n = layout.state_dim, layout.signal_dim, NODE_INFO

    def part(name: str, key: str) -> torch.Tensor:
        return layout.view(genome, name, key)

    def cell(name: str) -> CellParams:
        ws, wo = part(name, "w_state"), part(name, "w_output")
        return CellParams(ws[:, :h].contiguous(), ws[:, h:].contiguous(),
                          part(name, "b_state").unsqueeze(1).contiguous(),
                          wo[:, :h].contiguous(), wo[:, h:].contiguous(),
                          part(name, "b_output").unsqueeze(1).contiguous())

    def edge_blocks(w: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
        x = w[:, h:]  # input rows
        return {"rec": w[:, :h].contiguous(),
                "post": torch.cat((x[:, :n], x[:, 2 * n:2 * n + s]), dim=1),
                "pre": x[:, n:2 * n].contiguous(),
                "obs": x[:, n + 2:n + 3].contiguous(),
                "w": x[:, 2 * n + s].reshape(x.shape[0], 1, 1, -1).contiguous(),
                "b": b.unsqueeze(1).contiguous(),
                "first_b": (b + x[:, 2 * n + s + 1]).unsqueeze(1)}

    name = "connection_network"
    eh = edge_blocks(part(name, "w_state"), part(name, "b_state"))
    eo = edge_blocks(part(name, "w_output"), part(name, "b_output"))
    edge = EdgeParams(**{f"{k}_h": v for k, v in eh.items()}, **{f"{k}_o": v for k, v in eo.items()})
    return RuleParams(cell("reward_network"), cell("node_network"), edge, layout.signal_dim, layout.state_dim)


@dataclass
class RuleState:
    """Recurrent states of every cell instance."""

    reward: torch.Tensor  # (P, n_L, H)
    nodes: list[torch.Tensor]  # (P, n_k, H) for k = 1..L
    edges: list[torch.Tensor]  # (P, n_{k-1}, n_k, H) for k = 1..L (row-major over (i, j))

    def clone(self) -> RuleState:
        """Deep copy."""
        return RuleState(self.reward.clone(), [t.clone() for t in self.nodes], [t.clone() for t in self.edges])


def initial_rule_state(sizes: list[int], population: int, state_dim: int, *,
                       device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> RuleState:
    """All-zero recurrent states."""
    def z(*shape: int) -> torch.Tensor:
        return torch.zeros(population, *shape, state_dim, device=device, dtype=dtype)

    return RuleState(z(sizes[-1]), [z(n) for n in sizes[1:]],
                     [z(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)])
