#pragma once
// One step of a block of LANES individuals: observation, noise, actor, env step, reward and the
// learning rule (the mathematics of metarl/core/spec.py, the standard declaration of metarl/core/rule.py, with
// the cells' input blocks that belong to a neuron multiplied once per neuron), and the standard declaration with
// the input reward.change in the reward and the connection cell (Options::reward_change).

#include <type_traits>
#include <utility>

#include "physics.h"

namespace {

// Normal number `counter / 2` of the streams with keys `base`: Box-Muller on uniforms `counter` and
// `counter + 1` (metarl.core.rng.normal_at; `counter` is 2 n for number n).
inline vf vnormal(vu base, uint32_t counter) {
    vf u1 = vuniform(base, counter), u2 = vuniform(base, counter + 1);
    return vsqrt(-2.0f * vlog(u1)) * vcos((2.0f * PI) * u2);
}

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

// Where one individual-block's values live in the local buffer (offsets in vectors).
struct Layout {
    int layers;
    int sizes[MAX_LAYERS + 1];
    int genome, env_params, sign, goal, dt, learning_rate, state, prev_height;
    int weights[MAX_LAYERS], biases[MAX_LAYERS], sigmas[MAX_LAYERS];
    int sums[MAX_LAYERS], samples[MAX_LAYERS], outputs[MAX_LAYERS];
    int rule_reward, nodes[MAX_LAYERS], edges[MAX_LAYERS];
    int reward_mean;  // trace reward.mean (Options::reward_change)
    int total;
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
    Buf local, post_h, post_o, pre_h, pre_o, post_features, signal, next_signal, noise, obs;
    void allocate(size_t total, int max_n, int neurons, int links) {
        const size_t n = (size_t)max_n;
        const std::pair<Buf*, size_t> parts[] = {
            {&post_h, n * HS}, {&pre_h, n * HS}, {&post_o, n * (S + 1)}, {&pre_o, n * (S + 1)}, {&signal, n * S},
            {&next_signal, n * S}, {&post_features, n * (NODE_INFO + S)}, {&noise, (size_t)neurons},
            {&obs, (size_t)(3 * links)}, {&local, total}};
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

    int links;  // of the env (o.env, checked by the driver)

    Kernel(const Layout& layout, const Options& options, const GenomeMap& genome)
        : L(layout), o(options), reward_cell(genome.reward), node_cell(genome.node),
          edge_cell(genome.connection), links(ENVS[options.env].links) {}

    bool fits(int genes) const {
        const int change = o.reward_change ? 1 : 0;  // reward.change: one more input of the reward and edge cells
        return reward_cell.fits(1 + NODE_INFO + change, S, genes) && node_cell.fits(NODE_INFO + S, S + 2, genes)
               && edge_cell.fits(2 * NODE_INFO + S + 2 + change, S + 1, genes);
    }

    // Node info feature f of neuron j of layer k (1-based): s, z, y, b, sigma.
    static vf* info(vf* v, const Layout& L, int k, int f) {
        const int i = k - 1;
        const int off[NODE_INFO] = {L.sums[i], L.samples[i], L.outputs[i], L.biases[i], L.sigmas[i]};
        return v + off[f];
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

    // One step of a block: act, step the env, apply the rule. Returns the reward. The rule sees
    // *seen instead of the reward when seen is not null.
    vf step(vf* v, vu noise_base, vu obs_base, uint32_t t, Scratch& sc, const vf* seen) const {
        const int layers = L.layers, neurons = (int)sc.noise.size();

        // Observation [sin, cos, omega] per link.
        vf* st = v + L.state;
        vf* x = sc.obs.data();
        for (int i = 0; i < links; ++i) {
            vsincos(st[2 * i], &x[3 * i], &x[3 * i + 1]);
            x[3 * i + 2] = st[2 * i + 1];
        }
        // Sensor noise: obs_noise times normal number t * n_obs + i of the sensor-noise stream (metarl.core.step.observe).
        if (o.obs_noise > 0.0f) {
            const int n_obs = 3 * links;
            for (int i = 0; i < n_obs; ++i) {
                uint32_t c = 2u * (t * (uint32_t)n_obs + (uint32_t)i);
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
        // Environment.
        vf action = v[L.outputs[layers - 1]];
        vf torque = clampv(action, -1.0f, 1.0f) * (o.max_torque * v[L.sign]);
        // `gym`: -(angle from upright^2 + 0.1 omega^2) per link - 0.001 torque^2 of the state the step starts
        // from, as Gymnasium's Pendulum-v1 scores it (metarl/envs/base.py `reward`).
        vf gym_reward = splat(0.0f);
        if (o.gym) {
            gym_reward = -(GYM_TORQUE_COST * torque * torque);
            for (int i = 0; i < links; ++i) {
                vf up = vwrap(st[2 * i] - PI);  // angle from upright
                gym_reward -= up * up + GYM_SPEED_COST * st[2 * i + 1] * st[2 * i + 1];
            }
        }
        Physics phys{v + L.env_params, o.env};
        phys.advance(st, torque, v[L.dt], o);
        vf height = splat(0.0f);
        for (int i = 0; i < links; ++i) height += 1.0f - vcos(st[2 * i]);
        vf reward = height;
        if (o.spin) {
            reward = st[1];  // angular speed of the first link
        } else if (o.gym) {
            reward = gym_reward;
        } else if (o.reward_delta) {
            vf prev = v[L.prev_height];
            vf delta = height - prev;
            reward = delta < 0.0f ? DOWN_PENALTY * delta : delta;
            reward = prev == prev ? reward : splat(0.0f);  // NaN: no previous height
        }
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
        reward = reward * goal;
        v[L.prev_height] = height;
        if (o.plastic) rule(v, x, o.zero_reward ? splat(0.0f) : (seen ? *seen : reward), sc);
        return reward;
    }

    void rule(vf* v, const vf* x, vf reward, Scratch& sc) const {
        const int layers = L.layers;
        const int* n = L.sizes;
        const vf* g = v + L.genome;
        const vf lr = v[L.learning_rate];
        const float wl = o.weight_limit, sl = o.sigma_limit, smin = o.sigma_min;
        vf* e = sc.signal.data();  // e_k: (n_k, S)
        // reward.change: the reward minus trace reward.mean as it was before this step (metarl/core/rule.py).
        const vf change = o.reward_change ? reward - v[L.reward_mean] : splat(0.0f);

        // Reward cell on each output neuron: [r, s, z, y, b, sigma(, reward.change)] -> e_L.
        for (int j = 0; j < n[layers]; ++j) {
            vf in[1 + NODE_INFO + 1];
            in[0] = reward;
            for (int f = 0; f < NODE_INFO; ++f) in[1 + f] = info(v, L, layers, f)[j];
            in[1 + NODE_INFO] = change;  // read only where the cell has that input (reward_cell.inputs)
            cell(g, reward_cell, v + L.rule_reward + j * H, in, e + j * S);
        }

        for (int k = layers; k >= 1; --k) {
            const int i = k - 1, no = n[k];
            vf *b = v + L.biases[i], *sg = v + L.sigmas[i];
            // Node cell: [s, z, y, b, sigma, e] -> [c, db, dsigma]; post features [s, z, y, b', sigma', c].
            vf* pf = sc.post_features.data();
            for (int j = 0; j < no; ++j) {
                vf in[NODE_INFO + S], out[S + 2];
                for (int f = 0; f < NODE_INFO; ++f) in[f] = info(v, L, k, f)[j];
                for (int s = 0; s < S; ++s) in[NODE_INFO + s] = e[j * S + s];
                cell(g, node_cell, v + L.nodes[i] + j * H, in, out);
                b[j] = clampv(fma(out[S], lr, b[j]), -wl, wl);
                sg[j] = clampv(fma(out[S + 1], lr, sg[j]), smin, sl);
                vf* p = pf + j * (NODE_INFO + S);
                for (int f = 0; f < 3; ++f) p[f] = in[f];
                p[3] = b[j];
                p[4] = sg[j];
                for (int s = 0; s < S; ++s) p[NODE_INFO + s] = out[s];
            }
            edge_layer(v, g, k, pf, x, change, sc);
            std::swap(sc.signal, sc.next_signal);
            e = sc.signal.data();
        }
        // Trace reward.mean after the cells: m + (1 - exp(-dt / time)) (r - m), the reward the rule saw
        // (metarl/core/rule.py `_reward_mean`).
        if (o.reward_change) {
            const vf m = v[L.reward_mean];
            const vf rate = 1.0f - vexp(-v[L.dt] / o.reward_mean_time);
            v[L.reward_mean] = m + rate * (reward - m);
        }
    }

    // The edge cell on every connection of layer k; writes e_{k-1} to sc.next_signal.
    void edge_layer(vf* v, const vf* g, int k, const vf* pf, const vf* x, vf change, Scratch& sc) const {
        const int i0 = k - 1, ni = L.sizes[k - 1], no = L.sizes[k];
        constexpr int O = S + 1;
        const int PF = NODE_INFO + S;
        const Cell& c = edge_cell;
        const vf* ws = g + c.w_state;  // rows: H state rows, then inputs [post 0:5, pre 5:10, c 10:10+S, w, flag
                                       // (, reward.change)]
        const vf* wo = g + c.w_output;
        const vf* bs = g + c.b_state;
        const vf* bo = g + c.b_output;
        auto ws_row = [&](int r) { return ws + (H + r) * H; };
        auto wo_row = [&](int r) { return wo + (H + r) * O; };
        const int row_c = 2 * NODE_INFO, row_w = 2 * NODE_INFO + S, row_flag = 2 * NODE_INFO + S + 1;
        const int row_change = row_flag + 1;  // Options::reward_change only
        const vf lr = v[L.learning_rate];
        const float wl = o.weight_limit;

        // Per post neuron j: bias (+ flag row in the first layer) + [post info, c] rows (+ the reward.change row:
        // the same for every connection of the individual).
        vf* post_h = sc.post_h.data();
        vf* post_o = sc.post_o.data();
        for (int j = 0; j < no; ++j) {
            const vf* p = pf + j * PF;
            for (int m = 0; m < H; ++m) {
                vf acc = k == 1 ? bs[m] + ws_row(row_flag)[m] : bs[m];
                for (int f = 0; f < NODE_INFO; ++f) acc = fma(p[f], ws_row(f)[m], acc);
                for (int s = 0; s < S; ++s) acc = fma(p[NODE_INFO + s], ws_row(row_c + s)[m], acc);
                if (o.reward_change) acc = fma(change, ws_row(row_change)[m], acc);
                post_h[j * HS + m] = acc;
            }
            for (int m = 0; m < O; ++m) {
                vf acc = k == 1 ? bo[m] + wo_row(row_flag)[m] : bo[m];
                for (int f = 0; f < NODE_INFO; ++f) acc = fma(p[f], wo_row(f)[m], acc);
                for (int s = 0; s < S; ++s) acc = fma(p[NODE_INFO + s], wo_row(row_c + s)[m], acc);
                if (o.reward_change) acc = fma(change, wo_row(row_change)[m], acc);
                post_o[j * O + m] = acc;
            }
        }
        // Per pre neuron i: its node info rows, or the observation row [0, 0, x_i, 0, 0] in the first layer.
        vf* pre_h = sc.pre_h.data();
        vf* pre_o = sc.pre_o.data();
        for (int i = 0; i < ni; ++i) {
            if (k == 1) {
                for (int m = 0; m < H; ++m) pre_h[i * HS + m] = x[i] * ws_row(NODE_INFO + 2)[m];
                for (int m = 0; m < O; ++m) pre_o[i * O + m] = x[i] * wo_row(NODE_INFO + 2)[m];
                continue;
            }
            vf q[NODE_INFO];
            for (int f = 0; f < NODE_INFO; ++f) q[f] = info(v, L, k - 1, f)[i];
            for (int m = 0; m < H; ++m) {
                vf acc = q[0] * ws_row(NODE_INFO)[m];
                for (int f = 1; f < NODE_INFO; ++f) acc = fma(q[f], ws_row(NODE_INFO + f)[m], acc);
                pre_h[i * HS + m] = acc;
            }
            for (int m = 0; m < O; ++m) {
                vf acc = q[0] * wo_row(NODE_INFO)[m];
                for (int f = 1; f < NODE_INFO; ++f) acc = fma(q[f], wo_row(NODE_INFO + f)[m], acc);
                pre_o[i * O + m] = acc;
            }
        }
        // Per connection: only the weight and the recurrent state.
        vf* w = v + L.weights[i0];
        vf* hs = v + L.edges[i0];
        vf* e_prev = sc.next_signal.data();
        const bool signal_used = k > 1;  // e_0 feeds nothing
        for (int i = 0; i < ni; ++i) {
            vf e_acc[S] = {};
            // Four connections at a time, then two, then one (independent chains for the out-of-order core;
            // each connection's arithmetic, and the order of the sum into e_acc, are unchanged).
            auto connections = [&](auto width, int j0) {
                constexpr int NJ = decltype(width)::value;
                vf wij[NJ];
                vf* h[NJ];
                vf hn[NJ][HS];
                for (int u = 0; u < NJ; ++u) {
                    wij[u] = w[i * no + j0 + u];
                    h[u] = hs + (i * no + j0 + u) * H;
                }
                const int m0 = signal_used ? 0 : S;
                vf acc_o[ROWWISE ? O : 1];  // the output sums of one connection (large states only)
                if constexpr (ROWWISE) {  // NJ == 1 (see below): the same sums, read row by row
                    for (int m = 0; m < H; ++m)
                        hn[0][m] = fma(wij[0], ws_row(row_w)[m], post_h[j0 * HS + m] + pre_h[i * HS + m]);
                    accumulate_rows(hn[0], h[0], ws, H, H, H);
                    for (int m = 0; m < H; ++m) h[0][m] = hn[0][m] = vtanh(hn[0][m]);
                    for (int m = m0; m < O; ++m)
                        acc_o[m] = fma(wij[0], wo_row(row_w)[m], post_o[j0 * O + m] + pre_o[i * O + m]);
                    accumulate_rows(acc_o + m0, hn[0], wo + m0, H, O - m0, O);
                } else {
                    for (int m = 0; m < H; ++m) {
                        vf acc[NJ];
                        for (int u = 0; u < NJ; ++u)
                            acc[u] = fma(wij[u], ws_row(row_w)[m], post_h[(j0 + u) * HS + m] + pre_h[i * HS + m]);
                        for (int q = 0; q < H; ++q)
                            for (int u = 0; u < NJ; ++u) acc[u] = fma(h[u][q], ws[q * H + m], acc[u]);
                        for (int u = 0; u < NJ; ++u) hn[u][m] = vtanh(acc[u]);
                    }
                    for (int u = 0; u < NJ; ++u)
                        for (int m = 0; m < H; ++m) h[u][m] = hn[u][m];
                }
                for (int m = m0; m < O; ++m) {
                    vf acc[NJ];
                    if constexpr (ROWWISE) {
                        acc[0] = acc_o[m];
                    } else {
                        for (int u = 0; u < NJ; ++u)
                            acc[u] = fma(wij[u], wo_row(row_w)[m], post_o[(j0 + u) * O + m] + pre_o[i * O + m]);
                        for (int q = 0; q < H; ++q)
                            for (int u = 0; u < NJ; ++u) acc[u] = fma(hn[u][q], wo[q * O + m], acc[u]);
                    }
                    for (int u = 0; u < NJ; ++u) {
                        vf out = vtanh(acc[u]);
                        if (m == S) {
                            w[i * no + j0 + u] = clampv(fma(out, lr, wij[u]), -wl, wl);
                        } else {
                            e_acc[m] = j0 + u == 0 ? out : e_acc[m] + out;
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
