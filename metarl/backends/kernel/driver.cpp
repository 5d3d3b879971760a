// metarl's native lifetime kernel: whole lifetimes of one vector of individuals (8 or 16) at a time.
//
// Files: vecmath.h (vector types and elementary functions), interface.h (the described
// structures of a call), rule.h (the step and the learning rule), driver.cpp (this: blocks, threads
// and the exported functions), and program.h, generated for each rule declaration and environment from
// their Python definitions by metarl/backends/codegen.py (what the cells read, the traces, the environment).
//
// The same mathematics as metarl/core/spec.py (the learning rule split by input block) plus
// the environment step and the sampling noise of metarl/core/step.py, written with GCC
// vector extensions: every value is a vector of LANES individuals (one register: 16 with
// AVX-512, else 8), so each instruction advances LANES individuals and an individual's
// arithmetic never depends on its neighbours. A block of LANES individuals is copied into a
// contiguous local buffer (about 50 KB at 8 lanes: fits the L2 cache), run through all
// requested steps, and copied back. Threads take blocks one at a time from a shared counter.
//
// Portable: compiled with -ffp-contract=off, every fused multiply-add explicit (vecmath.h),
// no approximate instructions, so the results are the same bits on every x86-64 CPU with FMA.
//
// Compiled by metarl/backends/native.py with -DMETARL_S=<signal size> -DMETARL_H=<state size>,
// -DMETARL_PROGRAM=<program.h's digest> and -I<the folder of program.h>;
// everything else is a runtime argument, passed as the described structures of interface.h
// (Network, Options, GenomeMap, Buffers), which metarl/backends/native.py mirrors field by field as
// ctypes.Structure classes of the same names; metarl_struct_sizes and metarl_struct_fields
// (every field's offset and size, by name) let it check that they agree. Nothing is passed
// by position in an array. It runs the rule declaration and the environment program.h was generated from
// (metarl_program states its digest).
//
// Buffers are float32, feature-major: feature f of individual p at [f * P + p].

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "rule.h"

namespace {

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
        if (o.n_scalars != N_SCALARS) return -2;  // options made for another program
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
        order.push_back({&L.env_params, N_PARAMS, b.env_params, false});
        order.push_back({&L.sign, 1, b.sign, false});
        order.push_back({&L.goal, 3, b.goal, false});  // before and from the switch on, the switch step
        order.push_back({&L.dt, 1, b.dt, false});
        order.push_back({&L.learning_rate, 1, b.learning_rate, false});
        order.push_back({&L.state, N_STATE, b.state, true});
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
        order.push_back({&L.traces, N_TRACES, b.traces, true});
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
        // Blocks are handed out one at a time from a shared counter (dynamic scheduling): a thread on a
        // busy core takes fewer blocks instead of holding up the others. Which thread runs a block never
        // changes its numbers (an individual's arithmetic depends on nothing else).
        std::atomic<int64_t> next{0};
        auto work = [&]() {
            const Kernel kernel(L, o, genome);
            Scratch sc;
            sc.allocate((size_t)L.total, max_n, neurons);
            vf* v = sc.local.data();
            for (int64_t blk = next.fetch_add(1, std::memory_order_relaxed); blk < blocks;
                 blk = next.fetch_add(1, std::memory_order_relaxed)) {
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
            work();
            return;
        }
        std::vector<std::thread> pool;
        for (int64_t t = 1; t < nthreads; ++t) pool.emplace_back(work);
        work();  // the calling thread takes blocks too
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

// sizeof of the described structures and this build's S and H, for metarl/backends/native.py to check its mirrors.
void metarl_struct_sizes(int64_t* out) {
    out[0] = sizeof(Network);
    out[1] = sizeof(Options);
    out[2] = sizeof(GenomeMap);
    out[3] = sizeof(Buffers);
    out[4] = S;
    out[5] = H;
}

#define METARL_STR2(x) #x
#define METARL_STR(x) METARL_STR2(x)
// The digest of the program.h this library was built from (metarl/backends/codegen.py Program.digest), and its
// sizes: out[0..4] = N_STATE, N_OBS, N_PARAMS, N_TRACES, N_SCALARS.
const char* metarl_program(int64_t* out) {
    out[0] = N_STATE;
    out[1] = N_OBS;
    out[2] = N_PARAMS;
    out[3] = N_TRACES;
    out[4] = N_SCALARS;
    return METARL_STR(METARL_PROGRAM);
}

// The fields of the described structures (interface.h METARL_FIELDS): up to `capacity` names, offsets and sizes.
// Returns the number of fields.
int64_t metarl_struct_fields(const char** names, int64_t* offsets, int64_t* sizes, int64_t capacity) {
    const int64_t n = (int64_t)(sizeof(METARL_FIELDS) / sizeof(METARL_FIELDS[0]));
    for (int64_t i = 0; i < n && i < capacity; ++i) {
        names[i] = METARL_FIELDS[i].name;
        offsets[i] = METARL_FIELDS[i].offset;
        sizes[i] = METARL_FIELDS[i].size;
    }
    return n;
}


// Run `steps` steps from step number t0 for P individuals, in place.
//   keys: noise stream keys (P,); obs_keys: sensor-noise stream keys (P,), or null when options->obs_noise is 0;
//   fitness (P,) float64 += each reward; rewards (steps, P) float32 or null;
//   states (steps, N_STATE, P) float32 or null receives the env state after each step; seen (steps, P)
//   float32 or null: the rewards the rule sees instead of its own.
// Returns 0, or a negative error code.
int64_t metarl_run(const Network* net, const Options* options, const GenomeMap* map, const Buffers* bufs,
                   int64_t P, int64_t steps, int64_t t0, int64_t threads, const uint32_t* keys,
                   const uint32_t* obs_keys, double* fitness, float* rewards, float* states, const float* seen) {
    Driver d;
    if (int code = d.init(*net, *options, *map, *bufs)) return code;
    if (d.o.obs_noise > 0.0f && !obs_keys) return -6;
    d.run(P, threads, [&](const Kernel& kernel, vf* v, int64_t p0, int lanes, Scratch& sc) {
        vu base, obs_base{};
        vd total;  // fitness += reward, step by step in float64 (as metarl/backends/lifetime.py)
        for (int l = 0; l < LANES; ++l) {
            base[l] = keys[p0 + (l < lanes ? l : 0)];
            if (obs_keys) obs_base[l] = obs_keys[p0 + (l < lanes ? l : 0)];
            total[l] = fitness[p0 + (l < lanes ? l : 0)];
        }
        const int n_state = N_STATE;
        for (int64_t s = 0; s < steps; ++s) {
            vf seen_s;
            if (seen) seen_s = Driver::gather(seen + s * P + p0, lanes);
            vf r = kernel.step(v, base, obs_base, (uint32_t)(t0 + s), sc, seen ? &seen_s : nullptr);
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
            kernel.rule(v, xs.data(), Driver::gather(reward + s * P + p0, lanes), (uint32_t)s, sc);
        }
    });
    return 0;
}

// metarl.core.rng.normal_at: out[p * count + c] = normal number offset + c of the stream with key base[p]
// (rule.h `vnormal`, as the sampling and sensor noise).
int64_t metarl_normal(int64_t P, int64_t offset, int64_t count, const uint32_t* base, float* out) {
    if (P < 0 || offset < 0 || count < 0 || offset + count > (int64_t{1} << 31)) return -1;
    for (int64_t p0 = 0; p0 < P; p0 += LANES) {
        const int lanes = (int)std::min<int64_t>(LANES, P - p0);
        vu b{};
        for (int l = 0; l < lanes; ++l) b[l] = base[p0 + l];
        for (int64_t c = 0; c < count; ++c) {
            vf z = vnormal(b, 2u * (uint32_t)(offset + c));
            for (int l = 0; l < lanes; ++l) out[(p0 + l) * count + c] = z[l];
        }
    }
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
