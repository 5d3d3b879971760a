#pragma once
// One step of a block of LANES individuals: observation, noise, actor, env step, reward and the learning rule
// (the mathematics of metarl/core/step.py and metarl/core/spec.py), for any rule declaration and environment:
// what the cells read, how the traces change and what the environment does is program.h, generated from their
// Python definitions (metarl/backends/codegen.py). Written here: the actor, the cells' products (each input block
// that belongs to a neuron multiplied once per neuron, not once per connection), the updates, the noise, the goal.

#include <array>
#include <type_traits>
#include <utility>

#include "interface.h"

namespace {

// Normal number `counter / 2` of the streams with keys `base`: Box-Muller on uniforms `counter` and
// `counter + 1` (metarl.core.rng.normal_at; `counter` is 2 n for number n).
inline vf vnormal(vu base, uint32_t counter) {
    vf u1 = vuniform(base, counter), u2 = vuniform(base, counter + 1);
    return vsqrt(-2.0f * vlog(u1)) * vcos((2.0f * PI) * u2);
}

// Where one individual-block's values live in the local buffer (offsets in vectors).
struct Layout {
    int layers;
    int sizes[MAX_LAYERS + 1];
    int genome, env_params, sign, goal, dt, learning_rate, state, prev_height;
    int weights[MAX_LAYERS], biases[MAX_LAYERS], sigmas[MAX_LAYERS];
    int sums[MAX_LAYERS], samples[MAX_LAYERS], outputs[MAX_LAYERS];
    int rule_reward, nodes[MAX_LAYERS], edges[MAX_LAYERS];
    int traces;  // the rule's traces (program.h N_TRACES)
    int total;
};

}  // namespace

#include "program.h"  // generated: the rule's inputs and traces, the environment (metarl/backends/codegen.py)

static_assert(N_SCALARS <= MAX_SCALARS, "too many runtime scalars");

namespace {

// Offsets of the genome parts of one cell (metarl/core/genome.py order).
struct Cell {
    int inputs, outputs;
    int w_state, b_state, w_output, b_output;
    explicit Cell(const CellMap& m)
        : inputs(m.inputs), outputs(m.outputs), w_state(m.w_state), b_state(m.b_state), w_output(m.w_output),
          b_output(m.b_output) {}
    // Whether the map has the shapes this build computes with (inputs, outputs; H from the build) and
    // fits in a genome of `genes` genes.
    bool fits(int i, int o, int genes) const {
        return inputs == i && outputs == o && w_state >= 0 && b_state - w_state >= 0 && w_output >= 0
               && b_output >= 0 && w_state + (i + H) * H <= genes && b_state + H <= genes
               && w_output + (i + H) * o <= genes && b_output + o <= genes;
    }
};

// Large states (H above this) read the cells' matrices row by row: acc[m] += x[q] W[q][m] for q outer, m
// inner. Each acc[m] takes the same terms in the same order (q ascending) as the column form small states
// use, so the numbers are the same bits; only the memory order differs (a column of an H x H matrix is H
// strided loads, one cache line each: the row form is 2.4x faster at S = H = 256, 3.4x at 1024, bench/kernel.py).
// METARL_ROWWISE_H: where the row form starts (tests/test_portable.py builds it for every size, 0, and
// compares the bits).
#ifndef METARL_ROWWISE_H
#define METARL_ROWWISE_H 64
#endif
constexpr bool ROWWISE = H > METARL_ROWWISE_H;

// acc[m] = fma(x[q], W[q * ld + m], acc[m]) for q = 0..rows-1 (in that order), m = 0..cols-1.
inline void accumulate_rows(vf* acc, const vf* x, const vf* W, int rows, int cols, int ld) {
    for (int q = 0; q < rows; ++q) {
        const vf xq = x[q];
        const vf* row = W + q * ld;
        for (int m = 0; m < cols; ++m) acc[m] = fma(xq, row[m], acc[m]);
    }
}

// A recurrent cell on one instance: h (H) updated in place, x (I) inputs, out (O) outputs.
// Sums start from the bias and add the inputs, then the state, in index order.
inline void cell(const vf* g, const Cell& c, vf* h, const vf* x, vf* out) {
    const vf* ws = g + c.w_state;
    const vf* bs = g + c.b_state;
    const vf* wo = g + c.w_output;
    const vf* bo = g + c.b_output;
    vf hn[HS];
    if constexpr (ROWWISE) {
        for (int m = 0; m < H; ++m) hn[m] = bs[m];
        accumulate_rows(hn, x, ws + H * H, c.inputs, H, H);
        accumulate_rows(hn, h, ws, H, H, H);
        for (int m = 0; m < H; ++m) h[m] = vtanh(hn[m]);
        for (int m = 0; m < c.outputs; ++m) out[m] = bo[m];
        accumulate_rows(out, x, wo + H * c.outputs, c.inputs, c.outputs, c.outputs);
        accumulate_rows(out, h, wo, H, c.outputs, c.outputs);
        for (int m = 0; m < c.outputs; ++m) out[m] = vtanh(out[m]);
        return;
    }
    for (int m = 0; m < H; ++m) {
        vf acc = bs[m];
        for (int f = 0; f < c.inputs; ++f) acc = fma(x[f], ws[(H + f) * H + m], acc);
        for (int q = 0; q < H; ++q) acc = fma(h[q], ws[q * H + m], acc);
        hn[m] = vtanh(acc);
    }
    for (int m = 0; m < H; ++m) h[m] = hn[m];
    for (int m = 0; m < c.outputs; ++m) {
        vf acc = bo[m];
        for (int f = 0; f < c.inputs; ++f) acc = fma(x[f], wo[(H + f) * c.outputs + m], acc);
        for (int q = 0; q < H; ++q) acc = fma(h[q], wo[q * c.outputs + m], acc);
        out[m] = vtanh(acc);
    }
}

// A view of part of a thread's one allocation (Scratch::arena).
struct Buf {
    vf* p = nullptr;
    size_t n = 0;
    vf* data() const { return p; }
    size_t size() const { return n; }
};

// A thread's buffers, all in one allocation so that where they lie relative to each other (and so which
// cache sets they share) is the same in every call: separate allocations made the speed vary by about 25%
// from one call to the next.
struct Scratch {
    std::vector<vf> arena;
    Buf local, post_h, post_o, pre_h, pre_o, csig, signal, next_signal, noise, obs;
    void allocate(size_t total, int max_n, int neurons) {
        const size_t n = (size_t)max_n;
        const std::pair<Buf*, size_t> parts[] = {
            {&post_h, n * HS}, {&pre_h, n * HS}, {&post_o, n * CONN_OUTPUTS}, {&pre_o, n * CONN_OUTPUTS},
            {&signal, n * S}, {&next_signal, n * S}, {&csig, n * S}, {&noise, (size_t)neurons},
            {&obs, (size_t)N_OBS}, {&local, total}};
        size_t all = 0;
        for (const auto& part : parts) all += part.second;
        arena.assign(all, vf{});
        vf* at = arena.data();
        for (const auto& [buf, size] : parts) {
            *buf = Buf{at, size};
            at += size;
        }
    }
};

struct Kernel {
    const Layout& L;
    const Options& o;
    Cell reward_cell, node_cell, edge_cell;

    Kernel(const Layout& layout, const Options& options, const GenomeMap& genome)
        : L(layout), o(options), reward_cell(genome.reward), node_cell(genome.node), edge_cell(genome.connection) {}

    // Whether the genome's cells have the shapes of program.h's rule.
    bool fits(int genes) const {
        return reward_cell.fits(REWARD_INPUTS, REWARD_OUTPUTS, genes) && node_cell.fits(NODE_INPUTS, NODE_OUTPUTS, genes)
               && edge_cell.fits(CONN_INPUTS, CONN_OUTPUTS, genes);
    }

    // The actor's forward pass on observation x (n_0) with standard-normal noise (neurons).
    void act(vf* v, const vf* x, const vf* noise) const {
        const vf* in = x;
        int start = 0;
        for (int k = 1; k <= L.layers; ++k) {
            const int i = k - 1, ni = L.sizes[k - 1], no = L.sizes[k];
            const vf* w = v + L.weights[i];
            const vf *b = v + L.biases[i], *sg = v + L.sigmas[i];
            vf *sum = v + L.sums[i], *smp = v + L.samples[i], *out = v + L.outputs[i];
            for (int j = 0; j < no; ++j) {
                vf s = b[j];
                for (int q = 0; q < ni; ++q) s = fma(in[q], w[q * no + j], s);
                vf z = fma(sg[j], noise[start + j], s);
                sum[j] = s;
                smp[j] = z;
                out[j] = vtanh(z);
            }
            in = out;
            start += no;
        }
    }

    // One step of a block: observe, act, step the env (program.h), apply the rule. Returns the reward. The rule
    // sees *seen instead of the reward when seen is not null.
    vf step(vf* v, vu noise_base, vu obs_base, uint32_t t, Scratch& sc, const vf* seen) const {
        const int layers = L.layers, neurons = (int)sc.noise.size();
        vf* st = v + L.state;
        vf* x = sc.obs.data();
        env_observe(v, L, st, o.scalars, x);
        // Sensor noise: obs_noise times normal number t * n_obs + i of the sensor-noise stream (metarl.core.step.observe).
        if (o.obs_noise > 0.0f) {
            for (int i = 0; i < N_OBS; ++i) {
                uint32_t c = 2u * (t * (uint32_t)N_OBS + (uint32_t)i);
                x[i] = x[i] + o.obs_noise * vnormal(obs_base, c);
            }
        }
        // Sampling noise: Box-Muller on counters 2c, 2c+1 of c = t * neurons + j (metarl.core.rng.normal_at).
        vf* noise = sc.noise.data();
        for (int j = 0; j < neurons; ++j) {
            if (!o.noise) { noise[j] = splat(0.0f); continue; }
            uint32_t c = 2u * (t * (uint32_t)neurons + (uint32_t)j);
            noise[j] = vnormal(noise_base, c);
        }
        act(v, x, noise);
        // The hidden goal's sign; from the switch on its second row, flipped in the lifetimes that reverse
        // (metarl/envs/base.py `goal_at`). A step drawn per lifetime (first <= step <= last) is the third row, as
        // step - first, compared lane by lane in between (exact in float32: last - first <= 2^24, the config's
        // bound).
        vf goal = v[L.goal];
        if (o.goal_switch >= 0 && (int64_t)t >= o.goal_switch) {
            goal = v[L.goal + 1];
            if ((int64_t)t < o.goal_switch_last)
                goal = splat((float)((int64_t)t - o.goal_switch)) >= v[L.goal + 2] ? v[L.goal + 1] : v[L.goal];
        }
        vf height, reward;
        env_transition(v, L, st, v[L.outputs[layers - 1]], v[L.prev_height], goal, t, o.scalars, &height, &reward);
        v[L.prev_height] = height;
        if (o.plastic) rule(v, x, o.zero_reward ? splat(0.0f) : (seen ? *seen : reward), t, sc);
        return reward;
    }

    void rule(vf* v, const vf* x, vf reward, uint32_t t, Scratch& sc) const {
        const int layers = L.layers;
        const int* n = L.sizes;
        const vf* g = v + L.genome;
        const vf lr = v[L.learning_rate];
        const float wl = o.weight_limit, sl = o.sigma_limit, smin = o.sigma_min;
        vf* e = sc.signal.data();  // e_k: (n_k, S)

        // Reward cell on each output neuron -> e_L.
        for (int j = 0; j < n[layers]; ++j) {
            vf in[REWARD_INPUTS > 0 ? REWARD_INPUTS : 1], out[REWARD_OUTPUTS];
            if (layers == 1) reward_inputs_first(v, L, layers, j, reward, nullptr, t, o.scalars, in);
            else reward_inputs_rest(v, L, layers, j, reward, nullptr, t, o.scalars, in);
            cell(g, reward_cell, v + L.rule_reward + j * H, in, out);
            for (int s = 0; s < S; ++s) e[j * S + s] = out[REWARD_SIGNAL + s];
        }

        for (int k = layers; k >= 1; --k) {
            const int i = k - 1, no = n[k];
            vf *b = v + L.biases[i], *sg = v + L.sigmas[i];
            // Node cell on each neuron of layer k: its signal c (for the connections into it), its updates.
            vf* csig = sc.csig.data();
            for (int j = 0; j < no; ++j) {
                vf in[NODE_INPUTS > 0 ? NODE_INPUTS : 1], out[NODE_OUTPUTS];
                if (k == 1) node_inputs_first(v, L, k, j, reward, e, t, o.scalars, in);
                else node_inputs_rest(v, L, k, j, reward, e, t, o.scalars, in);
                cell(g, node_cell, v + L.nodes[i] + j * H, in, out);
                if constexpr (NODE_BIAS >= 0) b[j] = clampv(fma(out[NODE_BIAS], lr, b[j]), -wl, wl);
                if constexpr (NODE_SIGMA >= 0) sg[j] = clampv(fma(out[NODE_SIGMA], lr, sg[j]), smin, sl);
                for (int s = 0; s < S; ++s) csig[j * S + s] = out[NODE_SIGNAL + s];
            }
            if (k == 1) edge_layer<Conn_first>(v, g, k, x, reward, t, sc);
            else edge_layer<Conn_rest>(v, g, k, x, reward, t, sc);
            std::swap(sc.signal, sc.next_signal);
            e = sc.signal.data();
        }
        // The traces, after the cells, from their values before the step (metarl/core/rule.py TRACES).
        if constexpr (N_TRACES > 0) {
            vf after[N_TRACES > 0 ? N_TRACES : 1];
            trace_updates(v, L, reward, t, o.scalars, after);
            for (int q = 0; q < N_TRACES; ++q) v[L.traces + q] = after[q];
        }
    }

    // The connection cell on every connection of layer k (C: program.h's inputs of the first layer, Conn_first,
    // or of the others, Conn_rest); writes e_{k-1} to sc.next_signal. Each sum starts from the bias, adds the
    // constant inputs' rows, the inputs of the post neuron and of the individual (C::POST, once per post neuron),
    // then those of the pre neuron (C::PRE, once per pre neuron), then the connection's own (C::EDGE), then the state.
    template <class C>
    void edge_layer(vf* v, const vf* g, int k, const vf* x, vf reward, uint32_t t, Scratch& sc) const {
        const int i0 = k - 1, ni = L.sizes[k - 1], no = L.sizes[k];
        constexpr int O = CONN_OUTPUTS;
        constexpr int NPOST = (int)C::POST.size(), NPRE = (int)C::PRE.size(), NEDGE = (int)C::EDGE.size();
        const Cell& c = edge_cell;
        const vf* ws = g + c.w_state;  // rows: H state rows, then one per input (declaration order)
        const vf* wo = g + c.w_output;
        const vf* bs = g + c.b_state;
        const vf* bo = g + c.b_output;
        auto ws_row = [&](int r) { return ws + (H + r) * H; };
        auto wo_row = [&](int r) { return wo + (H + r) * O; };
        const vf lr = v[L.learning_rate];
        const float wl = o.weight_limit;
        const vf* csig = sc.csig.data();

        // Per post neuron j: bias, constant rows, the post neuron's and the individual's inputs.
        vf* post_h = sc.post_h.data();
        vf* post_o = sc.post_o.data();
        for (int j = 0; j < no; ++j) {
            vf p[NPOST > 0 ? NPOST : 1];
            C::post(v, L, k, j, reward, x, csig, t, o.scalars, p);
            for (int m = 0; m < H; ++m) {
                vf acc = bs[m];
                for (int r : C::ONE) acc = acc + ws_row(r)[m];
                for (size_t q = 0; q < C::CONST.size(); ++q) acc = fma(splat(C::CONST_VALUE[q]), ws_row(C::CONST[q])[m], acc);
                for (int f = 0; f < NPOST; ++f) acc = fma(p[f], ws_row(C::POST[f])[m], acc);
                post_h[j * HS + m] = acc;
            }
            for (int m = 0; m < O; ++m) {
                vf acc = bo[m];
                for (int r : C::ONE) acc = acc + wo_row(r)[m];
                for (size_t q = 0; q < C::CONST.size(); ++q) acc = fma(splat(C::CONST_VALUE[q]), wo_row(C::CONST[q])[m], acc);
                for (int f = 0; f < NPOST; ++f) acc = fma(p[f], wo_row(C::POST[f])[m], acc);
                post_o[j * O + m] = acc;
            }
        }
        // Per pre neuron i: its inputs (the first a product, then fused multiply-adds).
        vf* pre_h = sc.pre_h.data();
        vf* pre_o = sc.pre_o.data();
        if constexpr (NPRE > 0) {
            for (int i = 0; i < ni; ++i) {
                vf q[NPRE];
                C::pre(v, L, k, i, reward, x, csig, t, o.scalars, q);
                for (int m = 0; m < H; ++m) {
                    vf acc = q[0] * ws_row(C::PRE[0])[m];
                    for (int f = 1; f < NPRE; ++f) acc = fma(q[f], ws_row(C::PRE[f])[m], acc);
                    pre_h[i * HS + m] = acc;
                }
                for (int m = 0; m < O; ++m) {
                    vf acc = q[0] * wo_row(C::PRE[0])[m];
                    for (int f = 1; f < NPRE; ++f) acc = fma(q[f], wo_row(C::PRE[f])[m], acc);
                    pre_o[i * O + m] = acc;
                }
            }
        }
        // The outputs a connection computes: all, or in the first layer all but the signal (e_0 feeds nothing).
        const bool signal_used = k > 1;
        constexpr int SIG0 = CONN_SIGNAL, SIG1 = CONN_SIGNAL + S;
        auto computed = [&](int m) { return signal_used || m < SIG0 || m >= SIG1; };
        // A contiguous range holding every computed output (row form of large states).
        const int lo = signal_used || SIG0 > 0 ? 0 : SIG1, hi = signal_used || SIG1 < O ? O : SIG0;
        // Per connection: its own inputs and the recurrent state.
        vf* w = v + L.weights[i0];
        vf* hs = v + L.edges[i0];
        vf* e_prev = sc.next_signal.data();
        for (int i = 0; i < ni; ++i) {
            vf e_acc[S] = {};
            // Four connections at a time, then two, then one (independent chains for the out-of-order core;
            // each connection's arithmetic, and the order of the sum into e_acc, are unchanged).
            auto connections = [&](auto width, int j0) {
                constexpr int NJ = decltype(width)::value;
                vf wij[NJ];
                vf ev[NJ][NEDGE > 0 ? NEDGE : 1];
                vf* h[NJ];
                vf hn[NJ][HS];
                for (int u = 0; u < NJ; ++u) {
                    wij[u] = w[i * no + j0 + u];
                    if constexpr (NEDGE > 0) C::edge(v, L, k, i, j0 + u, reward, x, csig, t, o.scalars, ev[u]);
                    h[u] = hs + (i * no + j0 + u) * H;
                }
                // The sum's start: post + pre, then the connection's inputs.
                auto start = [&](const vf* post, const vf* pre, int stride, int u, int m, auto row) {
                    vf acc = NPRE > 0 ? post[(j0 + u) * stride + m] + pre[i * stride + m] : post[(j0 + u) * stride + m];
                    for (int f = 0; f < NEDGE; ++f) acc = fma(ev[u][f], row(C::EDGE[f])[m], acc);
                    return acc;
                };
                vf acc_o[ROWWISE ? O : 1];  // the output sums of one connection (large states only)
                if constexpr (ROWWISE) {  // NJ == 1 (see below): the same sums, read row by row
                    for (int m = 0; m < H; ++m) hn[0][m] = start(post_h, pre_h, HS, 0, m, ws_row);
                    accumulate_rows(hn[0], h[0], ws, H, H, H);
                    for (int m = 0; m < H; ++m) h[0][m] = hn[0][m] = vtanh(hn[0][m]);
                    for (int m = lo; m < hi; ++m) acc_o[m] = start(post_o, pre_o, O, 0, m, wo_row);
                    accumulate_rows(acc_o + lo, hn[0], wo + lo, H, hi - lo, O);
                } else {
                    for (int m = 0; m < H; ++m) {
                        vf acc[NJ];
                        for (int u = 0; u < NJ; ++u) acc[u] = start(post_h, pre_h, HS, u, m, ws_row);
                        for (int q = 0; q < H; ++q)
                            for (int u = 0; u < NJ; ++u) acc[u] = fma(h[u][q], ws[q * H + m], acc[u]);
                        for (int u = 0; u < NJ; ++u) hn[u][m] = vtanh(acc[u]);
                    }
                    for (int u = 0; u < NJ; ++u)
                        for (int m = 0; m < H; ++m) h[u][m] = hn[u][m];
                }
                for (int m = 0; m < O; ++m) {
                    if (!computed(m)) continue;
                    vf acc[NJ];
                    if constexpr (ROWWISE) {
                        acc[0] = acc_o[m];
                    } else {
                        for (int u = 0; u < NJ; ++u) acc[u] = start(post_o, pre_o, O, u, m, wo_row);
                        for (int q = 0; q < H; ++q)
                            for (int u = 0; u < NJ; ++u) acc[u] = fma(hn[u][q], wo[q * O + m], acc[u]);
                    }
                    for (int u = 0; u < NJ; ++u) {
                        vf out = vtanh(acc[u]);
                        if (m == CONN_WEIGHT) {
                            w[i * no + j0 + u] = clampv(fma(out, lr, wij[u]), -wl, wl);
                        } else if (m >= SIG0 && m < SIG1) {
                            e_acc[m - SIG0] = j0 + u == 0 ? out : e_acc[m - SIG0] + out;
                        }
                    }
                }
            };
            int j = 0;
            // Large states run one at a time: the block's states live on the stack (4 x H vectors).
            if constexpr (!ROWWISE) {
                for (; j + 4 <= no; j += 4) connections(std::integral_constant<int, 4>{}, j);
                for (; j + 2 <= no; j += 2) connections(std::integral_constant<int, 2>{}, j);
            }
            for (; j < no; ++j) connections(std::integral_constant<int, 1>{}, j);
            if (signal_used)
                for (int s = 0; s < S; ++s) e_prev[i * S + s] = e_acc[s] / (float)no;
        }
    }
};

}  // namespace
