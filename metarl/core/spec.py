"""The learning rule, written plainly: the single Python definition of the rule (the spec).

Every cell instance gets its whole input vector concatenated explicitly, from the sources its
declaration names (`metarl.core.rule.RuleDeclaration`, looked up in `metarl.core.rule.SOURCES`), and
each cell is one batched einsum over ``[h, x]``, as in the original research code. Slow and
obviously correct. It is the ``spec`` backend (`metarl.backends`), the step the ``compiled``
backend compiles, and the oracle of the native kernel: every backend is checked against it at
start-up (`metarl.backends.lifetime.self_check`) and in the tests. To change the rule, change its
declaration (docs/extending.md).
"""

from __future__ import annotations

import torch

from .actor import ActorState
from .genome import GenomeLayout
from .rule import REWARD_MEAN_TIME, SOURCES, TRACES, RuleState, Site


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


def cell_input(layout: GenomeLayout, site: Site) -> torch.Tensor:
    """The input ``(P, N, I)`` of every instance of ``site.cell``: its declared sources, concatenated in order
    (``N``: the instances, flattened)."""
    parts = []
    for block in layout.rule.cell(site.cell).inputs:
        value = SOURCES[block.source].fn(site)
        want = (value.shape[0], *site.instances, block.size(layout.signal_dim))
        if tuple(value.shape) != want:
            raise ValueError(f"{site.cell} input {block.name}: the source {block.source} gave shape "
                             f"{tuple(value.shape)}, expected {want}")
        parts.append(value.reshape(value.shape[0], -1, value.shape[-1]))
    return torch.cat(parts, dim=2)


def reference_rule_step(genome: torch.Tensor, layout: GenomeLayout, rstate: RuleState, actor: ActorState,
                        x: torch.Tensor, reward: torch.Tensor, *, learning_rate: float | torch.Tensor,
                        weight_limit: float, sigma_limit: float, t: torch.Tensor | None = None,
                        lifetime_steps: int | None = None, sigma_min: float = 0.0,
                        dt: float | torch.Tensor | None = None, reward_mean_time: float = REWARD_MEAN_TIME
                        ) -> tuple[RuleState, ActorState]:
    """One application of the rule, written the straightforward way. Inputs are not modified.

    ``learning_rate``: a float, or ``(P,)`` (one per individual). ``t`` (the step number, 0-d),
    ``lifetime_steps`` and ``dt`` (the env's time step: a float or ``(P,)``) are what sources such as
    ``lifetime_fraction`` and traces such as ``reward.mean`` read (with ``reward_mean_time``, its time constant in
    seconds); every sigma stays in ``[sigma_min,
    sigma_limit]``. After the cells, each of the rule's traces is updated (`metarl.core.rule.TRACES`)."""
    s_dim = layout.signal_dim
    rstate, actor = rstate.clone(), actor.clone()
    layers = len(actor.weights)
    pop = x.shape[0]
    cells = {c.name: c.output_slices(s_dim) for c in layout.rule.cells}
    # The rate per neuron (P, n) and per connection (P, n_in, n_out).
    node_rate = learning_rate if isinstance(learning_rate, float) else learning_rate[:, None]
    edge_rate = learning_rate if isinstance(learning_rate, float) else learning_rate[:, None, None]

    traces = dict(rstate.traces)  # as they were before the step: what every source of this step reads

    def site(cell: str, k: int, signal: torch.Tensor | None) -> Site:
        return Site(cell, k, actor, x, reward, signal, t, lifetime_steps, traces, dt, reward_mean_time)

    rstate.reward, out = _cell(genome, layout, "reward_network", rstate.reward,
                               cell_input(layout, site("reward_network", layers, None)))
    e = out[:, :, cells["reward_network"]["signal"]]

    for k in range(layers, 0, -1):
        i = k - 1
        node = cells["node_network"]
        rstate.nodes[i], out = _cell(genome, layout, "node_network", rstate.nodes[i],
                                     cell_input(layout, site("node_network", k, e)))
        c = out[:, :, node["signal"]]
        if "bias" in node:
            actor.biases[i] = (actor.biases[i] + node_rate * out[:, :, node["bias"].start]
                               ).clamp(-weight_limit, weight_limit)
        if "sigma" in node:
            actor.sigmas[i] = (actor.sigmas[i] + node_rate * out[:, :, node["sigma"].start]
                               ).clamp(sigma_min, sigma_limit)

        w = actor.weights[i]
        _, n_in, n_post = w.shape
        edge_in = cell_input(layout, site("connection_network", k, c))  # sees the updated bias and sigma
        h = rstate.edges[i].reshape(pop, n_in * n_post, -1)
        h_new, out = _cell(genome, layout, "connection_network", h, edge_in)
        rstate.edges[i] = h_new.reshape(pop, n_in, n_post, -1)
        out = out.reshape(pop, n_in, n_post, -1)
        edge = cells["connection_network"]
        if "weight" in edge:
            actor.weights[i] = (w + edge_rate * out[..., edge["weight"].start]).clamp(-weight_limit, weight_limit)
        e = out[..., edge["signal"]].mean(dim=2)

    if traces:
        at = site("reward_network", layers, None)
        for name in layout.rule.traces:
            rstate.traces[name] = TRACES[name].update(traces[name], at)
    return rstate, actor
