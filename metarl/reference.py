"""The learning rule, written plainly: the single Python definition of the rule (the spec).

Every cell instance gets its whole input vector concatenated explicitly and each cell is
one batched einsum over ``[h, x]``, as in the original research code. Slow and obviously
correct. It is the ``spec`` backend (`metarl.backends`) and the oracle of the others: they
are checked against it at start-up (`metarl.lifetime.self_check`) and in the tests, and
``bench/throughput.py --reference`` times it. To change the rule, change it here first
(docs/architecture.md).
"""

from __future__ import annotations

import torch

from .actor import ActorState
from .genome import GenomeLayout
from .rule import RuleState


def _cell(genome: torch.Tensor, layout: GenomeLayout, name: str, h: torch.Tensor, x: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``h (P, N, H)``, ``x (P, N, I)`` -> ``(h', out)`` with SPEC's equations, literally."""
    w_state = layout.view(genome, name, "w_state")
    b_state = layout.view(genome, name, "b_state")
    w_output = layout.view(genome, name, "w_output")
    b_output = layout.view(genome, name, "b_output")
    h_new = torch.tanh(torch.einsum("pni,pio->pno", torch.cat((h, x), dim=2), w_state) + b_state[:, None, :])
    out = torch.tanh(torch.einsum("pni,pio->pno", torch.cat((h_new, x), dim=2), w_output)
                     + b_output[:, None, :])
    return h_new, out


def reference_rule_step(genome: torch.Tensor, layout: GenomeLayout, rstate: RuleState, actor: ActorState,
                        x: torch.Tensor, reward: torch.Tensor, *, learning_rate: float | torch.Tensor,
                        weight_limit: float, sigma_limit: float) -> tuple[RuleState, ActorState]:
    """One application of the rule, written the straightforward way. Inputs are not modified.
    ``learning_rate``: a float, or ``(P,)`` (one per individual)."""
    s_dim = layout.signal_dim
    rstate, actor = rstate.clone(), actor.clone()
    layers = len(actor.weights)
    pop = x.shape[0]
    # Per neuron (P, n) and per connection (P, n_in, n_out).
    node_rate = learning_rate if isinstance(learning_rate, float) else learning_rate[:, None]
    edge_rate = learning_rate if isinstance(learning_rate, float) else learning_rate[:, None, None]

    def info(k: int) -> torch.Tensor:
        i = k - 1
        return torch.stack((actor.sums[i], actor.samples[i], actor.outputs[i], actor.biases[i],
                            actor.sigmas[i]), dim=2)

    n_out = actor.biases[-1].shape[1]
    r = reward.reshape(pop, 1, 1).expand(pop, n_out, 1)
    rstate.reward, e = _cell(genome, layout, "reward_network", rstate.reward, torch.cat((r, info(layers)), 2))

    for k in range(layers, 0, -1):
        i = k - 1
        rstate.nodes[i], out = _cell(genome, layout, "node_network", rstate.nodes[i],
                                     torch.cat((info(k), e), dim=2))
        c, db, dsigma = out[:, :, :s_dim], out[:, :, s_dim], out[:, :, s_dim + 1]
        actor.biases[i] = (actor.biases[i] + node_rate * db).clamp(-weight_limit, weight_limit)
        actor.sigmas[i] = (actor.sigmas[i] + node_rate * dsigma).clamp(0.0, sigma_limit)

        w = actor.weights[i]
        _, n_in, n_post = w.shape
        post = info(k)  # now holds the updated bias and sigma
        if k == 1:
            zeros = torch.zeros_like(x)
            pre = torch.stack((zeros, zeros, x, zeros, zeros), dim=2)
            flag = 1.0
        else:
            pre = info(k - 1)
            flag = 0.0
        edge_in = torch.cat((
            post.unsqueeze(1).expand(pop, n_in, n_post, 5),
            pre.unsqueeze(2).expand(pop, n_in, n_post, 5),
            c.unsqueeze(1).expand(pop, n_in, n_post, s_dim),
            w.unsqueeze(3),
            torch.full((pop, n_in, n_post, 1), flag, dtype=w.dtype, device=w.device),
        ), dim=3).reshape(pop, n_in * n_post, -1)
        h = rstate.edges[i].reshape(pop, n_in * n_post, -1)
        h_new, out = _cell(genome, layout, "connection_network", h, edge_in)
        rstate.edges[i] = h_new.reshape(pop, n_in, n_post, -1)
        out = out.reshape(pop, n_in, n_post, s_dim + 1)
        actor.weights[i] = (w + edge_rate * out[..., s_dim]).clamp(-weight_limit, weight_limit)
        e = out[..., :s_dim].mean(dim=2)

    return rstate, actor
