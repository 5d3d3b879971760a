// metarl's native lifetime kernel: whole lifetimes of 16 individuals at a time.
//
// The same mathematics as metarl/fused.py (the learning rule split by input block) plus
// the environment step and the sampling noise of metarl/lifetime.py, written with GCC
// vector extensions: every value is a vector of LANES individuals, so each instruction
// advances 16 individuals and an individual's arithmetic never depends on its
// neighbours. A block of 16 individuals is copied into a contiguous local buffer (about
// 100 KB: fits the L2 cache), run through all requested steps, and copied back.
//
// Compiled by metarl/native.py with -DMETARL_S=<signal size> -DMETARL_H=<state size>;
// everything else is a runtime argument, passed as the described structures below
// (Network, Options, GenomeMap, Buffers), which metarl/native.py mirrors field by field as
// ctypes.Structure classes of the same names; metarl_struct_sizes lets it check that
// they agree. Nothing is passed by position in an array.
//
// Buffers are float32, feature-major: feature f of individual p at [f * P + p].

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#ifndef METARL_S
#error "compile with -DMETARL_S=<signal_dim> -DMETARL_H=<state_dim>"
#endif

namespace {

constexpr int S = METARL_S;
constexpr int H = METARL_H;
constexpr int HS = H > 0 ? H : 1;  // storage size of a state (arrays of size 0 are not C++)
constexpr int LANES = 16;
constexpr int NODE_INFO = 5;
constexpr int MAX_LAYERS = 8;
static_assert(S >= 1, "signal_dim must be >= 1");

typedef float vf __attribute__((vector_size(4 * LANES)));
typedef int32_t vi __attribute__((vector_size(4 * LANES)));
typedef uint32_t vu __attribute__((vector_size(4 * LANES)));
typedef double vd __attribute__((vector_size(8 * LANES)));

inline vf splat(float x) { return vf{} + x; }
inline vf vmin(vf a, vf b) { return a < b ? a : b; }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }
inline vf clampv(vf x, float lo, float hi) { return vmin(vmax(x, splat(lo)), splat(hi)); }
inline vf vabs(vf x) { return (vf)((vu)x & 0x7fffffffu); }
inline vf vsqrt(vf x) {
    vf r;
    for (int l = 0; l < LANES; ++l) r[l] = __builtin_sqrtf(x[l]);
    return r;
}
// Round to nearest (ties to even) for |x| < 2^22, as a float.
inline vf vround(vf x) {
    const vf magic = splat(12582912.0f);  // 1.5 * 2^23
    return (x + magic) - magic;
}
inline vf vfloor(vf x) {
    vf r = vround(x);
    return r > x ? r - 1.0f : r;
}

// exp for x in [-87, 88] (Cephes expf: within 1-2 ulp).
inline vf vexp(vf x) {
    vf n = vround(x * 1.44269504088896341f);
    vf r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    vf p = 1.9875691500e-4f * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    return p * (vf)e;
}

// tanh within 2 ulp (Cephes tanhf): an odd polynomial below 0.625, 1 - 2 / (exp(2|x|) + 1) above.
inline vf vtanh(vf x) {
    vf a = vabs(x);
    vf z = x * x;
    vf small = -5.70498872745e-3f * z + 2.06390887954e-2f;
    small = small * z - 5.37397155531e-2f;
    small = small * z + 1.33314422036e-1f;
    small = small * z - 3.33332819422e-1f;
    small = small * z * x + x;
    vf e = vexp(vmin(a + a, splat(40.0f)));
    vf large = 1.0f - 2.0f / (e + 1.0f);
    large = (vf)((vu)large | ((vu)x & 0x80000000u));
    return a < 0.625f ? small : large;
}

// sin and cos (Cephes sinf/cosf range reduction and polynomials), |x| < 8192.
inline void vsincos(vf x, vf* s, vf* c) {
    vu sign_sin = (vu)x & 0x80000000u;
    vf a = vabs(x);
    vi j = __builtin_convertvector(a * 1.27323954473516f, vi);
    j = (j + 1) & ~1;
    vf y = __builtin_convertvector(j, vf);
    sign_sin ^= (vu)((j & 4) << 29);
    vu sign_cos = (vu)((~(j - 2) & 4) << 29);
    vi use_sin_poly = (j & 2) == 0;
    vf r = ((a - y * 0.78515625f) - y * 2.4187564849853515625e-4f) - y * 3.77489497744594108e-8f;
    vf z = r * r;
    vf pc = 2.443315711809948e-5f * z - 1.388731625493765e-3f;
    pc = pc * z + 4.166664568298827e-2f;
    pc = pc * z * z - 0.5f * z + 1.0f;
    vf ps = -1.9515295891e-4f * z + 8.3321608736e-3f;
    ps = ps * z - 1.6666654611e-1f;
    ps = ps * z * r + r;
    vf sv = use_sin_poly ? ps : pc;
    vf cv = use_sin_poly ? pc : ps;
    *s = (vf)((vu)sv ^ sign_sin);
    *c = (vf)((vu)cv ^ sign_cos);
}
inline vf vsin(vf x) { vf s, c; vsincos(x, &s, &c); return s; }
inline vf vcos(vf x) { vf s, c; vsincos(x, &s, &c); return c; }

// Natural log for x > 0 (Cephes logf).
inline vf vlog(vf x) {
    x = vmax(x, splat(1.17549435e-38f));
    vi e = ((vi)x >> 23) - 126;
    x = (vf)(((vu)x & ~0x7f800000u) | 0x3f000000u);  // mantissa in [0.5, 1)
    vf ef = __builtin_convertvector(e, vf);
    vi small = x < 0.707106781186547524f;
    ef = small ? ef - 1.0f : ef;
    x = (small ? x + x : x) - 1.0f;
    vf z = x * x;
    vf y = 7.0376836292e-2f * x - 1.1514610310e-1f;
    y = y * x + 1.1676998740e-1f;
    y = y * x - 1.2420140846e-1f;
    y = y * x + 1.4249322787e-1f;
    y = y * x - 1.6668057665e-1f;
    y = y * x + 2.0000714765e-1f;
    y = y * x - 2.4999993993e-1f;
    y = y * x + 3.3333331174e-1f;
    y = y * x * z;
    y = y + ef * -2.12194440e-4f;
    y = y - 0.5f * z;
    return x + y + ef * 0.693359375f;
}

// Chris Wellons' lowbias32, as metarl/rng.py.
inline uint32_t hash32(uint32_t x) {
    x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; return x ^ (x >> 16);
}
inline vu vhash32(vu x) {
    x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; return x ^ (x >> 16);
}
// metarl.rng._uniform_at for one counter.
inline vf vuniform(vu base, uint32_t counter) {
    vu bits = vhash32(base ^ hash32(counter));
    return (__builtin_convertvector(bits >> 8, vf) + 0.5f) * (1.0f / 16777216.0f);
}

}  // namespace

// ---- The call's described structures (mirrored by metarl/native.py; same names, same field order).

extern "C" {

// The actor network: layers and layer sizes [n_0 .. n_L].
struct Network {
    int64_t layers;
    int64_t sizes[MAX_LAYERS + 1];
};

// The env's and the rule's options (metarl.envs.base.EnvOptions, the actor config and the conditions).
struct Options {
    float dt, max_torque, max_speed;  // max_speed <= 0: none
    float learning_rate, weight_limit, sigma_limit;
    int32_t links, rk4, reward_delta, plastic, zero_reward, noise, spin;
    int64_t goal_switch;  // the goal flips from this step number on; -1 = never
};

// Where one cell's parameters start in the genome (metarl.genome.GenomeLayout), each part row-major.
struct CellMap {
    int32_t inputs, outputs, w_state, b_state, w_output, b_output;
};

struct GenomeMap {
    CellMap reward, node, connection;
    int32_t size;  // genes per individual
};

// The state of a population, each (features, P) float32; the kernel updates all but the first four.
struct Buffers {
    float* genome;      // (G, P)
    float* env_params;  // (4 or 6, P): metarl.envs param_defaults order
    float* sign;        // (1, P) motor direction
    float* goal;        // (1, P) hidden goal
    float* state;       // (2 * links, P)
    float* prev_height; // (1, P)
    float* weights[MAX_LAYERS];  // (n_{k-1} * n_k, P)
    float* biases[MAX_LAYERS];   // (n_k, P), as sigmas, sums, samples, outputs
    float* sigmas[MAX_LAYERS];
    float* sums[MAX_LAYERS];
    float* samples[MAX_LAYERS];
    float* outputs[MAX_LAYERS];
    float* rule_reward;          // (n_L * H, P)
    float* nodes[MAX_LAYERS];    // (n_k * H, P)
    float* edges[MAX_LAYERS];    // (n_{k-1} * n_k * H, P)
};

}  // extern "C"

namespace {

constexpr float PI = 3.14159265358979323846f;
constexpr float DOWN_PENALTY = 1.1f;

// Physics: derivative of one state under torque; params as in metarl/envs.
struct Physics {
    const vf* p;  // Pendulum: length, mass, gravity, damping. DoublePendulum: l1, l2, m1, m2, g, damping.
    int links;

    void derivative(const vf* st, vf torque, vf* d) const {
        if (links == 1) {
            vf l = p[0], m = p[1], g = p[2], b = p[3];
            d[0] = st[1];
            d[1] = -(g / l) * vsin(st[0]) + torque / (m * (l * l)) - b * st[1];
            return;
        }
        vf l1 = p[0], l2 = p[1], m1 = p[2], m2 = p[3], g = p[4], b = p[5];
        vf t1 = st[0], w1 = st[1], t2 = st[2], w2 = st[3];
        vf sin_d, cos_d;
        vsincos(t1 - t2, &sin_d, &cos_d);
        vf m11 = (m1 + m2) * l1 * l1;
        vf m12 = m2 * l1 * l2 * cos_d;
        vf m22 = m2 * l2 * l2;
        vf f1 = -m2 * l1 * l2 * w2 * w2 * sin_d - (m1 + m2) * g * l1 * vsin(t1) + torque;
        vf f2 = m2 * l1 * l2 * w1 * w1 * sin_d - m2 * g * l2 * vsin(t2);
        vf det = m11 * m22 - m12 * m12;
        d[0] = w1;
        d[1] = (m22 * f1 - m12 * f2) / det - b * w1;
        d[2] = w2;
        d[3] = (m11 * f2 - m12 * f1) / det - b * w2;
    }

    void advance(vf* st, vf torque, const Options& o) const {
        const int n = 2 * links;
        if (o.rk4) {
            vf k1[4], k2[4], k3[4], k4[4], tmp[4];
            derivative(st, torque, k1);
            for (int i = 0; i < n; ++i) tmp[i] = st[i] + (0.5f * o.dt) * k1[i];
            derivative(tmp, torque, k2);
            for (int i = 0; i < n; ++i) tmp[i] = st[i] + (0.5f * o.dt) * k2[i];
            derivative(tmp, torque, k3);
            for (int i = 0; i < n; ++i) tmp[i] = st[i] + o.dt * k3[i];
            derivative(tmp, torque, k4);
            for (int i = 0; i < n; ++i) st[i] = st[i] + (o.dt / 6.0f) * (k1[i] + 2.0f * k2[i] + 2.0f * k3[i] + k4[i]);
        } else {
            vf d[4];
            derivative(st, torque, d);
            for (int i = 0; i < n; ++i) st[i] = st[i] + o.dt * d[i];
        }
        for (int i = 0; i < links; ++i) {
            vf a = st[2 * i] + PI;  // torch.remainder(theta + pi, 2 pi) - pi
            st[2 * i] = a - vfloor(a * (1.0f / (2.0f * PI))) * (2.0f * PI) - PI;
            if (o.max_speed > 0) st[2 * i + 1] = clampv(st[2 * i + 1], -o.max_speed, o.max_speed);
        }
    }
};

// Offsets of the genome parts of one cell (metarl/genome.py order).
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
    int genome, env_params, sign, goal, state, prev_height;
    int weights[MAX_LAYERS], biases[MAX_LAYERS], sigmas[MAX_LAYERS];
    int sums[MAX_LAYERS], samples[MAX_LAYERS], outputs[MAX_LAYERS];
    int rule_reward, nodes[MAX_LAYERS], edges[MAX_LAYERS];
    int total;
};

// A recurrent cell on one instance: h (H) updated in place, x (I) inputs, out (O) outputs.
// Sums start from the bias and add the inputs, then the state, in index order (metarl/fused.py).
inline void cell(const vf* g, const Cell& c, vf* h, const vf* x, vf* out) {
    const vf* ws = g + c.w_state;
    const vf* bs = g + c.b_state;
    const vf* wo = g + c.w_output;
    const vf* bo = g + c.b_output;
    vf hn[HS];
    for (int m = 0; m < H; ++m) {
        vf acc = bs[m];
        for (int f = 0; f < c.inputs; ++f) acc += x[f] * ws[(H + f) * H + m];
        for (int q = 0; q < H; ++q) acc += h[q] * ws[q * H + m];
        hn[m] = vtanh(acc);
    }
    for (int m = 0; m < H; ++m) h[m] = hn[m];
    for (int m = 0; m < c.outputs; ++m) {
        vf acc = bo[m];
        for (int f = 0; f < c.inputs; ++f) acc += x[f] * wo[(H + f) * c.outputs + m];
        for (int q = 0; q < H; ++q) acc += h[q] * wo[q * c.outputs + m];
        out[m] = vtanh(acc);
    }
}

struct Scratch {
    std::vector<vf> local, post_h, post_o, pre_h, pre_o, post_features, signal, next_signal, noise, obs;
};

struct Kernel {
    const Layout& L;
    const Options& o;
    Cell reward_cell, node_cell, edge_cell;

    Kernel(const Layout& layout, const Options& options, const GenomeMap& genome)
        : L(layout), o(options), reward_cell(genome.reward), node_cell(genome.node),
          edge_cell(genome.connection) {}

    bool fits(int genes) const {
        return reward_cell.fits(1 + NODE_INFO, S, genes) && node_cell.fits(NODE_INFO + S, S + 2, genes)
               && edge_cell.fits(2 * NODE_INFO + S + 2, S + 1, genes);
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
                for (int q = 0; q < ni; ++q) s += in[q] * w[q * no + j];
                vf z = s + sg[j] * noise[start + j];
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
    vf step(vf* v, vu noise_base, uint32_t t, Scratch& sc, const vf* seen) const {
        const int layers = L.layers, neurons = (int)sc.noise.size();

        // Observation [sin, cos, omega] per link.
        vf* st = v + L.state;
        vf* x = sc.obs.data();
        for (int i = 0; i < o.links; ++i) {
            vsincos(st[2 * i], &x[3 * i], &x[3 * i + 1]);
            x[3 * i + 2] = st[2 * i + 1];
        }
        // Sampling noise: Box-Muller on counters 2c, 2c+1 of c = t * neurons + j (metarl.rng.normal_at).
        vf* noise = sc.noise.data();
        for (int j = 0; j < neurons; ++j) {
            if (!o.noise) { noise[j] = splat(0.0f); continue; }
            uint32_t c = 2u * (t * (uint32_t)neurons + (uint32_t)j);
            vf u1 = vuniform(noise_base, c), u2 = vuniform(noise_base, c + 1);
            noise[j] = vsqrt(-2.0f * vlog(u1)) * vcos((2.0f * PI) * u2);
        }
        act(v, x, noise);
        // Environment.
        vf action = v[L.outputs[layers - 1]];
        vf torque = clampv(action, -1.0f, 1.0f) * (o.max_torque * v[L.sign]);
        Physics phys{v + L.env_params, o.links};
        phys.advance(st, torque, o);
        vf height = splat(0.0f);
        for (int i = 0; i < o.links; ++i) height += 1.0f - vcos(st[2 * i]);
        vf reward = height;
        if (o.spin) {
            reward = st[1];  // angular speed of the first link
        } else if (o.reward_delta) {
            vf prev = v[L.prev_height];
            vf delta = height - prev;
            reward = delta < 0.0f ? DOWN_PENALTY * delta : delta;
            reward = prev == prev ? reward : splat(0.0f);  // NaN: no previous height
        }
        // The hidden goal's sign, flipped from goal_switch on (metarl/envs/base.py `reward`).
        vf goal = v[L.goal];
        if (o.goal_switch >= 0 && (int64_t)t >= o.goal_switch) goal = -goal;
        reward = reward * goal;
        v[L.prev_height] = height;
        if (o.plastic) rule(v, x, o.zero_reward ? splat(0.0f) : (seen ? *seen : reward), sc);
        return reward;
    }

    void rule(vf* v, const vf* x, vf reward, Scratch& sc) const {
        const int layers = L.layers;
        const int* n = L.sizes;
        const vf* g = v + L.genome;
        const float lr = o.learning_rate, wl = o.weight_limit, sl = o.sigma_limit;
        vf* e = sc.signal.data();  // e_k: (n_k, S)

        // Reward cell on each output neuron: [r, s, z, y, b, sigma] -> e_L.
        for (int j = 0; j < n[layers]; ++j) {
            vf in[1 + NODE_INFO];
            in[0] = reward;
            for (int f = 0; f < NODE_INFO; ++f) in[1 + f] = info(v, L, layers, f)[j];
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
                b[j] = clampv(b[j] + lr * out[S], -wl, wl);
                sg[j] = clampv(sg[j] + lr * out[S + 1], 0.0f, sl);
                vf* p = pf + j * (NODE_INFO + S);
                for (int f = 0; f < 3; ++f) p[f] = in[f];
                p[3] = b[j];
                p[4] = sg[j];
                for (int s = 0; s < S; ++s) p[NODE_INFO + s] = out[s];
            }
            edge_layer(v, g, k, pf, x, sc);
            std::swap(sc.signal, sc.next_signal);
            e = sc.signal.data();
        }
    }

    // The edge cell on every connection of layer k; writes e_{k-1} to sc.next_signal.
    void edge_layer(vf* v, const vf* g, int k, const vf* pf, const vf* x, Scratch& sc) const {
        const int i0 = k - 1, ni = L.sizes[k - 1], no = L.sizes[k];
        constexpr int O = S + 1;
        const int PF = NODE_INFO + S;
        const Cell& c = edge_cell;
        const vf* ws = g + c.w_state;  // rows: H state rows, then inputs [post 0:5, pre 5:10, c 10:10+S, w, flag]
        const vf* wo = g + c.w_output;
        const vf* bs = g + c.b_state;
        const vf* bo = g + c.b_output;
        auto ws_row = [&](int r) { return ws + (H + r) * H; };
        auto wo_row = [&](int r) { return wo + (H + r) * O; };
        const int row_c = 2 * NODE_INFO, row_w = 2 * NODE_INFO + S, row_flag = 2 * NODE_INFO + S + 1;
        const float lr = o.learning_rate, wl = o.weight_limit;

        // Per post neuron j: bias (+ flag row in the first layer) + [post info, c] rows.
        vf* post_h = sc.post_h.data();
        vf* post_o = sc.post_o.data();
        for (int j = 0; j < no; ++j) {
            const vf* p = pf + j * PF;
            for (int m = 0; m < H; ++m) {
                vf acc = k == 1 ? bs[m] + ws_row(row_flag)[m] : bs[m];
                for (int f = 0; f < NODE_INFO; ++f) acc += p[f] * ws_row(f)[m];
                for (int s = 0; s < S; ++s) acc += p[NODE_INFO + s] * ws_row(row_c + s)[m];
                post_h[j * HS + m] = acc;
            }
            for (int m = 0; m < O; ++m) {
                vf acc = k == 1 ? bo[m] + wo_row(row_flag)[m] : bo[m];
                for (int f = 0; f < NODE_INFO; ++f) acc += p[f] * wo_row(f)[m];
                for (int s = 0; s < S; ++s) acc += p[NODE_INFO + s] * wo_row(row_c + s)[m];
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
                for (int f = 1; f < NODE_INFO; ++f) acc += q[f] * ws_row(NODE_INFO + f)[m];
                pre_h[i * HS + m] = acc;
            }
            for (int m = 0; m < O; ++m) {
                vf acc = q[0] * wo_row(NODE_INFO)[m];
                for (int f = 1; f < NODE_INFO; ++f) acc += q[f] * wo_row(NODE_INFO + f)[m];
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
            for (int j = 0; j < no; ++j) {
                const int ij = i * no + j;
                vf wij = w[ij];
                vf* h = hs + ij * H;
                vf hn[HS];
                for (int m = 0; m < H; ++m) {
                    vf acc = post_h[j * HS + m] + pre_h[i * HS + m] + wij * ws_row(row_w)[m];
                    for (int q = 0; q < H; ++q) acc += h[q] * ws[q * H + m];
                    hn[m] = vtanh(acc);
                }
                for (int m = 0; m < H; ++m) h[m] = hn[m];
                for (int m = signal_used ? 0 : S; m < O; ++m) {
                    vf acc = post_o[j * O + m] + pre_o[i * O + m] + wij * wo_row(row_w)[m];
                    for (int q = 0; q < H; ++q) acc += hn[q] * wo[q * O + m];
                    vf out = vtanh(acc);
                    if (m == S) {
                        w[ij] = clampv(wij + lr * out, -wl, wl);
                    } else {
                        e_acc[m] = j == 0 ? out : e_acc[m] + out;
                    }
                }
            }
            if (signal_used)
                for (int s = 0; s < S; ++s) e_prev[i * S + s] = e_acc[s] / (float)no;
        }
    }
};

// Everything `metarl_run` and `metarl_rule_steps` share: the local layout of a block and the
// loop over blocks (copy in, body, copy out), split over threads.
struct Driver {
    struct Entry {
        int* local;    // offset in the block's local buffer (a field of L)
        int features;
        float* global; // the (features, P) buffer
        bool written;  // copied back after the block's steps
    };
    Layout L{};
    Options o{};
    GenomeMap genome{};
    std::vector<Entry> order;  // every buffer, in one order for copying in and out
    int max_n = 0, neurons = 0;

    int init(const Network& net, const Options& options, const GenomeMap& map, const Buffers& b) {
        if (net.layers < 1 || net.layers > MAX_LAYERS) return -1;
        o = options;
        genome = map;
        if (o.links != 1 && o.links != 2) return -2;
        if (!Kernel(L, o, genome).fits(genome.size)) return -3;
        L.layers = (int)net.layers;
        for (int k = 0; k <= L.layers; ++k) {
            L.sizes[k] = (int)net.sizes[k];
            if (L.sizes[k] < 1) return -4;
            max_n = std::max(max_n, L.sizes[k]);
            if (k > 0) neurons += L.sizes[k];
        }
        const int layers = L.layers;
        order.push_back({&L.genome, genome.size, b.genome, false});
        order.push_back({&L.env_params, o.links == 1 ? 4 : 6, b.env_params, false});
        order.push_back({&L.sign, 1, b.sign, false});
        order.push_back({&L.goal, 1, b.goal, false});
        order.push_back({&L.state, 2 * o.links, b.state, true});
        order.push_back({&L.prev_height, 1, b.prev_height, true});
        for (int k = 0; k < layers; ++k) {
            const int n = L.sizes[k + 1];
            order.push_back({&L.weights[k], L.sizes[k] * n, b.weights[k], true});
            order.push_back({&L.biases[k], n, b.biases[k], true});
            order.push_back({&L.sigmas[k], n, b.sigmas[k], true});
            order.push_back({&L.sums[k], n, b.sums[k], true});
            order.push_back({&L.samples[k], n, b.samples[k], true});
            order.push_back({&L.outputs[k], n, b.outputs[k], true});
            order.push_back({&L.nodes[k], n * H, b.nodes[k], true});
            order.push_back({&L.edges[k], L.sizes[k] * n * H, b.edges[k], true});
        }
        order.push_back({&L.rule_reward, L.sizes[layers] * H, b.rule_reward, true});
        int total = 0;
        for (auto& entry : order) {
            if (!entry.global && entry.features > 0) return -5;  // a buffer the call did not describe
            *entry.local = total;
            total += entry.features;
        }
        L.total = total;
        return 0;
    }

    // body(kernel, v, p0, lanes, scratch) runs the steps of the block at individuals p0 .. p0+lanes-1.
    template <class Body>
    void run(int64_t P, int64_t threads, Body body) const {
        const int64_t blocks = (P + LANES - 1) / LANES;
        auto work = [&](int64_t first, int64_t last) {
            const Kernel kernel(L, o, genome);
            Scratch sc;
            sc.local.resize(L.total);
            for (auto* buf : {&sc.post_h, &sc.pre_h}) buf->resize(max_n * HS);
            for (auto* buf : {&sc.post_o, &sc.pre_o}) buf->resize(max_n * (S + 1));
            for (auto* buf : {&sc.signal, &sc.next_signal}) buf->resize(max_n * S);
            sc.post_features.resize(max_n * (NODE_INFO + S));
            sc.noise.resize(neurons);
            sc.obs.resize(3 * o.links);
            vf* v = sc.local.data();
            for (int64_t blk = first; blk < last; ++blk) {
                const int64_t p0 = blk * LANES;
                const int lanes = (int)std::min<int64_t>(LANES, P - p0);
                // Copy in; missing lanes of the last block repeat its first individual.
                for (const Entry& e : order)
                    for (int f = 0; f < e.features; ++f) v[*e.local + f] = gather(e.global + (int64_t)f * P + p0, lanes);
                body(kernel, v, p0, lanes, sc);
                for (const Entry& e : order)
                    if (e.written)
                        for (int f = 0; f < e.features; ++f) scatter(e.global + (int64_t)f * P + p0, v[*e.local + f], lanes);
            }
        };
        const int64_t nthreads = std::max<int64_t>(1, std::min<int64_t>(threads, blocks));
        if (nthreads == 1) {
            work(0, blocks);
            return;
        }
        std::vector<std::thread> pool;
        for (int64_t t = 0; t < nthreads; ++t)
            pool.emplace_back(work, blocks * t / nthreads, blocks * (t + 1) / nthreads);
        for (auto& th : pool) th.join();
    }

    static vf gather(const float* row, int lanes) {
        vf val;
        if (lanes == LANES) std::memcpy(&val, row, sizeof(vf));
        else for (int l = 0; l < LANES; ++l) val[l] = row[l < lanes ? l : 0];
        return val;
    }
    static void scatter(float* row, vf val, int lanes) {
        if (lanes == LANES) std::memcpy(row, &val, sizeof(vf));
        else for (int l = 0; l < lanes; ++l) row[l] = val[l];
    }
};

}  // namespace

extern "C" {

// sizeof of the described structures and this build's S and H, for metarl/native.py to check its mirrors.
void metarl_struct_sizes(int64_t* out) {
    out[0] = sizeof(Network);
    out[1] = sizeof(Options);
    out[2] = sizeof(GenomeMap);
    out[3] = sizeof(Buffers);
    out[4] = S;
    out[5] = H;
}

// Run `steps` steps from step number t0 for P individuals, in place.
//   keys: noise stream keys (P,); fitness (P,) float64 += each reward; rewards (steps, P) float32 or null;
//   states (steps, 2 * links, P) float32 or null receives the env state after each step; seen (steps, P)
//   float32 or null: the rewards the rule sees instead of its own.
// Returns 0, or a negative error code.
int64_t metarl_run(const Network* net, const Options* options, const GenomeMap* map, const Buffers* bufs,
                   int64_t P, int64_t steps, int64_t t0, int64_t threads, const uint32_t* keys, double* fitness,
                   float* rewards, float* states, const float* seen) {
    Driver d;
    if (int code = d.init(*net, *options, *map, *bufs)) return code;
    d.run(P, threads, [&](const Kernel& kernel, vf* v, int64_t p0, int lanes, Scratch& sc) {
        vu base;
        vd total;  // fitness += reward, step by step in float64 (as metarl/lifetime.py)
        for (int l = 0; l < LANES; ++l) {
            base[l] = keys[p0 + (l < lanes ? l : 0)];
            total[l] = fitness[p0 + (l < lanes ? l : 0)];
        }
        const int n_state = 2 * d.o.links;
        for (int64_t s = 0; s < steps; ++s) {
            vf seen_s;
            if (seen) seen_s = Driver::gather(seen + s * P + p0, lanes);
            vf r = kernel.step(v, base, (uint32_t)(t0 + s), sc, seen ? &seen_s : nullptr);
            total += __builtin_convertvector(r, vd);
            if (rewards) Driver::scatter(rewards + s * P + p0, r, lanes);
            if (states)
                for (int f = 0; f < n_state; ++f)
                    Driver::scatter(states + (s * n_state + f) * P + p0, v[d.L.state + f], lanes);
        }
        for (int l = 0; l < lanes; ++l) fitness[p0 + l] = total[l];
    });
    return 0;
}

// For tests: `steps` actor passes and rule applications with given inputs, in place:
// x (steps, n_0, P) observations, noise (steps, neurons, P), reward (steps, P). The env buffers
// of `bufs` are not used (any float32 arrays of their size).
int64_t metarl_rule_steps(const Network* net, const Options* options, const GenomeMap* map, const Buffers* bufs,
                          int64_t P, int64_t steps, const float* x, const float* noise, const float* reward) {
    Driver d;
    if (int code = d.init(*net, *options, *map, *bufs)) return code;
    const int n0 = d.L.sizes[0], neurons = d.neurons;
    d.run(P, 1, [&](const Kernel& kernel, vf* v, int64_t p0, int lanes, Scratch& sc) {
        std::vector<vf> xs(n0), zs(neurons);
        for (int64_t s = 0; s < steps; ++s) {
            for (int i = 0; i < n0; ++i) xs[i] = Driver::gather(x + (s * n0 + i) * P + p0, lanes);
            for (int j = 0; j < neurons; ++j) zs[j] = Driver::gather(noise + (s * neurons + j) * P + p0, lanes);
            kernel.act(v, xs.data(), zs.data());
            kernel.rule(v, xs.data(), Driver::gather(reward + s * P + p0, lanes), sc);
        }
    });
    return 0;
}

// The kernel's elementary functions on n floats (n a multiple of LANES), for tests:
// fn 0 tanh, 1 sin, 2 cos, 3 log, 4 exp.
int64_t metarl_elementwise(int64_t fn, int64_t n, const float* x, float* y) {
    if (n % LANES) return -1;
    for (int64_t i = 0; i < n; i += LANES) {
        vf v, r;
        std::memcpy(&v, x + i, sizeof(vf));
        switch (fn) {
            case 0: r = vtanh(v); break;
            case 1: r = vsin(v); break;
            case 2: r = vcos(v); break;
            case 3: r = vlog(v); break;
            case 4: r = vexp(v); break;
            default: return -2;
        }
        std::memcpy(y + i, &r, sizeof(vf));
    }
    return 0;
}

}  // extern "C"
