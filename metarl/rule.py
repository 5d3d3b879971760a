"""The learning rule: recurrent cells passing messages backward through the actor.

A cell with input ``x (…, I)``, state ``h (…, H)`` and output size ``O`` computes
``h' = tanh([h, x] @ w_state + b_state)`` and ``out = tanh([h', x] @ w_output + b_output)``.
After every environment step (SPEC, "Learning rule"):

1. the reward cell turns ``[r, node_info]`` of each output neuron into a signal ``e_L``;
2. for ``k = L … 1`` the node cell turns ``[node_info, e_k]`` into ``[c, db, dsigma]``
   (bias and sigma updated), then the edge cell turns
   ``[info_post, info_pre, c_post, w, flag]`` of each connection into ``[m, dw]``
   (weight updated) and ``e_{k-1} = mean_j m``.

This is the fast formulation: the first matmul of a cell is linear in its input, so the
edge cell's input blocks that belong to a neuron (post info and ``c``; pre info; the
constant flag) are multiplied once per neuron and broadcast over connections, and only
the recurrent state and the weight are multiplied per connection. The genome is split
into those blocks once per lifetime (`rule_params`). `metarl.reference` holds the plain
formulation this one is tested against; `metarl.fused` is the same step laid out for
`torch.compile`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .actor import ActorState
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


def affine(bias: torch.Tensor | None, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``bias + x @ w`` per individual (``x @ w`` without bias): ``x (P, *batch, I)``, ``w (P, I, O)``."""
    if x.dim() == 3:
        return torch.bmm(x, w) if bias is None else torch.baddbmm(bias, x, w)
    out = torch.bmm(x.flatten(1, -2), w).reshape(*x.shape[:-1], w.shape[2])
    return out if bias is None else bias + out


def apply_cell(p: CellParams, h: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One cell on every instance: ``h (P, N, H)``, ``x (P, N, I)`` -> ``(h', out (P, N, O))``."""
    h = torch.tanh(affine(affine(p.state_b, x, p.state_x), h, p.state_h))
    out = torch.tanh(affine(affine(p.out_b, x, p.out_x), h, p.out_h))
    return h, out


def rule_step(params: RuleParams, rstate: RuleState, actor: ActorState, x: torch.Tensor,
              reward: torch.Tensor, *, learning_rate: float, weight_limit: float, sigma_limit: float
              ) -> tuple[RuleState, ActorState]:
    """Apply the learning rule once after an env step; returns new (rule state, actor state).

    ``x (P, n_0)`` is the observation the actor saw, ``reward (P,)`` the reward it got.
    """
    s_dim = params.signal_dim
    layers = len(actor.weights)
    pop, n_out = actor.biases[-1].shape
    weights, biases, sigmas = list(actor.weights), list(actor.biases), list(actor.sigmas)
    nodes, edges = list(rstate.nodes), list(rstate.edges)

    r_in = torch.cat((reward.reshape(pop, 1, 1).expand(pop, n_out, 1), actor.node_info(layers)), dim=2)
    reward_h, e = apply_cell(params.reward, rstate.reward, r_in)

    for k in range(layers, 0, -1):
        i = k - 1
        info = actor.node_info(k)
        nodes[i], node_out = apply_cell(params.node, nodes[i], torch.cat((info, e), dim=2))
        c = node_out[:, :, :s_dim]
        biases[i] = (biases[i] + learning_rate * node_out[:, :, s_dim]).clamp(-weight_limit, weight_limit)
        sigmas[i] = (sigmas[i] + learning_rate * node_out[:, :, s_dim + 1]).clamp(0.0, sigma_limit)
        post = torch.cat((info[:, :, :3], biases[i].unsqueeze(2), sigmas[i].unsqueeze(2), c), dim=2)
        e, weights[i], edges[i] = _edge_layer(params.edge, edges[i], weights[i], post,
                                               actor.node_info(k - 1) if k > 1 else x, first=k == 1,
                                               s_dim=s_dim, learning_rate=learning_rate,
                                               weight_limit=weight_limit)

    return (RuleState(reward_h, nodes, edges),
            ActorState(weights, biases, sigmas, actor.sums, actor.samples, actor.outputs))


def _edge_layer(p: EdgeParams, h: torch.Tensor, w: torch.Tensor, post: torch.Tensor, pre: torch.Tensor,
                *, first: bool, s_dim: int, learning_rate: float, weight_limit: float
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edge cell on every connection of one layer.

    ``h (P, n_in, n_out, H)``, ``w (P, n_in, n_out)``, ``post (P, n_out, 5+S)`` = post node
    info (updated b, sigma) and ``c``; ``pre`` = ``(P, n_in, 5)`` node info, or the
    observation ``(P, n_0)`` for the first layer. Returns ``(e_prev (P, n_in, S), w', h')``.
    """
    if first:
        pre_h = pre.unsqueeze(2) * p.obs_h
        pre_o = pre.unsqueeze(2) * p.obs_o
        b_h, b_o = p.first_b_h, p.first_b_o
    else:
        pre_h = affine(None, pre, p.pre_h)
        pre_o = affine(None, pre, p.pre_o)
        b_h, b_o = p.b_h, p.b_o
    # Terms shared by a neuron's connections, broadcast over (i, j) below.
    post_h = affine(b_h, post, p.post_h)  # (P, n_out, H)
    post_o = affine(b_o, post, p.post_o)  # (P, n_out, O)

    wv = w.unsqueeze(3)
    base_h = post_h.unsqueeze(1) + pre_h.unsqueeze(2) + wv * p.w_h
    h_new = torch.tanh(affine(base_h, h, p.rec_h))
    base_o = post_o.unsqueeze(1) + pre_o.unsqueeze(2) + wv * p.w_o
    o = torch.tanh(affine(base_o, h_new, p.rec_o))
    w_new = (w + learning_rate * o[..., s_dim]).clamp(-weight_limit, weight_limit)
    e = o[..., :s_dim].mean(dim=2)
    return e, w_new, h_new
