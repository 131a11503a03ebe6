/* Row pass of the cpu attention-statistics kernel: one fused, vectorised sweep per score row.
 *
 * Why C: in PyTorch the row statistics take ~6 separate passes over a query block's scores
 * ([rows, keys], megabytes at long context), each streaming from memory. Here every row (at most 32 KB
 * at 8192 keys) is read into L1/L2 once and max, argmax, exp, sum, Σ e·(s - m) and the key-mass
 * accumulation happen while it is there. The two matmuls around it stay in PyTorch (BLAS).
 *
 * Rows are ordered [group_row = (batch*kv_head + kv)*group + g][query qi] for qi < nq; row r's query sits at
 * absolute position pos0 + qi. Scores must already be scaled; keys past the causal limit are ignored and
 * their exponentials written as 0. Written for GCC/Clang vector extensions: no intrinsics, so the same
 * source builds (and vectorises) on x86 and Arm; -march decides the instruction set.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));
typedef float vf_unaligned __attribute__((vector_size(32), aligned(4), may_alias));
#define L 8
#define VF(c) ((vf){c, c, c, c, c, c, c, c})
#define VI(c) ((vi){c, c, c, c, c, c, c, c})

static const float NEG_HALF = -5.0e29f; /* rows whose max lies below this see no key (NEG = -1e30 in cpu.py) */

/* exp(x) for x <= 0 (Cephes polynomial, ~1 ulp); 0 below -87 (exp underflows to denormals there). */
static inline vf vexp(vf x) {
    vi under = x < VF(-87.0f);
    x = (vf)(((vi)x & ~under) | ((vi)VF(-87.0f) & under));
    vf n = (x * VF(1.44269504088896341f) + VF(12582912.0f)) - VF(12582912.0f); /* round to nearest */
    vf r = x - n * VF(0.693359375f);
    r = r - n * VF(-2.12194440e-4f);
    vf y = VF(1.9875691500e-4f);
    y = y * r + VF(1.3981999507e-3f);
    y = y * r + VF(8.3334519073e-3f);
    y = y * r + VF(4.1665795894e-2f);
    y = y * r + VF(1.6666665459e-1f);
    y = y * r + VF(5.0000001201e-1f);
    y = y * r * r + r + VF(1.0f);
    vi e = (__builtin_convertvector(n, vi) + VI(127)) << 23;
    return (vf)((vi)(y * (vf)e) & ~under);
}

static inline float sexp(float x) {
    vf v = VF(x);
    return vexp(v)[0];
}

static inline vf vload(const float *p) { return *(const vf_unaligned *)p; }
static inline void vstore(float *p, vf v) { *(vf_unaligned *)p = v; }
static inline vf vmax(vf a, vf b) { vi gt = a > b; return (vf)(((vi)a & gt) | ((vi)b & ~gt)); }
static inline float hsum(vf v) { float t = 0; for (int i = 0; i < L; i++) t += v[i]; return t; }

static inline vi vsel(vi mask, vi a, vi b) { return (a & mask) | (b & ~mask); }

/* Add the key bias (key padding: NEG where invalid) in place; return the row max and its first index. */
static float row_max(float *s, const float *bias, int64_t len, int64_t *arg) {
    vf m = VF(-INFINITY);
    vi idx = VI(0), cur = (vi){0, 1, 2, 3, 4, 5, 6, 7};
    int64_t j = 0;
    for (; j + L <= len && j < INT32_MAX - L; j += L) {
        vf x = vload(s + j);
        if (bias) { x += vload(bias + j); vstore(s + j, x); }
        vi gt = x > m;  /* strict: each lane keeps its first maximum */
        m = (vf)vsel(gt, (vi)x, (vi)m);
        idx = vsel(gt, cur, idx);
        cur += VI(L);
    }
    float ms = -INFINITY;
    int64_t a = -1;
    for (int i = 0; i < L; i++)
        if (m[i] > ms || (m[i] == ms && idx[i] < a)) { ms = m[i]; a = idx[i]; }
    for (; j < len; j++) {
        if (bias) s[j] += bias[j];
        if (s[j] > ms) { ms = s[j]; a = j; }
    }
    *arg = a;
    return ms;
}

/* e = exp(s - m) in place; returns Σ e and sets *t = Σ e·(s - m). */
static float row_exp(float *s, int64_t len, float m, float *t) {
    vf acc = VF(0.0f), tacc = VF(0.0f), mv = VF(m);
    int64_t j = 0;
    for (; j + L <= len; j += L) {
        vf x = vload(s + j) - mv;
        vf e = vexp(x);
        vstore(s + j, e);
        acc += e;
        tacc += e * x;  /* masked keys: 0 · (-1e30) = 0 */
    }
    float l = hsum(acc), ts = hsum(tacc);
    for (; j < len; j++) {
        float x = s[j] - m, e = sexp(x);
        s[j] = e;
        l += e;
        ts += e * x;
    }
    *t = ts;
    return l;
}

static float row_dot(const float *a, const float *b, int64_t len) {
    vf acc = VF(0.0f);
    int64_t j = 0;
    for (; j + L <= len; j += L) acc += vload(a + j) * vload(b + j);
    float t = hsum(acc);
    for (; j < len; j++) t += a[j] * b[j];
    return t;
}

static void row_axpy(float *acc, const float *e, int64_t len, float w) {
    vf wv = VF(w);
    int64_t j = 0;
    for (; j + L <= len; j += L) vstore(acc + j, vload(acc + j) + wv * vload(e + j));
    for (; j < len; j++) acc[j] += w * e[j];
}

/* One query block. s: [n_groups*nq, ld] scores of keys k0..k0+ld-1 (column j is key k0 + j), overwritten with
 * exp(s - rowmax) / normaliser-free exponentials (0 outside each row's visible keys).
 * Visible keys of row qi (absolute query position p = pos0 + qi): lo <= key < hi with hi = p + 1 (causal, else
 * kend) and lo = p - window + 1 (window > 0, else k0). Key-indexed arrays (bias, seg, kacc) are indexed by
 * absolute key.
 * bias: NULL or additive logit biases (key padding, segment scaling), row grp / bias_div of [*, bias_ld]; qw: NULL or [batch, q_len] key-mass weight of each query;
 * kacc: NULL or [n_groups, kacc_ld] key-mass accumulator; seg: NULL or [batch, n_seg, seg_ld] segment weights,
 * whose masses go to segm [n_groups, q_len, n_seg]; seg_span [batch, n_seg, 2]: the keys [from, to) outside which a
 * segment's weights are all zero, so that a sink token or a short span costs its own length, not a row.
 * sinks: NULL or [group_per_batch] learned sink logits, one extra softmax column per head (mass, no value) whose
 * probability goes to sinkm [n_groups, q_len].
 * Outputs lse/ent/maxw/amax/rinv are [n_groups, q_len] and receive this block's columns i0..i0+nq. rinv is
 * 1/normaliser, with which the caller normalises the block's P·V (without sinks it equals maxw: the max
 * exponential is exactly 1; rinv may alias maxw then). */
void interp_attn_rows(float *s, int64_t n_groups, int64_t nq, int64_t ld, int64_t k0, int64_t kend, int64_t pos0,
                      int causal, int64_t window, int64_t group_per_batch, const float *bias, int64_t bias_div,
                      int64_t bias_ld, const float *qw, int64_t q_len, int64_t i0, float *kacc, int64_t kacc_ld,
                      const float *seg, int64_t n_seg, int64_t seg_ld, const int64_t *seg_span, float *segm,
                      float *lse, float *ent,
                      float *maxw, int64_t *amax, const float *sinks, float *sinkm, float *rinv_out) {
    for (int64_t grp = 0; grp < n_groups; grp++) {
        int64_t b = grp / group_per_batch;
        const float *brow = bias ? bias + (grp / bias_div) * bias_ld : NULL;
        int has_sink = sinks != NULL;
        float z = has_sink ? sinks[grp % group_per_batch] : 0.0f;
        for (int64_t qi = 0; qi < nq; qi++) {
            float *row = s + (grp * nq + qi) * ld;
            int64_t p = pos0 + qi;
            int64_t hi = causal ? p + 1 : kend;
            if (hi > kend) hi = kend;
            int64_t lo = window > 0 ? p - window + 1 : k0;
            if (lo < k0) lo = k0;
            if (hi < lo) hi = lo;
            int64_t len = hi - lo;
            float *r = row + (lo - k0);
            int64_t o = grp * q_len + i0 + qi;
            int64_t arg = -1;
            float m = len > 0 ? row_max(r, brow ? brow + lo : NULL, len, &arg) : -INFINITY;
            if (!(m > NEG_HALF)) {  /* no visible key: all mass on the sink if there is one */
                memset(row, 0, (size_t)ld * sizeof(float));
                lse[o] = has_sink ? z : -INFINITY; ent[o] = 0.0f; maxw[o] = 0.0f; amax[o] = -1;
                rinv_out[o] = 0.0f;
                if (has_sink) sinkm[o] = 1.0f;
                for (int64_t k = 0; seg && k < n_seg; k++) segm[o * n_seg + k] = 0.0f;
                continue;
            }
            amax[o] = arg + lo;
            float mm = has_sink && z > m ? z : m;  /* shift by the max over keys and sink */
            float t;
            float l = row_exp(r, len, mm, &t);
            float ez = 0.0f;
            if (has_sink) { ez = sexp(z - mm); l += ez; t += ez * (z - mm); }
            if (lo > k0) memset(row, 0, (size_t)(lo - k0) * sizeof(float));
            if (hi - k0 < ld) memset(row + (hi - k0), 0, (size_t)(ld - (hi - k0)) * sizeof(float));
            float rinv = 1.0f / l, logl = logf(l);
            lse[o] = mm + logl;
            ent[o] = logl - t * rinv;
            maxw[o] = (mm == m ? 1.0f : sexp(m - mm)) * rinv;
            rinv_out[o] = rinv;
            if (has_sink) sinkm[o] = ez * rinv;
            for (int64_t k = 0; seg && k < n_seg; k++) {
                const int64_t *span = seg_span + (b * n_seg + k) * 2;
                int64_t a = span[0] > lo ? span[0] : lo, e = span[1] < hi ? span[1] : hi;
                segm[o * n_seg + k] = e > a ? rinv * row_dot(r + (a - lo), seg + (b * n_seg + k) * seg_ld + a, e - a) : 0.0f;
            }
            if (kacc) {
                float w = qw ? qw[b * q_len + i0 + qi] * rinv : rinv;
                if (w != 0.0f) row_axpy(kacc + grp * kacc_ld + lo, r, len, w);
            }
        }
    }
}
