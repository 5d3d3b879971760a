#pragma once
// Vector math of the native kernel: every value is a vector of LANES individuals (GCC vector
// extensions); elementary functions within a few ulp (Cephes; tanh as Eigen's rational), and the
// counter-based hash of metarl/core/rng.py.
//
// Portable numbers: the kernel is built with -ffp-contract=off, so the compiler never fuses a
// multiply and an add by itself, and every fused multiply-add is written here as `fma` (one
// rounding, IEEE 754). Every operation is then correctly rounded and done in a fixed order, so the
// results are bit for bit the same for any -march and any x86-64 CPU with FMA (Intel or AMD, AVX2
// or AVX-512). No approximate instruction (rcpps, rsqrtps) and no libm call is used.

#include <cstdint>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#if defined(__x86_64__) && !defined(__FMA__)
#error "the native kernel needs FMA: build with -march=x86-64-v3 or newer (or native on a CPU with FMA)"
#endif

#ifndef METARL_S
#error "compile with -DMETARL_S=<signal_dim> -DMETARL_H=<state_dim>"
#endif

namespace {

constexpr int S = METARL_S;
constexpr int H = METARL_H;
constexpr int HS = H > 0 ? H : 1;  // storage size of a state (arrays of size 0 are not C++)
// Individuals per vector: one register. 16 on AVX-512; 8 elsewhere (GCC scalarises comparisons and
// `?:` on 64-byte vectors without AVX-512, one lane at a time). An individual's numbers do not
// depend on the width: lanes never mix.
// -DMETARL_LANES=n forces a width (the tests compare widths bit for bit).
#if !defined(METARL_LANES)
#if defined(__AVX512F__)
#define METARL_LANES 16
#else
#define METARL_LANES 8
#endif
#endif
constexpr int LANES = METARL_LANES;
constexpr int MAX_LAYERS = 8;
constexpr int MAX_SCALARS = 16;  // runtime scalars of a program (Options::scalars)
constexpr float PI = 3.14159265358979323846f;
static_assert(S >= 1, "signal_dim must be >= 1");

typedef float vf __attribute__((vector_size(4 * LANES)));
typedef int32_t vi __attribute__((vector_size(4 * LANES)));
typedef uint32_t vu __attribute__((vector_size(4 * LANES)));
typedef double vd __attribute__((vector_size(8 * LANES)));

inline vf splat(float x) { return vf{} + x; }
// a * b + c with one rounding, per lane.
inline vf fma(vf a, vf b, vf c) {
#if defined(__AVX512F__) && METARL_LANES == 16
    return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__FMA__) && METARL_LANES == 8
    return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
    vf r;  // any other width: fmaf per lane (the same single rounding)
    for (int l = 0; l < LANES; ++l) r[l] = __builtin_fmaf(a[l], b[l], c[l]);
    return r;
#endif
}
inline vf fma(vf a, float b, vf c) { return fma(a, splat(b), c); }
inline vf fma(vf a, vf b, float c) { return fma(a, b, splat(c)); }
inline vf fma(vf a, float b, float c) { return fma(a, splat(b), splat(c)); }
// a < b ? a : b and a > b ? a : b, per lane: x86's minps and maxps, which are exactly that (b where either
// is NaN, and where both are zeros of either sign). GCC writes the ternary as a compare and a blend.
inline vf vmin(vf a, vf b) {
#if defined(__AVX512F__) && METARL_LANES == 16
    return (vf)_mm512_min_ps((__m512)a, (__m512)b);
#elif defined(__AVX__) && METARL_LANES == 8
    return (vf)_mm256_min_ps((__m256)a, (__m256)b);
#else
    return a < b ? a : b;
#endif
}
inline vf vmax(vf a, vf b) {
#if defined(__AVX512F__) && METARL_LANES == 16
    return (vf)_mm512_max_ps((__m512)a, (__m512)b);
#elif defined(__AVX__) && METARL_LANES == 8
    return (vf)_mm256_max_ps((__m256)a, (__m256)b);
#else
    return a > b ? a : b;
#endif
}
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
    vf r = fma(n, -0.693359375f, x);
    r = fma(n, 2.12194440e-4f, r);
    vf p = fma(r, 1.9875691500e-4f, 1.3981999507e-3f);
    p = fma(p, r, 8.3334519073e-3f);
    p = fma(p, r, 4.1665795894e-2f);
    p = fma(p, r, 1.6666665459e-1f);
    p = fma(p, r, 5.0000001201e-1f);
    p = fma(p, r * r, r) + 1.0f;
    vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    return p * (vf)e;
}

// tanh within a few ulp (Eigen's generic_fast_tanh_float): a ratio of
// odd and even polynomials on x clamped to +-7.905, exactly +-1 beyond (float32 tanh is there).
// One division and 9 fused multiply-adds: no exp.
constexpr float TANH_CLAMP = 7.90531110763549805f;
inline vf vtanh(vf x) {
    vf c = vmax(splat(-TANH_CLAMP), vmin(splat(TANH_CLAMP), x));  // NaN stays NaN
    vf x2 = c * c;
    vf p = fma(x2, -2.76076847742355e-16f, 2.00018790482477e-13f);
    p = fma(p, x2, -8.60467152213735e-11f);
    p = fma(p, x2, 5.12229709037114e-08f);
    p = fma(p, x2, 1.48572235717979e-05f);
    p = fma(p, x2, 6.37261928875436e-04f);
    p = fma(p, x2, 4.89352455891786e-03f);
    vf q = fma(x2, 1.19825839466702e-06f, 1.18534705686654e-04f);
    q = fma(q, x2, 2.26843463243900e-03f);
    q = fma(q, x2, 4.89352518554385e-03f);
    vf t = (c * p) / q;
    t = x >= TANH_CLAMP ? splat(1.0f) : t;
    return x <= -TANH_CLAMP ? splat(-1.0f) : t;
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
    vf pc = fma(z, 2.443315711809948e-5f, -1.388731625493765e-3f);
    pc = fma(pc, z, 4.166664568298827e-2f);
    pc = fma(pc * z, z, fma(z, -0.5f, 1.0f));
    vf ps = fma(z, -1.9515295891e-4f, 8.3321608736e-3f);
    ps = fma(ps, z, -1.6666654611e-1f);
    ps = fma(ps * z, r, r);
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
    vf y = fma(x, 7.0376836292e-2f, -1.1514610310e-1f);
    y = fma(y, x, 1.1676998740e-1f);
    y = fma(y, x, -1.2420140846e-1f);
    y = fma(y, x, 1.4249322787e-1f);
    y = fma(y, x, -1.6668057665e-1f);
    y = fma(y, x, 2.0000714765e-1f);
    y = fma(y, x, -2.4999993993e-1f);
    y = fma(y, x, 3.3333331174e-1f);
    y = y * x * z;
    y = fma(ef, -2.12194440e-4f, y);
    y = fma(z, -0.5f, y);
    return fma(ef, 0.693359375f, x + y);
}

// Chris Wellons' lowbias32, as metarl/core/rng.py.
inline uint32_t hash32(uint32_t x) {
    x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; return x ^ (x >> 16);
}
inline vu vhash32(vu x) {
    x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; return x ^ (x >> 16);
}
// metarl.core.rng._uniform_at for one counter.
inline vf vuniform(vu base, uint32_t counter) {
    vu bits = vhash32(base ^ hash32(counter));
    return (__builtin_convertvector(bits >> 8, vf) + 0.5f) * (1.0f / 16777216.0f);
}

}  // namespace
