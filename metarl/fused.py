"""The lifetime step in feature-major layout, written for `torch.compile` on CPU.

Same mathematics as `metarl.actor.forward` + `metarl.reference` (the spec), but every tensor
carries the population as its *last* dimension (``weights (n_in, n_out, P)``, edge
states ``(n_in, n_out, H, P)``) and every small product is an unrolled sum of broadcast
multiplies. Inductor then fuses the whole step into a few loops that run across
individuals with full SIMD vectors, instead of a batch of ``P`` tiny matrix products.
Additions run in a fixed order written here, so an individual's arithmetic does not
depend on the other individuals in its batch.

Shapes below omit the trailing ``P``. `metarl.lifetime` converts to and from the
population-first layout of `ActorState` / `RuleState`. This is the ``compiled`` backend
(`metarl.backends`): the torch path for CUDA, not yet measured on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from .actor import ActorState
from .rule import CellParams, EdgeParams, RuleParams, RuleState

TensorFn = Callable[[torch.Tensor], torch.Tensor]


def feature_major(t: torch.Tensor) -> torch.Tensor:
    """``(P, ...)`` -> a contiguous copy ``(..., P)`` (with canonical strides, which compiled code guards on)."""
    return t.movedim(0, -1).clone(memory_format=torch.contiguous_format)


def population_major(t: torch.Tensor) -> torch.Tensor:
    """``(..., P)`` -> a ``(P, ...)`` view."""
    return t.movedim(-1, 0)


@dataclass
class FusedActor:
    """`ActorState` with the population last: weights ``(n_in, n_out)``, the rest ``(n,)``."""

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    sigmas: list[torch.Tensor]
    sums: list[torch.Tensor]
    samples: list[torch.Tensor]
    outputs: list[torch.Tensor]

    @classmethod
    def of(cls, actor: ActorState | FusedActor, convert: TensorFn = feature_major) -> FusedActor:
        """``actor`` with ``convert`` applied to every tensor (default: to feature-major)."""
        return cls(*([convert(t) for t in getattr(actor, name)] for name in _ACTOR_FIELDS))

    def view(self) -> ActorState:
        """Population-first views ``(P, ...)``."""
        return ActorState(*([population_major(t) for t in getattr(self, name)] for name in _ACTOR_FIELDS))


# The field names, as a constant: `dataclasses.fields` of a class inside the compiled step is a graph break
# for torch.compile (the step then runs as two graphs with Python between them).
_ACTOR_FIELDS = tuple(f.name for f in fields(FusedActor))
assert _ACTOR_FIELDS == tuple(f.name for f in fields(ActorState))


def map_params(params: RuleParams, fn: TensorFn) -> RuleParams:
    """``params`` with ``fn`` applied to every tensor."""
    def each(obj: CellParams | EdgeParams) -> CellParams | EdgeParams:
        return type(obj)(**{f.name: fn(getattr(obj, f.name)) for f in fields(obj)})

    return RuleParams(each(params.reward), each(params.node), each(params.edge), params.signal_dim,
                      params.state_dim)


def map_rule_state(rstate: RuleState, fn: TensorFn) -> RuleState:
    """``rstate`` with ``fn`` applied to every tensor."""
    return RuleState(fn(rstate.reward), [fn(t) for t in rstate.nodes], [fn(t) for t in rstate.edges])


def lin(bias: torch.Tensor | None, feats: list[torch.Tensor], w: torch.Tensor) -> torch.Tensor:
    """``bias + sum_i feats[i] * w[i]``, added in index order. ``w (I, O)``, ``feats[i] (..., 1)``."""
    out = bias
    for i, f in enumerate(feats):
        term = f * w[i]
        out = term if out is None else out + term
    if out is None:  # no inputs at all (state size 0)
        raise ValueError("lin needs a bias or at least one input")
    return out


# Rational approximation of tanh (Eigen's ``generic_fast_tanh_float``): within ~5 ulp of
# torch.tanh, and 4x cheaper than the Sleef tanh inductor calls, which was a third of a step.
_TANH_CLAMP = 7.90531110763549805
_TANH_P = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
           -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16)
_TANH_Q = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh to within a few ulp, as a polynomial ratio that compiles to plain vector arithmetic."""
    c = x.clamp(-_TANH_CLAMP, _TANH_CLAMP)
    x2 = c * c
    p = x2 * _TANH_P[6] + _TANH_P[5]
    for k in _TANH_P[4::-1]:
        p = p * x2 + k
    q = x2 * _TANH_Q[3] + _TANH_Q[2]
    for k in _TANH_Q[1::-1]:
        q = q * x2 + k
    # Beyond the clamp the ratio gives 0.99999973; float32 tanh is exactly +-1 there.
    return torch.where(x.abs() < _TANH_CLAMP, c * p / q, torch.sign(x))


def _split(t: torch.Tensor, dim: int) -> list[torch.Tensor]:
    """Features of ``t`` along ``dim``, each keeping a size-1 ``dim`` for broadcasting."""
    return [t.narrow(dim, k, 1) for k in range(t.shape[dim])]


def cell(p: CellParams, h: torch.Tensor, x: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One cell on ``N`` instances: ``h (N, H)``, ``x`` = I features ``(N, 1)`` -> ``(h' (N, H), out (N, O))``."""
    h = tanh(lin(lin(p.state_b[0], x, p.state_x), _split(h, 1), p.state_h))
    out = tanh(lin(lin(p.out_b[0], x, p.out_x), _split(h, 1), p.out_h))
    return h, out


def forward(actor: FusedActor, x: torch.Tensor, noise: torch.Tensor) -> FusedActor:
    """`metarl.actor.forward`: ``x (n_0,)``, ``noise (sum n_k,)``."""
    sums, samples, outputs = [], [], []
    start = 0
    for w, b, sigma in zip(actor.weights, actor.biases, actor.sigmas, strict=True):
        n = w.shape[1]
        s = lin(b, _split(x, 0), w)
        z = s + sigma * noise[start:start + n]
        x = tanh(z)
        sums.append(s)
        samples.append(z)
        outputs.append(x)
        start += n
    return FusedActor(actor.weights, actor.biases, actor.sigmas, sums, samples, outputs)


def rule_step(params: RuleParams, rstate: RuleState, actor: FusedActor, x: torch.Tensor, reward: torch.Tensor, *,
              learning_rate: float | torch.Tensor, weight_limit: float, sigma_limit: float
              ) -> tuple[RuleState, FusedActor]:
    """`metarl.reference.reference_rule_step`: ``x (n_0,)``, ``reward ()`` (both with the trailing P);
    ``learning_rate`` a float or ``(P,)``."""
    s_dim = params.signal_dim
    layers = len(actor.weights)
    weights, biases, sigmas = list(actor.weights), list(actor.biases), list(actor.sigmas)
    nodes, edges = list(rstate.nodes), list(rstate.edges)

    def info(k: int) -> list[torch.Tensor]:
        """Node info features of layer k, each ``(n_k, 1)``."""
        i = k - 1
        return [t[i].unsqueeze(1) for t in (actor.sums, actor.samples, actor.outputs, biases, sigmas)]

    n_out = biases[-1].shape[0]
    r = reward.expand(n_out, 1, reward.shape[-1])
    reward_h, e = cell(params.reward, rstate.reward, [r, *info(layers)])

    for k in range(layers, 0, -1):
        i = k - 1
        before = info(k)
        nodes[i], node_out = cell(params.node, nodes[i], before + _split(e, 1))
        biases[i] = (biases[i] + learning_rate * node_out[:, s_dim]).clamp(-weight_limit, weight_limit)
        sigmas[i] = (sigmas[i] + learning_rate * node_out[:, s_dim + 1]).clamp(0.0, sigma_limit)
        post = before[:3] + [biases[i].unsqueeze(1), sigmas[i].unsqueeze(1)] + _split(node_out[:, :s_dim], 1)
        pre = info(k - 1) if k > 1 else None
        e, weights[i], edges[i] = _edge_layer(params.edge, edges[i], weights[i], post, pre, x, s_dim=s_dim,
                                               learning_rate=learning_rate, weight_limit=weight_limit)

    return (RuleState(reward_h, nodes, edges),
            FusedActor(weights, biases, sigmas, actor.sums, actor.samples, actor.outputs))


def _edge_layer(p: EdgeParams, h: torch.Tensor, w: torch.Tensor, post: list[torch.Tensor],
                pre: list[torch.Tensor] | None, x: torch.Tensor, *, s_dim: int, learning_rate: float | torch.Tensor,
                weight_limit: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edge cell on every connection: ``h (n_in, n_out, H)``, ``w (n_in, n_out)``, ``post`` = 5+S
    features ``(n_out, 1)``, ``pre`` = 5 features ``(n_in, 1)`` or None for the first layer
    (then ``x (n_in,)`` is the observation). Returns ``(e_prev (n_in, S), w', h')``."""
    if pre is None:
        pre_h = x.unsqueeze(1) * p.obs_h[0]
        pre_o = x.unsqueeze(1) * p.obs_o[0]
        b_h, b_o = p.first_b_h[0], p.first_b_o[0]
    else:
        pre_h = lin(None, pre, p.pre_h)
        pre_o = lin(None, pre, p.pre_o)
        b_h, b_o = p.b_h[0], p.b_o[0]
    post_h = lin(b_h, post, p.post_h)  # (n_out, H)
    post_o = lin(b_o, post, p.post_o)  # (n_out, O)

    wv = w.unsqueeze(2)
    base_h = post_h.unsqueeze(0) + pre_h.unsqueeze(1) + wv * p.w_h[0, 0]
    h_new = tanh(lin(base_h, _split(h, 2), p.rec_h))
    base_o = post_o.unsqueeze(0) + pre_o.unsqueeze(1) + wv * p.w_o[0, 0]
    o = tanh(lin(base_o, _split(h_new, 2), p.rec_o))
    w_new = (w + learning_rate * o[:, :, s_dim]).clamp(-weight_limit, weight_limit)
    parts = o[:, :, :s_dim].unbind(1)
    e = parts[0]
    for part in parts[1:]:
        e = e + part
    return e / w.shape[1], w_new, h_new
