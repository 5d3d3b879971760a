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
the recurrent state and the weight are multiplied per connection. `metarl.reference`
holds the plain formulation this one is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .actor import ActorState
from .genome import NODE_INFO, GenomeLayout


@dataclass
class CellParams:
    """Parameters of one cell for a population, split by input block."""

    state_h: torch.Tensor  # (P, H, H)   rows of w_state acting on the state
    state_x: torch.Tensor  # (P, I, H)   rows of w_state acting on the input
    state_b: torch.Tensor  # (P, 1, H)
    out_h: torch.Tensor  # (P, H, O)
    out_x: torch.Tensor  # (P, I, O)
    out_b: torch.Tensor  # (P, 1, O)


@dataclass
class RuleParams:
    """The three cells of a population's genomes, ready for the fast rule step."""

    reward: CellParams
    node: CellParams
    edge: CellParams
    signal_dim: int
    state_dim: int


def rule_params(genome: torch.Tensor, layout: GenomeLayout) -> RuleParams:
    """Split ``genome (P, G)`` into per-block cell parameters (contiguous copies)."""
    h = layout.state_dim

    def cell(name: str) -> CellParams:
        ws = layout.view(genome, name, "w_state")
        wo = layout.view(genome, name, "w_output")
        return CellParams(ws[:, :h].contiguous(), ws[:, h:].contiguous(),
                          layout.view(genome, name, "b_state").unsqueeze(1).contiguous(),
                          wo[:, :h].contiguous(), wo[:, h:].contiguous(),
                          layout.view(genome, name, "b_output").unsqueeze(1).contiguous())

    return RuleParams(cell("reward_network"), cell("node_network"), cell("connection_network"),
                      layout.signal_dim, layout.state_dim)


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


def apply_cell(p: CellParams, h: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One cell on every instance: ``h (P, N, H)``, ``x (P, N, I)`` -> ``(h', out (P, N, O))``."""
    h = torch.tanh(torch.baddbmm(torch.baddbmm(p.state_b, x, p.state_x), h, p.state_h))
    out = torch.tanh(torch.baddbmm(torch.baddbmm(p.out_b, x, p.out_x), h, p.out_h))
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

    ep = params.edge
    for k in range(layers, 0, -1):
        i = k - 1
        info = actor.node_info(k)
        nodes[i], node_out = apply_cell(params.node, nodes[i], torch.cat((info, e), dim=2))
        c = node_out[:, :, :s_dim]
        biases[i] = (biases[i] + learning_rate * node_out[:, :, s_dim]).clamp(-weight_limit, weight_limit)
        sigmas[i] = (sigmas[i] + learning_rate * node_out[:, :, s_dim + 1]).clamp(0.0, sigma_limit)
        post = torch.cat((info[:, :, :3], biases[i].unsqueeze(2), sigmas[i].unsqueeze(2), c), dim=2)
        e, weights[i], edges[i] = _edge_layer(ep, edges[i], weights[i], post,
                                               actor.node_info(k - 1) if k > 1 else x, first=k == 1,
                                               s_dim=s_dim, learning_rate=learning_rate,
                                               weight_limit=weight_limit)

    return (RuleState(reward_h, nodes, edges),
            ActorState(weights, biases, sigmas, actor.sums, actor.samples, actor.outputs))


def _edge_layer(p: CellParams, h: torch.Tensor, w: torch.Tensor, post: torch.Tensor, pre: torch.Tensor,
                *, first: bool, s_dim: int, learning_rate: float, weight_limit: float
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edge cell on every connection of one layer.

    ``h (P, n_in, n_out, H)``, ``w (P, n_in, n_out)``, ``post (P, n_out, 5+S)`` = post node
    info (updated b, sigma) and ``c``; ``pre`` = ``(P, n_in, 5)`` node info, or the
    observation ``(P, n_0)`` for the first layer. Returns ``(e_prev (P, n_in, S), w', h')``.
    """
    pop, n_in, n_out, hdim = h.shape
    n = NODE_INFO
    # Input rows: post info [0:5], pre info [5:10], c [10:10+S], w [10+S], flag [11+S].
    post_rows = torch.cat((p.state_x[:, :n], p.state_x[:, 2 * n:2 * n + s_dim]), dim=1)
    post_rows_o = torch.cat((p.out_x[:, :n], p.out_x[:, 2 * n:2 * n + s_dim]), dim=1)
    w_row, w_row_o = p.state_x[:, 2 * n + s_dim], p.out_x[:, 2 * n + s_dim]
    if first:
        # info_pre = [0, 0, x_i, 0, 0] and flag = 1.
        pre_h = pre.unsqueeze(2) * p.state_x[:, n + 2].unsqueeze(1)
        pre_o = pre.unsqueeze(2) * p.out_x[:, n + 2].unsqueeze(1)
        const_h = p.state_b + p.state_x[:, 2 * n + s_dim + 1].unsqueeze(1)
        const_o = p.out_b + p.out_x[:, 2 * n + s_dim + 1].unsqueeze(1)
    else:
        pre_h = torch.bmm(pre, p.state_x[:, n:2 * n])
        pre_o = torch.bmm(pre, p.out_x[:, n:2 * n])
        const_h, const_o = p.state_b, p.out_b
    post_h = torch.baddbmm(const_h, post, post_rows)  # (P, n_out, H)
    post_o = torch.baddbmm(const_o, post, post_rows_o)  # (P, n_out, O)

    wv = w.unsqueeze(3)
    a = torch.bmm(h.reshape(pop, n_in * n_out, hdim), p.state_h).reshape(pop, n_in, n_out, hdim)
    a = a + post_h.unsqueeze(1) + pre_h.unsqueeze(2) + wv * w_row[:, None, None, :]
    h_new = torch.tanh(a)
    o = torch.bmm(h_new.reshape(pop, n_in * n_out, hdim), p.out_h).reshape(pop, n_in, n_out, -1)
    o = torch.tanh(o + post_o.unsqueeze(1) + pre_o.unsqueeze(2) + wv * w_row_o[:, None, None, :])
    w_new = (w + learning_rate * o[..., s_dim]).clamp(-weight_limit, weight_limit)
    return o[..., :s_dim].mean(dim=2), w_new, h_new
