#pragma once
// Vector math of the native kernel: every value is a vector of LANES individuals (GCC vector
// extensions); elementary functions within 2 ulp (Cephes), and the counter-based hash of metarl/rng.py.

#include <cstdint>

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
