/* The first native step: causal attention for one half batch, and the tanh GELU, as plain C loops that the
   compiler vectorises (over the head width in attention, over elements in GELU). Single-threaded: each of the
   loop's two streams calls them on its own half of the batch, and ctypes releases the GIL meanwhile. */
#include <float.h>
#include <math.h>
#include <string.h>

#define GA 0.7978845608028654f /* sqrt(2/pi) */
#define GB 0.044715f

/* Column d of a head's keys or values, for t = 0..T-1, into kt[d*T + t]: the loops over j below then run along
   contiguous memory and vectorise over j, with no reduction across the head width. */
static void head_columns(const float *x, long ld, int T, int D, float *kt) {
    for (int t = 0; t < T; t++)
        for (int d = 0; d < D; d++) kt[(long)d * T + t] = x[t * ld + d];
}

/* out[0..D) = sum over j < n of w[j] x[j*ld + d]: with D a constant after inlining (16 or 32) the sum stays in
   registers, two partial sums apart so that consecutive FMAs do not wait on each other; the first version
   added into out in memory, one store-to-load dependency per j. */
static inline __attribute__((always_inline)) void weighted_rows(const float *w, const float *x, long ld, int n,
                                                                const int D, float *out) {
    float a[64] = {0}, c[64] = {0};
    int j = 0;
    for (; j + 1 < n; j += 2) {
        const float *x0 = x + j * ld, *x1 = x0 + ld;
        for (int d = 0; d < D; d++) {
            a[d] += w[j] * x0[d];
            c[d] += w[j + 1] * x1[d];
        }
    }
    if (j < n)
        for (int d = 0; d < D; d++) a[d] += w[j] * x[j * ld + d];
    for (int d = 0; d < D; d++) out[d] = a[d] + c[d];
}

/* The same for any D: in registers for the head widths of the workloads, plainly in memory otherwise (inlined
   at both call sites, so the compiled code is the one the two sites had before they shared it). */
static inline __attribute__((always_inline)) void weighted_sum(const float *w, const float *x, long ld, int n, int D,
                                                               float *out) {
    if (D == 16)
        weighted_rows(w, x, ld, n, 16, out);
    else if (D == 32)
        weighted_rows(w, x, ld, n, 32, out);
    else {
        memset(out, 0, sizeof(float) * D);
        for (int j = 0; j < n; j++) {
            const float *xj = x + j * ld;
#pragma GCC ivdep
            for (int d = 0; d < D; d++) out[d] += w[j] * xj[d];
        }
    }
}

/* qkv: (B*T, 3C) rows [q | k | v], heads of D = C/H columns; o: (B*T, C); p: (B, H, T, T) probabilities kept
   for the backward pass (only j <= i is written or read). */
void attention_forward(const float *qkv, float *o, float *p, int B, int T, int C, int H) {
    int D = C / H;
    long ld = 3L * C;
    float scale = 1.0f / sqrtf((float)D), kt[D * T];
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const float *base = qkv + (long)b * T * ld + h * D;
            head_columns(base + C, ld, T, D, kt);
            for (int i = 0; i < T; i++) {
                const float *qi = base + i * ld;
                float *pi = p + (((long)b * H + h) * T + i) * T, top = -FLT_MAX, total = 0.0f;
                memset(pi, 0, sizeof(float) * (i + 1));
                for (int d = 0; d < D; d++) {
                    float qd = qi[d] * scale;
                    const float *kd = kt + (long)d * T;
#pragma GCC ivdep
                    for (int j = 0; j <= i; j++) pi[j] += qd * kd[j];
                }
                for (int j = 0; j <= i; j++) top = pi[j] > top ? pi[j] : top;
                for (int j = 0; j <= i; j++) {
                    pi[j] = expf(pi[j] - top);
                    total += pi[j];
                }
                float inv = 1.0f / total, *oi = o + ((long)b * T + i) * C + h * D;
                for (int j = 0; j <= i; j++) pi[j] *= inv;
                weighted_sum(pi, base + 2 * C, ld, i + 1, D, oi);
            }
        }
}

/* dout: (B*T, C) gradient of o; dqkv: (B*T, 3C) written whole. */
void attention_backward(const float *qkv, const float *o, const float *p, const float *dout, float *dqkv, int B,
                        int T, int C, int H) {
    int D = C / H;
    long ld = 3L * C;
    float scale = 1.0f / sqrtf((float)D), vt[D * T], ds[T];
    memset(dqkv, 0, sizeof(float) * (long)B * T * ld);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const float *base = qkv + (long)b * T * ld + h * D;
            float *dbase = dqkv + (long)b * T * ld + h * D;
            head_columns(base + 2 * C, ld, T, D, vt);
            for (int i = 0; i < T; i++) {
                const float *qi = base + i * ld, *pi = p + (((long)b * H + h) * T + i) * T;
                const float *gi = dout + ((long)b * T + i) * C + h * D, *oi = o + ((long)b * T + i) * C + h * D;
                float *dqi = dbase + i * ld, delta = 0.0f;
                for (int d = 0; d < D; d++) delta += gi[d] * oi[d];
                memset(ds, 0, sizeof(float) * (i + 1));
                for (int d = 0; d < D; d++) {
                    const float *vd = vt + (long)d * T;
#pragma GCC ivdep
                    for (int j = 0; j <= i; j++) ds[j] += gi[d] * vd[j];
                }
                for (int j = 0; j <= i; j++) ds[j] = pi[j] * (ds[j] - delta) * scale;
                weighted_sum(ds, base + C, ld, i + 1, D, dqi); /* dq_i: written only here, whole */
                for (int j = 0; j <= i; j++) {
                    float *dkj = dbase + j * ld + C, *dvj = dbase + j * ld + 2 * C;
#pragma GCC ivdep
                    for (int d = 0; d < D; d++) { /* dk and dv are disjoint columns of dqkv */
                        dkj[d] += ds[j] * qi[d];
                        dvj[d] += pi[j] * gi[d];
                    }
                }
            }
        }
}

/* GELU in its sigmoid form, x * sigmoid(2z) = 0.5 x (1 + tanh z): 1 + tanh z cancels where z is very negative,
   the sigmoid does not; 1 - s is taken as e s (e = exp(-2z)) for the same reason. */
void gelu_forward(const float *f, float *u, long n) {
    for (long i = 0; i < n; i++) {
        float x = f[i], z2 = 2.0f * GA * (x + GB * x * x * x);
        z2 = z2 < -80.0f ? -80.0f : z2;
        u[i] = x / (1.0f + expf(-z2));
    }
}

/* du *= GELU'(f) = s + x s (1 - s) 2 GA (1 + 3 GB x^2), from f alone. */
void gelu_backward(const float *f, float *du, long n) {
    for (long i = 0; i < n; i++) {
        float x = f[i], z2 = 2.0f * GA * (x + GB * x * x * x);
        z2 = z2 < -80.0f ? -80.0f : z2; /* exp(80) is still finite in float32 */
        float e = expf(-z2), s = 1.0f / (1.0f + e);
        du[i] *= s + x * s * (e * s) * 2.0f * GA * (1.0f + 3.0f * GB * x * x);
    }
}
