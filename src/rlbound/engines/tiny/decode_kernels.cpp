// Fused CPU kernels of the tiny model's decoding step (one new token per row), built on first use
// by rlbound.engines.tiny.kernels. What they replace, per layer, is a few dozen small torch
// operations whose fixed cost dominated a CPU decoding step: RMSNorm, SwiGLU's gate, and all of
// attention (rotary embedding of q and k, the cache write, scores over a shared prompt prefix and
// the row's own columns, float32 softmax, the weighted sum of values). In float32, or without
// AVX512-BF16, the matmuls stay torch's; in bfloat16 with AVX512-BF16 decode_layers runs every layer
// of a step, its matmuls included (dot products over packed weights), one parallel region per layer.
//
// Formats: activations float32 or bfloat16 (the weights' format); the cache float32 or bfloat16;
// every sum, the softmax and the norms in float32. Rows and heads are independent tasks spread
// over torch's intra-op threads (at::parallel_for), so results do not depend on the thread count.

#include <torch/extension.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <algorithm>
#include <vector>

namespace {

using bf16 = c10::BFloat16;

// ---- 16 floats at a time: AVX-512 where the compiler targets it, plain loops elsewhere --------
// Loads and stores take a count n <= 16 (the tail of a row); bfloat16 is read by widening and
// written rounded to nearest even, as torch rounds.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
struct F16 {
    __m512 v;
};
inline __mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }
inline F16 splat(float x) { return {_mm512_set1_ps(x)}; }
inline F16 load(const float* p, int64_t n) { return {_mm512_maskz_loadu_ps(lanes(n), p)}; }
inline F16 load(const bf16* p, int64_t n) {
    __m256i raw = _mm256_maskz_loadu_epi16(lanes(n), p);
    return {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16))};
}
inline __m512i bf16_bits(F16 x) {  // round to nearest even, as the upper 16 bits of each lane
    __m512i u = _mm512_castps_si512(x.v);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    return _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))), 16);
}
inline void store(float* p, F16 x, int64_t n) { _mm512_mask_storeu_ps(p, lanes(n), x.v); }
inline void store(bf16* p, F16 x, int64_t n) {
    _mm256_mask_storeu_epi16(p, lanes(n), _mm512_cvtepi32_epi16(bf16_bits(x)));
}
inline F16 round_bf16(F16 x) { return {_mm512_castsi512_ps(_mm512_slli_epi32(bf16_bits(x), 16))}; }
inline F16 operator+(F16 a, F16 b) { return {_mm512_add_ps(a.v, b.v)}; }
inline F16 operator*(F16 a, F16 b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline F16 fma(F16 a, F16 b, F16 c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline float sum(F16 a) { return _mm512_reduce_add_ps(a.v); }
inline F16 div(F16 a, F16 b) { return {_mm512_div_ps(a.v, b.v)}; }
// exp: 2^k * p(r), x = k ln2 + r, |r| <= ln2 / 2, p of degree 6 (about 1 ulp); -inf gives 0
inline F16 exp(F16 x) {
    __m512 xc = _mm512_max_ps(x.v, _mm512_set1_ps(-104.f));
    xc = _mm512_min_ps(xc, _mm512_set1_ps(88.7f));
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), xc);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
    __m512 out = _mm512_scalef_ps(p, k);
    return {_mm512_mask_blend_ps(_mm512_cmp_ps_mask(x.v, _mm512_set1_ps(-104.f), _CMP_LT_OQ), out,
                                 _mm512_setzero_ps())};
}
#else
struct F16 {
    float v[16];
};
inline F16 splat(float x) { F16 o; for (int i = 0; i < 16; ++i) o.v[i] = x; return o; }
inline float widen(float x) { return x; }
inline float widen(bf16 x) {
    uint32_t bits = static_cast<uint32_t>(x.x) << 16;
    float out;
    std::memcpy(&out, &bits, sizeof(out));
    return out;
}
template <typename T> inline F16 load(const T* p, int64_t n) {
    F16 o = splat(0.f);
    for (int64_t i = 0; i < n && i < 16; ++i) o.v[i] = widen(p[i]);
    return o;
}
inline void store(float* p, F16 x, int64_t n) { for (int64_t i = 0; i < n && i < 16; ++i) p[i] = x.v[i]; }
inline void store(bf16* p, F16 x, int64_t n) { for (int64_t i = 0; i < n && i < 16; ++i) p[i] = bf16(x.v[i]); }
inline F16 round_bf16(F16 x) { for (float& f : x.v) f = static_cast<float>(bf16(f)); return x; }
#define RLBOUND_LANES(expr) F16 o; for (int i = 0; i < 16; ++i) o.v[i] = (expr); return o
inline F16 operator+(F16 a, F16 b) { RLBOUND_LANES(a.v[i] + b.v[i]); }
inline F16 operator*(F16 a, F16 b) { RLBOUND_LANES(a.v[i] * b.v[i]); }
inline F16 fma(F16 a, F16 b, F16 c) { RLBOUND_LANES(std::fma(a.v[i], b.v[i], c.v[i])); }
inline F16 div(F16 a, F16 b) { RLBOUND_LANES(a.v[i] / b.v[i]); }
inline F16 exp(F16 x) { RLBOUND_LANES(std::exp(x.v[i])); }
#undef RLBOUND_LANES
inline float sum(F16 a) { float s = 0.f; for (float f : a.v) s += f; return s; }
#endif

template <typename T> inline F16 rounded(F16 x);  // the values once stored in format T
template <> inline F16 rounded<float>(F16 x) { return x; }
template <> inline F16 rounded<bf16>(F16 x) { return round_bf16(x); }

#if defined(__AVX512BF16__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define RLBOUND_BF16_DOT 1  // AVX512-BF16: dot products of bfloat16 pairs into float32 (vdpbf16ps)
constexpr bool kHasBf16Dot = true;
#else
constexpr bool kHasBf16Dot = false;
#endif

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

template <typename T>
void rms_norm_impl(const T* x, const T* w, T* out, int64_t rows, int64_t d, double eps) {
    at::parallel_for(0, rows, 16, [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
            const T* xr = x + r * d;
            F16 sq = splat(0.f);
            for (int64_t i = 0; i < d; i += 16) {
                F16 v = load(xr + i, d - i);
                sq = fma(v, v, sq);
            }
            const F16 scale = splat(1.f / std::sqrt(sum(sq) / static_cast<float>(d) + static_cast<float>(eps)));
            T* o = out + r * d;
            for (int64_t i = 0; i < d; i += 16) store(o + i, load(xr + i, d - i) * scale * load(w + i, d - i), d - i);
        }
    });
}

template <typename T>
void silu_mul_impl(const T* gu, T* out, int64_t rows, int64_t f) {
    const F16 one = splat(1.f), minus = splat(-1.f);
    at::parallel_for(0, rows, 16, [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
            const T* g = gu + r * 2 * f;
            T* o = out + r * f;
            for (int64_t i = 0; i < f; i += 16) {
                F16 gv = load(g + i, f - i);
                // torch rounds silu's result to the format before the product
                F16 silu = rounded<T>(div(gv, one + exp(gv * minus)));
                store(o + i, silu * load(g + f + i, f - i), f - i);
            }
        }
    });
}

// Head sizes: CH > 0 is a head of exactly 16 * CH floats (the loops unroll and the accumulators
// stay in registers); CH = 0 any even size up to 16 * kMaxHeadChunks, its tail masked.
constexpr int kMaxHeadChunks = 16;
template <int CH> inline int64_t chunks_of(int64_t hd) { return CH ? CH : (hd + 15) / 16; }
template <int CH> inline int64_t lanes_of(int64_t hd, int64_t j) { return CH ? 16 : hd - 16 * j; }

template <typename C, int CH>
inline F16 products(const F16* q, const C* k, int64_t hd) {  // lane sums of q . k, per chunk added
    F16 acc = q[0] * load(k, lanes_of<CH>(hd, 0));
    for (int64_t j = 1; j < chunks_of<CH>(hd); ++j) acc = fma(q[j], load(k + 16 * j, lanes_of<CH>(hd, j)), acc);
    return acc;
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
// lane c of the result = the sum of a[c]'s 16 lanes (a transposing reduction: about three
// shuffles and adds per vector instead of a full horizontal sum each)
inline F16 sums16(const F16* a) {
    __m512 t[8], u[4];
    for (int j = 0; j < 8; ++j)
        t[j] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * j].v, a[2 * j + 1].v), _mm512_unpackhi_ps(a[2 * j].v, a[2 * j + 1].v));
    for (int j = 0; j < 4; ++j)
        u[j] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * j], t[2 * j + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(t[2 * j], t[2 * j + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 w0 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
    __m512 w1 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(3, 1, 3, 1)));
    return {_mm512_add_ps(_mm512_shuffle_f32x4(w0, w1, _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_shuffle_f32x4(w0, w1, _MM_SHUFFLE(3, 1, 3, 1)))};
}
#else
inline F16 sums16(const F16* a) {
    F16 o;
    for (int c = 0; c < 16; ++c) o.v[c] = sum(a[c]);
    return o;
}
#endif

// scores[c] = q . keys[c] for c < n (keys: n rows of hd), 16 columns at a time
template <typename C, int CH>
inline void scores_of(const F16* q, const C* keys, int64_t n, int64_t hd, float* scores) {
    F16 part[16];
    for (int64_t c0 = 0; c0 < n; c0 += 16) {
        const int64_t m = std::min<int64_t>(16, n - c0);
        if (m == 16) {
            for (int64_t c = 0; c < 16; ++c) part[c] = products<C, CH>(q, keys + (c0 + c) * hd, hd);
        } else {
            for (int64_t c = 0; c < m; ++c) part[c] = products<C, CH>(q, keys + (c0 + c) * hd, hd);
            for (int64_t c = m; c < 16; ++c) part[c] = splat(0.f);
        }
        store(scores + c0, sums16(part), m);
    }
}

#ifdef RLBOUND_BF16_DOT
// scores[c] = scale * (q . keys[c]) for c < n, bfloat16 q and keys of hd = 32 * vecs: one dot-product
// instruction per 32 dimensions of a column, then the transposing sum of 16 columns' lanes
template <int VECS>
inline void scores_of_bf16_dot(const bf16* q, const bf16* keys, int64_t n, float scale, float* scores) {
    constexpr int64_t hd = 32 * VECS;
    __m512bh qv[VECS];
    for (int v = 0; v < VECS; ++v) qv[v] = (__m512bh)_mm512_loadu_si512(q + 32 * v);
    F16 part[16];
    for (int64_t c0 = 0; c0 < n; c0 += 16) {
        const int64_t m = std::min<int64_t>(16, n - c0);
        for (int64_t c = 0; c < 16; ++c) {
            __m512 acc = _mm512_setzero_ps();
            if (c < m)
                for (int v = 0; v < VECS; ++v)
                    acc = _mm512_dpbf16_ps(acc, qv[v], (__m512bh)_mm512_loadu_si512(keys + (c0 + c) * hd + 32 * v));
            part[c] = {acc};
        }
        store(scores + c0, sums16(part) * splat(scale), m);
    }
}
#endif

// scores[c] = q . column c of keys_t (hd rows of n columns: keys transposed), 16 columns at a time
// with four partial sums over the head's dimensions (no horizontal sums, short dependency chains)
inline void scores_of_transposed(const float* q, const float* keys_t, int64_t n, int64_t hd, float* scores) {
    for (int64_t c0 = 0; c0 < n; c0 += 16) {
        const int64_t m = n - c0;
        F16 a0 = splat(0.f), a1 = a0, a2 = a0, a3 = a0;
        int64_t i = 0;
        for (; i + 3 < hd; i += 4) {
            a0 = fma(splat(q[i]), load(keys_t + i * n + c0, m), a0);
            a1 = fma(splat(q[i + 1]), load(keys_t + (i + 1) * n + c0, m), a1);
            a2 = fma(splat(q[i + 2]), load(keys_t + (i + 2) * n + c0, m), a2);
            a3 = fma(splat(q[i + 3]), load(keys_t + (i + 3) * n + c0, m), a3);
        }
        for (; i < hd; ++i) a0 = fma(splat(q[i]), load(keys_t + i * n + c0, m), a0);
        store(scores + c0, (a0 + a1) + (a2 + a3), m);
    }
}

// out += sum over c < n of p[c] * values[c] (two accumulator sets: two columns in flight)
template <typename C, int CH>
inline void weighted_sum(const float* p, const C* values, int64_t n, int64_t hd, F16* out) {
    constexpr int K = CH ? CH : kMaxHeadChunks;
    const int64_t chunks = chunks_of<CH>(hd);
    F16 a[K], b[K];
    for (int64_t j = 0; j < chunks; ++j) a[j] = b[j] = splat(0.f);
    int64_t c = 0;
    for (; c + 1 < n; c += 2) {
        const F16 p0 = splat(p[c]), p1 = splat(p[c + 1]);
        const C *v0 = values + c * hd, *v1 = v0 + hd;
        for (int64_t j = 0; j < chunks; ++j) {
            a[j] = fma(p0, load(v0 + 16 * j, lanes_of<CH>(hd, j)), a[j]);
            b[j] = fma(p1, load(v1 + 16 * j, lanes_of<CH>(hd, j)), b[j]);
        }
    }
    if (c < n) {
        const F16 p0 = splat(p[c]);
        for (int64_t j = 0; j < chunks; ++j) a[j] = fma(p0, load(values + c * hd + 16 * j, lanes_of<CH>(hd, j)), a[j]);
    }
    for (int64_t j = 0; j < chunks; ++j) out[j] = out[j] + a[j] + b[j];
}

// rope of one head's q or k, rotate-half convention, in format T's rounding: x*cos + swap(x)*sin
template <typename T>
inline void rope(const T* x, const float* c, const float* s, int64_t hd, F16* out) {
    const int64_t half = hd / 2;
    for (int64_t i = 0, j = 0; i < hd; i += 16, ++j) {
        const int64_t n = std::min<int64_t>(16, hd - i);
        F16 own = load(x + i, n), other;
        if (half % 16 == 0) {  // lanes i..i+n of the swapped halves [x[half:], x[:half]]: one load
            other = load(x + (i < half ? i + half : i - half), n);
        } else {
            float swapped[16] = {0};
            for (int64_t l = 0; l < n; ++l) swapped[l] = static_cast<float>(x[i + l < half ? i + l + half : i + l - half]);
            other = load(swapped, n);
        }
        out[j] = rounded<T>(rounded<T>(own * load(c + i, n)) + rounded<T>(other * load(s + i, n)));
    }
}

// One decoding step's attention for every row r and head h:
//   q, k = rope(qkv[r, 0:d]), rope(qkv[r, d:2d]) (rounded to T); keys/values[r, h, start] = k, v;
//   scores over the prefix columns of the row's prompt (prefix_bias added) and the row's own
//   columns 0..start (own_valid masks padding; column start always visible); softmax in float32;
//   out[r, h*hd:(h+1)*hd] = probabilities times values.
template <typename T, typename C, int CH>
void decode_attention_impl(const T* qkv, const float* cos, const float* sin, const int64_t* positions, C* keys, C* values,
                           int64_t b, int64_t heads, int64_t hd, int64_t cols, int64_t start,
                           const bool* own_valid, int64_t valid_stride,
                           const float* pk, const float* pv, const int64_t* row_prompt,
                           const float* prefix_bias, int64_t width, T* out) {
    const int64_t d = heads * hd, chunks = (hd + 15) / 16;
    const float scale_value = 1.f / std::sqrt(static_cast<float>(hd));
    const F16 scale = splat(scale_value);
    at::parallel_for(0, b * heads, 8, [&](int64_t lo, int64_t hi) {
        std::vector<float> scores(width + start + 1 + 16);
        F16 q[kMaxHeadChunks], kr[kMaxHeadChunks], acc[kMaxHeadChunks];
        for (int64_t task = lo; task < hi; ++task) {
            const int64_t r = task / heads, h = task % heads;
            const T* row = qkv + r * 3 * d;
            const float *c = cos + positions[r] * hd, *s = sin + positions[r] * hd;
            C* kcache = keys + ((r * heads + h) * cols) * hd;
            C* vcache = values + ((r * heads + h) * cols) * hd;
            if (task + 1 < hi) {  // the next task's columns: their memory latency overlaps this task
                const int64_t nr = (task + 1) / heads, nh = (task + 1) % heads;
                const char* nk = reinterpret_cast<const char*>(keys + ((nr * heads + nh) * cols) * hd);
                const char* nv = reinterpret_cast<const char*>(values + ((nr * heads + nh) * cols) * hd);
                for (int64_t off = 0; off < (start + 1) * hd * static_cast<int64_t>(sizeof(C)); off += 64) {
                    __builtin_prefetch(nk + off);
                    __builtin_prefetch(nv + off);
                }
            }
            rope(row + h * hd, c, s, hd, q);
            rope(row + d + h * hd, c, s, hd, kr);
            // the own columns' scores by bfloat16 dot products where the CPU has them (q is a
            // bfloat16 number once rounded, so the dot products see exactly it; the scale after)
            constexpr bool kDot = kHasBf16Dot && std::is_same<C, bf16>::value && CH > 0 && CH % 2 == 0;
            alignas(64) bf16 qb[16 * kMaxHeadChunks];
            for (int64_t i = 0, j = 0; i < hd; i += 16, ++j) {
                q[j] = rounded<C>(q[j]);
                if (kDot) store(qb + i, q[j], hd - i);
                q[j] = q[j] * scale;
                store(kcache + start * hd + i, kr[j], hd - i);
                store(vcache + start * hd + i, load(row + 2 * d + h * hd + i, hd - i), hd - i);
            }
            float* sc = scores.data();
            const float *pkh = nullptr, *pvh = nullptr;
            float qs[16 * kMaxHeadChunks];
            if (width > 0) {
                const int64_t p = row_prompt[r];
                pkh = pk + ((p * heads + h) * width) * hd;  // [head_dim, width]: transposed
                pvh = pv + ((p * heads + h) * width) * hd;
                for (int64_t i = 0, j = 0; i < hd; i += 16, ++j) store(qs + i, q[j], hd - i);
                scores_of_transposed(qs, pkh, width, hd, sc);
                if (prefix_bias)
                    for (int64_t col = 0; col < width; ++col) sc[col] += prefix_bias[p * width + col];
            }
#ifdef RLBOUND_BF16_DOT
            if constexpr (kDot)
                scores_of_bf16_dot<CH / 2>(qb, reinterpret_cast<const bf16*>(kcache), start + 1, scale_value, sc + width);
            else
#endif
                scores_of<C, CH>(q, kcache, start + 1, hd, sc + width);
            if (own_valid) {
                const bool* valid = own_valid + r * valid_stride;
                for (int64_t col = 0; col < start; ++col)
                    if (!valid[col]) sc[width + col] = kNegInf;
            }
            const int64_t n = width + start + 1;
            float m = kNegInf;
            for (int64_t i = 0; i < n; ++i) m = std::max(m, sc[i]);
            const F16 shift = splat(-m);
            F16 total = splat(0.f);
            for (int64_t i = 0; i < n; i += 16) {
                store(sc + i, exp(load(sc + i, n - i) + shift), n - i);
                total = total + load(sc + i, n - i);  // (the tail lanes past n load as 0)
            }
            const float inv = 1.f / sum(total);
            for (int64_t j = 0; j < chunks; ++j) acc[j] = splat(0.f);
            if (width > 0) weighted_sum<float, CH>(sc, pvh, width, hd, acc);
            weighted_sum<C, CH>(sc + width, vcache, start + 1, hd, acc);
            T* o = out + r * d + h * hd;
            const F16 norm = splat(inv);
            for (int64_t i = 0, j = 0; i < hd; i += 16, ++j) store(o + i, acc[j] * norm, hd - i);
        }
    });
}

#ifdef RLBOUND_BF16_DOT
// ---- bfloat16 matmuls by AVX512-BF16 dot products (vdpbf16ps), for whole decoding layers -----
// A layer of a few rows is too small for a library GEMM's fixed cost per call (oneDNN spends about
// 17 us per bfloat16 call on an AMD EPYC whatever the size). Here a weight W [n, k] (a torch Linear's)
// is packed as [n / 16][k / 2][16][2] (pack: w.view(n/16, 16, k/2, 2).transpose(1, 2)), so one 64-byte
// load holds a pair of k for 16 output columns and one instruction adds both products to 16
// float32 sums. Tiles of kRows rows x 64 columns (16 accumulators in registers).
constexpr int64_t kRows = 4;

template <int MR>
inline void dot_tile(const bf16* a, int64_t lda, const bf16* wp, int64_t pairs, int64_t nb0, float* c, int64_t ldc) {
    __m512 acc[MR][4];
    for (int r = 0; r < MR; ++r)
        for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_setzero_ps();
    const bf16* w0 = wp + nb0 * pairs * 32;
    const int64_t stride = pairs * 32;  // one 16-column block of the packed weight
    for (int64_t kp = 0; kp < pairs; ++kp) {
        // each row's pair broadcast once and each weight vector loaded once (weights outer: with
        // rows outer the compiler reloaded every weight vector for every row, one 64-byte load
        // per dot product, which made the loop load-bound)
        __m512bh x[MR];
        for (int r = 0; r < MR; ++r) {
            int32_t pair;
            std::memcpy(&pair, a + r * lda + 2 * kp, sizeof pair);
            x[r] = (__m512bh)_mm512_set1_epi32(pair);
        }
        for (int v = 0; v < 4; ++v) {
            const __m512bh w = (__m512bh)_mm512_loadu_si512(w0 + v * stride + kp * 32);
            for (int r = 0; r < MR; ++r) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], x[r], w);
        }
    }
    for (int r = 0; r < MR; ++r)
        for (int v = 0; v < 4; ++v) _mm512_storeu_ps(c + r * ldc + nb0 * 16 + v * 16, acc[r][v]);
}

// Prefetches spread over compute-bound work: the cache columns a later block's attention reads
// (its keys and values, `bytes` per row and head, `segments` of them `stride` bytes apart), a
// few 64-byte lines after each matmul tile, so that the memory traffic of attention (the most of
// it: every step reads the whole cache) overlaps the matmuls instead of following them. Into L2
// (prefetcht1), not L1: prefetches into L1 stalled the matmul loop once L1's few outstanding-miss
// slots were full (their loop was 16 % of the layer kernel's time in a profile), and the columns
// need not displace the weight tiles from L1 before attention reads them.
struct Prefetch {
    const char *keys = nullptr, *values = nullptr;
    int64_t stride = 0, segments = 0, bytes = 0, per_tile = 0;
    int64_t seg = 0, off = 0;
    void tile() {
        for (int64_t n = 0; n < per_tile && seg < segments; ++n) {
            __builtin_prefetch(keys + seg * stride + off, 0, 2);
            __builtin_prefetch(values + seg * stride + off, 0, 2);
            if ((off += 64) >= bytes) off = 0, ++seg;
        }
    }
};

// c[r, :n] = a[r, :k] . W^T in float32 for r < rows (W packed as above; n a multiple of 64, k even)
inline void dot_rows(const bf16* a, int64_t lda, int64_t rows, const bf16* wp, int64_t n, int64_t k, float* c,
                     Prefetch* ahead = nullptr) {
    const int64_t pairs = k / 2;
    for (int64_t nb0 = 0; nb0 < n / 16; nb0 += 4)
        for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
            const bf16* ar = a + r0 * lda;
            float* cr = c + r0 * n;
            switch (std::min<int64_t>(kRows, rows - r0)) {
                case 4: dot_tile<4>(ar, lda, wp, pairs, nb0, cr, n); break;
                case 3: dot_tile<3>(ar, lda, wp, pairs, nb0, cr, n); break;
                case 2: dot_tile<2>(ar, lda, wp, pairs, nb0, cr, n); break;
                default: dot_tile<1>(ar, lda, wp, pairs, nb0, cr, n); break;
            }
            if (ahead) ahead->tile();
        }
}

inline void round_rows(const float* c, int64_t count, bf16* out) {  // out = c in bfloat16
    for (int64_t i = 0; i < count; i += 16) store(out + i, load(c + i, count - i), count - i);
}

inline void add_rows(const float* c, int64_t count, bf16* x) {  // x = bfloat16(x + c), rounded once
    for (int64_t i = 0; i < count; i += 16) store(x + i, load(x + i, count - i) + load(c + i, count - i), count - i);
}
#endif

// Inverse-CDF sampling of one token per row at temperature t, as rlbound.engines.sampling's
// sample_next computes it without top-k/top-p: probabilities softmax(logits / t) in float32, their
// running sum in float64, the first token whose running sum exceeds u * total; with the chosen
// token's untempered log-probability and the row's entropy (nats), from log_softmax(logits).
void sample_rows_impl(const float* logits, const double* u, double t, int64_t rows, int64_t vocab,
                      int64_t* tokens, float* logprobs, float* entropies) {
    const F16 inv_t = splat(static_cast<float>(1.0 / t));
    const bool tempered = t != 1.0;
    at::parallel_for(0, rows, 16, [&](int64_t lo, int64_t hi) {
        std::vector<float> probs(vocab + 16), logp(vocab + 16);
        for (int64_t r = lo; r < hi; ++r) {
            const float* x = logits + r * vocab;
            float m = kNegInf;
            for (int64_t i = 0; i < vocab; ++i) m = std::max(m, x[i]);
            const float ms = tempered ? m / static_cast<float>(t) : m;
            // untempered: exp(x - m), its sum; log-probs x - m - log(sum)
            F16 total = splat(0.f), scaled_total = splat(0.f);
            for (int64_t i = 0; i < vocab; i += 16) {
                const int64_t n = vocab - i;
                F16 v = load(x + i, n);
                store(logp.data() + i, exp(v + splat(-m)), n);
                total = total + load(logp.data() + i, n);
                if (tempered) {
                    store(probs.data() + i, exp(v * inv_t + splat(-ms)), n);
                    scaled_total = scaled_total + load(probs.data() + i, n);
                }
            }
            const float sum_e = sum(total);
            const float lse = m + std::log(sum_e);
            double ent = 0.0;
            const float inv_sum = 1.f / sum_e;
            for (int64_t i = 0; i < vocab; ++i) {
                const float p = logp[i] * inv_sum;
                const float lp = x[i] - lse;
                if (p > 0.f) ent -= static_cast<double>(p) * lp;
                if (!tempered) probs[i] = p;
                logp[i] = lp;
            }
            if (tempered) {
                const float inv = 1.f / sum(scaled_total);
                for (int64_t i = 0; i < vocab; ++i) probs[i] *= inv;
            }
            double cdf_total = 0.0;
            for (int64_t i = 0; i < vocab; ++i) cdf_total += probs[i];
            const double target = u[r] * cdf_total;
            double running = 0.0;
            int64_t chosen = vocab - 1;
            for (int64_t i = 0; i < vocab; ++i) {
                running += probs[i];
                if (running > target) {
                    chosen = i;
                    break;
                }
            }
            tokens[r] = chosen;
            logprobs[r] = logp[chosen];
            entropies[r] = static_cast<float>(ent);
        }
    });
}

void check(bool ok, const char* what) { TORCH_CHECK(ok, "tiny decode kernels: ", what); }

bool is_bf16(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16; }

void check_format(const at::Tensor& t, const char* what) {
    check(t.is_contiguous() && (t.scalar_type() == at::kFloat || is_bf16(t)), what);
}

}  // namespace

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
    check_format(x, "rms_norm: x must be contiguous float32 or bfloat16");
    check(weight.scalar_type() == x.scalar_type() && weight.is_contiguous() && weight.numel() == x.size(-1),
          "rms_norm: weight must match x's format and last dimension");
    auto out = at::empty_like(x);
    const int64_t d = x.size(-1), rows = x.numel() / d;
    if (is_bf16(x))
        rms_norm_impl(x.data_ptr<bf16>(), weight.data_ptr<bf16>(), out.data_ptr<bf16>(), rows, d, eps);
    else
        rms_norm_impl(x.data_ptr<float>(), weight.data_ptr<float>(), out.data_ptr<float>(), rows, d, eps);
    return out;
}

at::Tensor silu_mul(const at::Tensor& gate_up) {
    check_format(gate_up, "silu_mul: gate_up must be contiguous float32 or bfloat16");
    const int64_t f = gate_up.size(-1) / 2, rows = gate_up.numel() / gate_up.size(-1);
    auto sizes = gate_up.sizes().vec();
    sizes.back() = f;
    auto out = at::empty(sizes, gate_up.options());
    if (is_bf16(gate_up))
        silu_mul_impl(gate_up.data_ptr<bf16>(), out.data_ptr<bf16>(), rows, f);
    else
        silu_mul_impl(gate_up.data_ptr<float>(), out.data_ptr<float>(), rows, f);
    return out;
}

// What a step's attention reads besides q/k/v, checked once (decode_attention, decode_layers)
struct AttentionInputs {
    int64_t b = 0, heads = 0, cols = 0, hd = 0, width = 0, valid_stride = 0;
    const int64_t* pos = nullptr;
    const bool* valid = nullptr;
    const float *pk = nullptr, *pv = nullptr, *pbias = nullptr;
    const int64_t* prompts = nullptr;
};

AttentionInputs attention_inputs(const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& positions,
                                 const at::Tensor& keys, const at::Tensor& values, int64_t start,
                                 const c10::optional<at::Tensor>& own_valid,
                                 const c10::optional<at::Tensor>& prefix_kt, const c10::optional<at::Tensor>& prefix_v,
                                 const c10::optional<at::Tensor>& row_prompt,
                                 const c10::optional<at::Tensor>& prefix_bias) {
    check_format(keys, "decode_attention: keys must be a contiguous float32 or bfloat16 cache");
    check(values.sizes() == keys.sizes() && values.scalar_type() == keys.scalar_type() && values.is_contiguous(),
          "decode_attention: values must match keys");
    check(keys.dim() == 4, "decode_attention: keys must be [batch, heads, columns, head_dim]");
    AttentionInputs in;
    const int64_t b = in.b = keys.size(0), heads = in.heads = keys.size(1), cols = in.cols = keys.size(2),
                  hd = in.hd = keys.size(3);
    check(hd % 2 == 0 && hd <= 16 * kMaxHeadChunks, "decode_attention: head_dim must be even and at most 256");
    check(start >= 0 && start < cols, "decode_attention: start must be a column of the cache");
    check(cos.scalar_type() == at::kFloat && sin.scalar_type() == at::kFloat && cos.is_contiguous() && sin.is_contiguous()
          && cos.dim() == 2 && cos.size(1) == hd && sin.sizes() == cos.sizes(),
          "decode_attention: cos and sin must be float32 tables [max_seq_len, head_dim]");
    check(positions.scalar_type() == at::kLong && positions.is_contiguous() && positions.numel() == b,
          "decode_attention: positions must be int64 [batch]");
    const int64_t* pos = in.pos = positions.data_ptr<int64_t>();
    for (int64_t r = 0; r < b; ++r)
        TORCH_CHECK(pos[r] >= 0 && pos[r] < cos.size(0), "tiny model: position ", pos[r], " is beyond max_seq_len ", cos.size(0));
    if (own_valid && own_valid->defined()) {
        check(own_valid->scalar_type() == at::kBool && own_valid->dim() == 2 && own_valid->size(0) == b
              && own_valid->size(1) > start && own_valid->stride(1) == 1,
              "decode_attention: own_valid must be bool [batch, > start] with contiguous rows");
        in.valid = own_valid->data_ptr<bool>();
        in.valid_stride = own_valid->stride(0);
    }
    if (prefix_kt && prefix_kt->defined()) {
        check(prefix_v && prefix_v->defined() && row_prompt && row_prompt->defined(),
              "decode_attention: a prefix needs prefix_v and row_prompt");
        check(prefix_kt->scalar_type() == at::kFloat && prefix_v->scalar_type() == at::kFloat && prefix_kt->is_contiguous()
              && prefix_v->is_contiguous() && prefix_kt->dim() == 4 && prefix_v->dim() == 4 && prefix_kt->size(1) == heads
              && prefix_kt->size(2) == hd && prefix_v->size(3) == hd && prefix_v->size(0) == prefix_kt->size(0)
              && prefix_v->size(1) == heads && prefix_v->size(2) == prefix_kt->size(3),
              "decode_attention: prefix keys must be contiguous float32 [prompts, heads, head_dim, width] (transposed), "
              "values [prompts, heads, width, head_dim]");
        check(row_prompt->scalar_type() == at::kLong && row_prompt->is_contiguous() && row_prompt->numel() == b,
              "decode_attention: row_prompt must be int64 [batch]");
        const int64_t width = in.width = prefix_kt->size(3);
        in.pk = prefix_kt->data_ptr<float>();
        in.pv = prefix_v->data_ptr<float>();
        in.prompts = row_prompt->data_ptr<int64_t>();
        const int64_t n_prompts = prefix_kt->size(0);
        auto rp = row_prompt->accessor<int64_t, 1>();
        for (int64_t r = 0; r < b; ++r) check(rp[r] >= 0 && rp[r] < n_prompts, "decode_attention: row_prompt out of range");
        if (prefix_bias && prefix_bias->defined()) {
            check(prefix_bias->scalar_type() == at::kFloat && prefix_bias->is_contiguous()
                  && prefix_bias->numel() == n_prompts * width, "decode_attention: prefix_bias must be float32 [prompts, width]");
            in.pbias = prefix_bias->data_ptr<float>();
        }
    }
    return in;
}

// decode_attention_impl for rows r0 .. r0 + rows of in's batch (qkv and out: those rows' own),
// its head size dispatched to the unrolled loops
template <typename T, typename C>
void attend(const AttentionInputs& in, const T* qkv, const float* cos, const float* sin, C* keys, C* values,
            int64_t start, int64_t r0, int64_t rows, T* out) {
    const int64_t cache_row = in.heads * in.cols * in.hd;
    const bool* valid = in.valid ? in.valid + r0 * in.valid_stride : nullptr;
    const int64_t* prompts = in.prompts ? in.prompts + r0 : nullptr;
#define RLBOUND_ATTEND(CH)                                                                                        \
    decode_attention_impl<T, C, CH>(qkv, cos, sin, in.pos + r0, keys + r0 * cache_row, values + r0 * cache_row, rows, \
                                    in.heads, in.hd, in.cols, start, valid, in.valid_stride, in.pk, in.pv, prompts,   \
                                    in.pbias, in.width, out)
    switch (in.hd) {
        case 16: RLBOUND_ATTEND(1); break;
        case 32: RLBOUND_ATTEND(2); break;
        case 64: RLBOUND_ATTEND(4); break;
        default: RLBOUND_ATTEND(0); break;
    }
#undef RLBOUND_ATTEND
}

at::Tensor decode_attention(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                            const at::Tensor& positions, at::Tensor keys, at::Tensor values, int64_t start,
                            const c10::optional<at::Tensor>& own_valid,
                            const c10::optional<at::Tensor>& prefix_kt, const c10::optional<at::Tensor>& prefix_v,
                            const c10::optional<at::Tensor>& row_prompt,
                            const c10::optional<at::Tensor>& prefix_bias) {
    check_format(qkv, "decode_attention: qkv must be contiguous float32 or bfloat16 [batch, 3 * d_model]");
    const AttentionInputs in = attention_inputs(cos, sin, positions, keys, values, start, own_valid, prefix_kt, prefix_v,
                                                row_prompt, prefix_bias);
    const int64_t b = in.b, heads = in.heads, cols = in.cols, hd = in.hd;
    check(qkv.dim() == 2 && qkv.size(0) == b && qkv.size(1) == 3 * heads * hd,
          "decode_attention: qkv must be [batch, 3 * heads * head_dim] of the cache");
    auto out = at::empty({b, heads * hd}, qkv.options());
    const float *c = cos.data_ptr<float>(), *sn = sin.data_ptr<float>();
    if (is_bf16(qkv) && is_bf16(keys)) attend(in, qkv.data_ptr<bf16>(), c, sn, keys.data_ptr<bf16>(), values.data_ptr<bf16>(), start, 0, b, out.data_ptr<bf16>());
    else if (is_bf16(qkv)) attend(in, qkv.data_ptr<bf16>(), c, sn, keys.data_ptr<float>(), values.data_ptr<float>(), start, 0, b, out.data_ptr<bf16>());
    else if (is_bf16(keys)) attend(in, qkv.data_ptr<float>(), c, sn, keys.data_ptr<bf16>(), values.data_ptr<bf16>(), start, 0, b, out.data_ptr<float>());
    else attend(in, qkv.data_ptr<float>(), c, sn, keys.data_ptr<float>(), values.data_ptr<float>(), start, 0, b, out.data_ptr<float>());
    return out;
}

bool bf16_dot_available() {
#ifdef RLBOUND_BF16_DOT
    return true;
#else
    return false;
#endif
}

// a [rows, k] times a packed weight (see dot_tile) transposed, float32 [rows, n]: the layers'
// matmul on its own, for tests and benchmarks
at::Tensor packed_linear(const at::Tensor& a, const at::Tensor& packed) {
#ifndef RLBOUND_BF16_DOT
    TORCH_CHECK(false, "tiny decode kernels: packed_linear needs a CPU with AVX512-BF16");
    return a;
#else
    check(is_bf16(a) && a.is_contiguous() && a.dim() == 2, "packed_linear: a must be contiguous bfloat16 [rows, k]");
    check(is_bf16(packed) && packed.is_contiguous() && packed.dim() == 4 && packed.size(2) == 16 && packed.size(3) == 2
          && packed.size(1) * 2 == a.size(1) && packed.size(0) % 4 == 0,
          "packed_linear: the weight must be packed bfloat16 [n/16, k/2, 16, 2] with n a multiple of 64");
    const int64_t rows = a.size(0), k = a.size(1), n = packed.size(0) * 16;
    auto c = at::empty({rows, n}, a.options().dtype(at::kFloat));
    constexpr int64_t kBlock = 16;
    at::parallel_for(0, (rows + kBlock - 1) / kBlock, 1, [&](int64_t lo, int64_t hi) {
        for (int64_t blk = lo; blk < hi; ++blk) {
            const int64_t r0 = blk * kBlock;
            dot_rows(a.data_ptr<bf16>() + r0 * k, k, std::min(kBlock, rows - r0), packed.data_ptr<bf16>(), n, k,
                     c.data_ptr<float>() + r0 * n);
        }
    });
    return c;
#endif
}

// Every layer of one bfloat16 decoding step: x [batch, d] (the embedded tokens) becomes the last
// layer's residual stream, in place. Per layer and block of rows: RMSNorm, qkv = h W_qkv^T,
// attention as decode_attention, x += att W_o^T, RMSNorm, SwiGLU, x += hidden W_down^T, with
// float32 sums rounded to bfloat16 where torch's bfloat16 matmuls round (their outputs; the
// residual add once). Weights packed (see dot_tile), stacked over layers: qkv [L, 3d/16, d/2, 16, 2],
// o [L, d/16, d/2, 16, 2], gate_up [L, 2f/16, d/2, 16, 2], down [L, d/16, f/2, 16, 2]; norms [L, d].
// One parallel region per layer, blocks of rows as tasks: a layer's weights stay in cache.
at::Tensor decode_layers(at::Tensor x, const at::Tensor& attn_norm, const at::Tensor& qkv_w, const at::Tensor& o_w,
                         const at::Tensor& mlp_norm, const at::Tensor& gate_up_w, const at::Tensor& down_w, double eps,
                         const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& positions, at::Tensor keys,
                         at::Tensor values, int64_t start, const c10::optional<at::Tensor>& own_valid,
                         const c10::optional<at::Tensor>& prefix_kt, const c10::optional<at::Tensor>& prefix_v,
                         const c10::optional<at::Tensor>& row_prompt, const c10::optional<at::Tensor>& prefix_bias) {
#ifndef RLBOUND_BF16_DOT
    TORCH_CHECK(false, "tiny decode kernels: decode_layers needs a CPU with AVX512-BF16");
    return x;
#else
    check(is_bf16(x) && x.is_contiguous() && x.dim() == 2, "decode_layers: x must be contiguous bfloat16 [batch, d]");
    check(keys.dim() == 5 && values.sizes() == keys.sizes() && is_bf16(keys) && is_bf16(values) && keys.is_contiguous()
          && values.is_contiguous(), "decode_layers: keys/values must be contiguous bfloat16 [layers, batch, heads, cols, hd]");
    const int64_t layers = keys.size(0), b = keys.size(1), heads = keys.size(2), cols = keys.size(3), hd = keys.size(4);
    const int64_t d = x.size(1), f = down_w.size(2) * 2;
    check(x.size(0) == b && heads * hd == d, "decode_layers: x must be [batch, heads * head_dim] of the cache");
    for (const at::Tensor* w : {&qkv_w, &o_w, &gate_up_w, &down_w})
        check(is_bf16(*w) && w->is_contiguous() && w->dim() == 5 && w->size(0) == layers && w->size(3) == 16 && w->size(4) == 2,
              "decode_layers: weights must be packed contiguous bfloat16 [layers, n/16, k/2, 16, 2]");
    check(qkv_w.size(1) * 16 == 3 * d && qkv_w.size(2) * 2 == d && o_w.size(1) * 16 == d && o_w.size(2) * 2 == d
          && gate_up_w.size(1) * 16 == 2 * f && gate_up_w.size(2) * 2 == d && down_w.size(1) * 16 == d
          && d % 64 == 0 && (2 * f) % 64 == 0, "decode_layers: weight shapes do not match d and d_ff (d, 2 d_ff multiples of 64)");
    check(is_bf16(attn_norm) && is_bf16(mlp_norm) && attn_norm.is_contiguous() && mlp_norm.is_contiguous()
          && attn_norm.numel() == layers * d && mlp_norm.numel() == layers * d, "decode_layers: norms must be bfloat16 [layers, d]");
    check(start >= 0 && start < cols, "decode_layers: start must be a column of the cache");
    c10::optional<at::Tensor> prefix_kt0, prefix_v0;  // every layer's prompt has the same shape: check the first
    if (prefix_kt && prefix_kt->defined()) {
        check(prefix_v && prefix_v->defined() && prefix_kt->dim() == 5 && prefix_v->dim() == 5 && prefix_kt->size(0) == layers
              && prefix_v->size(0) == layers, "decode_layers: prefix keys/values must be [layers, ...]");
        prefix_kt0 = (*prefix_kt)[0];
        prefix_v0 = (*prefix_v)[0];
    }
    const AttentionInputs in = attention_inputs(cos, sin, positions, keys[0], values[0], start, own_valid, prefix_kt0,
                                                prefix_v0, row_prompt, prefix_bias);
    const int64_t layer_cache = b * heads * cols * hd, layer_prefix = prefix_kt0 ? prefix_kt0->numel() : 0;
    bf16* xs = x.data_ptr<bf16>();
    constexpr int64_t kBlock = 16;  // rows per task
    const int64_t blocks = (b + kBlock - 1) / kBlock;
    for (int64_t l = 0; l < layers; ++l) {
        const bf16 *wq = qkv_w.data_ptr<bf16>() + l * qkv_w[0].numel(), *wo = o_w.data_ptr<bf16>() + l * o_w[0].numel();
        const bf16 *wg = gate_up_w.data_ptr<bf16>() + l * gate_up_w[0].numel();
        const bf16* wd = down_w.data_ptr<bf16>() + l * down_w[0].numel();
        const bf16 *n1 = attn_norm.data_ptr<bf16>() + l * d, *n2 = mlp_norm.data_ptr<bf16>() + l * d;
        bf16 *kl = keys.data_ptr<bf16>() + l * layer_cache, *vl = values.data_ptr<bf16>() + l * layer_cache;
        AttentionInputs layer_in = in;
        if (in.pk) layer_in.pk += l * layer_prefix, layer_in.pv += l * layer_prefix;
        at::parallel_for(0, blocks, 1, [&](int64_t lo, int64_t hi) {
            std::vector<bf16> h(kBlock * d), qkv(kBlock * 3 * d), att(kBlock * d), gu(kBlock * 2 * f), hid(kBlock * f);
            std::vector<float> acc(kBlock * std::max(3 * d, 2 * f));
            for (int64_t blk = lo; blk < hi; ++blk) {
                const int64_t r0 = blk * kBlock, rows = std::min(kBlock, b - r0);
                bf16* xr = xs + r0 * d;
                rms_norm_impl(xr, n1, h.data(), rows, d, eps);
                dot_rows(h.data(), d, rows, wq, 3 * d, d, acc.data());
                round_rows(acc.data(), rows * 3 * d, qkv.data());
                attend(layer_in, qkv.data(), cos.data_ptr<float>(), sin.data_ptr<float>(), kl, vl, start, r0, rows, att.data());
                // the next block's columns (this thread's next block, else its first of the next layer)
                Prefetch ahead;
                const int64_t next_l = blk + 1 < hi ? l : l + 1, next_blk = blk + 1 < hi ? blk + 1 : lo;
                if (next_l < layers) {
                    const int64_t next_rows = std::min(kBlock, b - next_blk * kBlock);
                    const int64_t offset = (next_l * layer_cache + next_blk * kBlock * heads * cols * hd) * 2;
                    ahead.keys = reinterpret_cast<const char*>(keys.data_ptr<bf16>()) + offset;
                    ahead.values = reinterpret_cast<const char*>(values.data_ptr<bf16>()) + offset;
                    ahead.stride = cols * hd * 2;
                    ahead.segments = next_rows * heads;
                    ahead.bytes = (start + 1) * hd * 2;
                    const int64_t tiles = (rows + kRows - 1) / kRows * ((2 * d + 2 * f) / 64);
                    ahead.per_tile = (ahead.segments * ((ahead.bytes + 63) / 64) + tiles - 1) / tiles;
                }
                dot_rows(att.data(), d, rows, wo, d, d, acc.data(), &ahead);
                add_rows(acc.data(), rows * d, xr);
                rms_norm_impl(xr, n2, h.data(), rows, d, eps);
                dot_rows(h.data(), d, rows, wg, 2 * f, d, acc.data(), &ahead);
                round_rows(acc.data(), rows * 2 * f, gu.data());
                silu_mul_impl(gu.data(), hid.data(), rows, f);
                dot_rows(hid.data(), f, rows, wd, d, f, acc.data(), &ahead);
                add_rows(acc.data(), rows * d, xr);
            }
        });
    }
    return x;
#endif
}

// rlbound.engines.sampling.row_uniforms of one decoding step from premixed_seeds (its step-
// independent half, int64 bits of the uint64 values): float64 [rows], bit for bit
at::Tensor step_uniforms(const at::Tensor& premixed, int64_t step) {
    check(premixed.scalar_type() == at::kLong && premixed.is_contiguous() && premixed.dim() == 1,
          "step_uniforms: premixed seeds must be contiguous int64 [rows]");
    constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull, kMix1 = 0xBF58476D1CE4E5B9ull, kMix2 = 0x94D049BB133111EBull;
    auto out = at::empty({premixed.size(0)}, premixed.options().dtype(at::kDouble));
    const int64_t* p = premixed.data_ptr<int64_t>();
    double* u = out.data_ptr<double>();
    const uint64_t salt = static_cast<uint64_t>(step) * kGolden;
    for (int64_t i = 0; i < premixed.size(0); ++i) {
        uint64_t z = (static_cast<uint64_t>(p[i]) ^ salt) + kGolden;  // splitmix64
        z = (z ^ (z >> 30)) * kMix1;
        z = (z ^ (z >> 27)) * kMix2;
        z ^= z >> 31;
        u[i] = static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);  // 2^-53
    }
    return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sample_rows(const at::Tensor& logits, const at::Tensor& uniforms,
                                                           double temperature) {
    check(logits.scalar_type() == at::kFloat && logits.is_contiguous() && logits.dim() == 2,
          "sample_rows: logits must be contiguous float32 [batch, vocab]");
    check(uniforms.scalar_type() == at::kDouble && uniforms.is_contiguous() && uniforms.numel() == logits.size(0),
          "sample_rows: uniforms must be float64 [batch]");
    check(temperature > 0, "sample_rows: temperature must be > 0");
    const int64_t rows = logits.size(0), vocab = logits.size(1);
    auto tokens = at::empty({rows}, logits.options().dtype(at::kLong));
    auto logprobs = at::empty({rows}, logits.options());
    auto entropies = at::empty({rows}, logits.options());
    sample_rows_impl(logits.data_ptr<float>(), uniforms.data_ptr<double>(), temperature, rows, vocab,
                     tokens.data_ptr<int64_t>(), logprobs.data_ptr<float>(), entropies.data_ptr<float>());
    return {tokens, logprobs, entropies};
}
