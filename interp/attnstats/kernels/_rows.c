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

/* One query block. s: [n_groups*nq, ld] scores, overwritten with exp(s - rowmax) (0 past each row's keys).
 * bias: NULL or additive logit biases (key padding, segment scaling), row grp / bias_div of [*, bias_ld]; qw: NULL or [batch, q_len] key-mass weight of each query;
 * kacc: NULL or [n_groups, kacc_ld] key-mass accumulator; seg: NULL or [batch, n_seg, seg_ld] segment weights,
 * whose masses go to segm [n_groups, q_len, n_seg]. Outputs lse/ent/maxw/amax are [n_groups, q_len]
 * and receive this block's columns i0..i0+nq. maxw equals 1/Σe (the max exponential is exactly 1), so the
 * caller normalises the block's P·V with it. */
void interp_attn_rows(float *s, int64_t n_groups, int64_t nq, int64_t ld, int64_t kend, int64_t pos0, int causal,
                      int64_t group_per_batch, const float *bias, int64_t bias_div, int64_t bias_ld, const float *qw, int64_t q_len,
                      int64_t i0, float *kacc, int64_t kacc_ld, const float *seg, int64_t n_seg, int64_t seg_ld,
                      float *segm, float *lse, float *ent, float *maxw, int64_t *amax) {
    for (int64_t grp = 0; grp < n_groups; grp++) {
        int64_t b = grp / group_per_batch;
        const float *brow = bias ? bias + (grp / bias_div) * bias_ld : NULL;
        for (int64_t qi = 0; qi < nq; qi++) {
            float *row = s + (grp * nq + qi) * ld;
            int64_t len = causal ? pos0 + qi + 1 : kend;
            if (len > kend) len = kend;
            if (len < 0) len = 0;
            int64_t o = grp * q_len + i0 + qi;
            int64_t arg = -1;
            float m = len > 0 ? row_max(row, brow, len, &arg) : -INFINITY;
            if (!(m > NEG_HALF)) {
                memset(row, 0, (size_t)kend * sizeof(float));
                lse[o] = -INFINITY; ent[o] = 0.0f; maxw[o] = 0.0f; amax[o] = -1;
                for (int64_t k = 0; seg && k < n_seg; k++) segm[o * n_seg + k] = 0.0f;
                continue;
            }
            amax[o] = arg;
            float t;
            float l = row_exp(row, len, m, &t);
            if (len < kend) memset(row + len, 0, (size_t)(kend - len) * sizeof(float));
            float rinv = 1.0f / l, logl = logf(l);
            lse[o] = m + logl;
            ent[o] = logl - t * rinv;
            maxw[o] = rinv;
            for (int64_t k = 0; seg && k < n_seg; k++)
                segm[o * n_seg + k] = rinv * row_dot(row, seg + (b * n_seg + k) * seg_ld, len);
            if (kacc) {
                float w = qw ? qw[b * q_len + i0 + qi] * rinv : rinv;
                if (w != 0.0f) row_axpy(kacc + grp * kacc_ld, row, len, w);
            }
        }
    }
}
