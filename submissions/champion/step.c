/* One whole training step of the SPEC model in C: forward, backward, gradient norm and AdamW.

   The batch is split by sequences among the OpenMP threads; each thread runs the forward and backward pass of
   its sequences on its own rows of every activation buffer, into its own gradient buffer, with no barrier.
   Then the gradient buffers are summed (each thread a slice), the global norm is taken in double, and AdamW
   updates each thread's slice. Every product is one register-blocked GEMM kernel with strided A (so A may be
   a transpose) and row-major B. The weight matrices are also kept packed, as they are and transposed, in the
   kernel's column panels (each panel's rows contiguous), refreshed after every update, so that the products
   with W and W^T read them as one sequential stream instead of rows a few KB apart. The kernel's tiles also
   start from a residual plus bias and end with GELU (its slope kept for the backward pass) or a product with
   the GELU slope, so those element-wise passes cost no trip through memory of their own.
   The vector width follows the compiler's target: 16 floats with AVX-512, 8 with AVX2. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__AVX512F__)
#define VL 16
#define NVMAX 4 /* up to 4 vectors (64 columns) a tile: 24-32 accumulators of the 32 registers */
#define MR_OF(nv) ((nv) == 1 ? 16 : (nv) == 2 ? 12 : (nv) == 3 ? 8 : 6)
#else
#define VL 8
#define NVMAX 2 /* 16 registers: 12 accumulators */
#define MR_OF(nv) ((nv) == 1 ? 12 : 6)
#endif
#define MRMAX 16

typedef float vf __attribute__((vector_size(VL * 4)));

static inline vf vld(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void vst(float *p, vf v) { memcpy(p, &v, sizeof v); }

/* exp(x) = 2^n e^r, n = round(x / ln 2), r by a degree-6 polynomial: about 2 ulp. The same operations on a float
   or on a vector of them (the callers clamp x to the float range first). */
#define EXP_OF_CLAMPED(x, n, r, p)                                                                                   \
    n = ((x) * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */                            \
    r = (x) - n * 0.693359375f;                                                                                      \
    r = r - n * -2.12194440e-4f;                                                                                     \
    p = r * 1.9875691500e-4f + 1.3981999507e-3f;                                                                     \
    p = p * r + 8.3334519073e-3f;                                                                                    \
    p = p * r + 4.1665795894e-2f;                                                                                    \
    p = p * r + 1.6666665459e-1f;                                                                                    \
    p = p * r + 5.0000001201e-1f;                                                                                    \
    p = p * r * r + r + 1.0f

/* exp(x) for x in any range (clamped to the float range); vectorises. */
static inline float fexp(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float n, r, p;
    EXP_OF_CLAMPED(x, n, r, p);
    int32_t e = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &e, 4);
    return p * s;
}

#define GELU_A 1.5957691216057308f /* 2 sqrt(2/pi) */
#define GELU_B (GELU_A * 0.044715f)

typedef int32_t vi __attribute__((vector_size(VL * 4)));

static inline vf vsel(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }

/* fexp on a whole vector. */
static inline vf vexp(vf x) {
    const vf lo = (vf){0} - 87.0f, hi = (vf){0} + 88.0f;
    x = vsel(x < lo, lo, x);
    x = vsel(x > hi, hi, x);
    vf n, r, p;
    EXP_OF_CLAMPED(x, n, r, p);
    vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    return p * (vf)e;
}

/* s = sigmoid(A x + B x^3), so that gelu(x) = x s, and gelu'(x) = s + x s (1 - s) (A + 3 B x^2): the GEMM
   epilogue below computes both, in vectors or (at an edge) one float at a time, with the same operations. */
static inline float gelu_sigmoid(float x) { return 1.0f / (1.0f + fexp(-x * (GELU_A + GELU_B * x * x))); }
static inline float gelu_slope(float x, float s) { return s + x * s * (1.0f - s) * (GELU_A + 3.0f * GELU_B * x * x); }
static inline vf vgelu_sigmoid(vf x) { return 1.0f / (1.0f + vexp(-x * (GELU_A + GELU_B * x * x))); }
static inline vf vgelu_slope(vf x, vf s) { return s + x * s * (1.0f - s) * (GELU_A + 3.0f * GELU_B * x * x); }

/* What a product's tile does with its sums before storing them: nothing, GELU (C gets gelu(sum) and aux the
   slope there), or a product with aux (C gets sum * aux). aux and res are laid out as C (same leading dimension). */
enum { POST_NONE = 0, POST_GELU = 1, POST_MUL = 2 };

enum { FULL = 0, CAUSAL_N = 1, CAUSAL_KEND = 2, CAUSAL_KBEG = 3 };

/* C[mr x nv*VL] (=|+=) A[mr x (kb..ke)] B[(kb..ke) x nv*VL]; A[i][p] = A[i*rsa + p*csa]. mr and nv are constants
   after inlining, so the accumulators live in registers. */
static inline __attribute__((always_inline)) void ukern(int mr, int nv, int kb, int ke, const float *A, long rsa,
                                                         long csa, const float *B, long ldb, float *C, long ldc,
                                                         int acc, const float *bias, const float *res, int post,
                                                         float *aux) {
    vf c[MRMAX][NVMAX];
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nv; j++) {
            vf b0 = bias ? vld(bias + j * VL) : (vf){0};
            c[i][j] = acc ? vld(C + i * ldc + j * VL) : res ? vld(res + i * ldc + j * VL) + b0 : b0;
        }
    for (int p = kb; p < ke; p++) {
        const float *b = B + (long)p * ldb;
        vf bv[NVMAX];
        for (int j = 0; j < nv; j++) bv[j] = vld(b + j * VL);
        const float *a = A + (long)p * csa;
        for (int i = 0; i < mr; i++) {
            float ai = a[i * rsa];
            for (int j = 0; j < nv; j++) c[i][j] += ai * bv[j];
        }
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nv; j++) {
            vf x = c[i][j];
            if (post == POST_GELU) {
                vf sg = vgelu_sigmoid(x);
                vst(aux + i * ldc + j * VL, vgelu_slope(x, sg));
                x = x * sg;
            } else if (post == POST_MUL)
                x = x * vld(aux + i * ldc + j * VL);
            vst(C + i * ldc + j * VL, x);
        }
}

/* The same for nr < VL columns, plainly. */
static void uedge(int mr, int nr, int kb, int ke, const float *A, long rsa, long csa, const float *B, long ldb,
                  float *C, long ldc, int acc, const float *bias, const float *res, int post, float *aux) {
    float t[MRMAX][VL];
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) {
            float b0 = bias ? bias[j] : 0.0f;
            t[i][j] = acc ? C[i * ldc + j] : res ? res[i * ldc + j] + b0 : b0;
        }
    for (int p = kb; p < ke; p++)
        for (int i = 0; i < mr; i++) {
            float a = A[i * rsa + (long)p * csa];
            for (int j = 0; j < nr; j++) t[i][j] += a * B[(long)p * ldb + j];
        }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) {
            float x = t[i][j];
            if (post == POST_GELU) {
                float sg = gelu_sigmoid(x);
                aux[i * ldc + j] = gelu_slope(x, sg);
                x = x * sg;
            } else if (post == POST_MUL)
                x = x * aux[i * ldc + j];
            C[i * ldc + j] = x;
        }
}

#define UK(MRV, NVV) ukern((MRV) < MR_OF(NVV) ? (MRV) : MR_OF(NVV), NVV, kb, ke, A, rsa, csa, B, ldb, C, ldc, acc, bias, res, post, aux)
#define UKS(NVV)                                                                                                     \
    switch (mr) {                                                                                                    \
    case 1: if (1 <= MR_OF(NVV)) UK(1, NVV); break;                                                                                      \
    case 2: if (2 <= MR_OF(NVV)) UK(2, NVV); break;                                                                                      \
    case 3: if (3 <= MR_OF(NVV)) UK(3, NVV); break;                                                                                      \
    case 4: if (4 <= MR_OF(NVV)) UK(4, NVV); break;                                                                                      \
    case 5: if (5 <= MR_OF(NVV)) UK(5, NVV); break;                                                                                      \
    case 6: if (6 <= MR_OF(NVV)) UK(6, NVV); break;                                                                                      \
    case 7: if (7 <= MR_OF(NVV)) UK(7, NVV); break;                                                                                      \
    case 8: if (8 <= MR_OF(NVV)) UK(8, NVV); break;                                                                                      \
    case 9: if (9 <= MR_OF(NVV)) UK(9, NVV); break;                                                                                      \
    case 10: if (10 <= MR_OF(NVV)) UK(10, NVV); break;                                                                                    \
    case 11: if (11 <= MR_OF(NVV)) UK(11, NVV); break;                                                                                    \
    case 12: if (12 <= MR_OF(NVV)) UK(12, NVV); break;                                                                                    \
    case 13: if (13 <= MR_OF(NVV)) UK(13, NVV); break;                                                                                    \
    case 14: if (14 <= MR_OF(NVV)) UK(14, NVV); break;                                                                                    \
    case 15: if (15 <= MR_OF(NVV)) UK(15, NVV); break;                                                                                    \
    default: UK(MRMAX, NVV); break;                                                                                     \
    }

static void block(int mr, int nv, int nr, int kb, int ke, const float *A, long rsa, long csa, const float *B,
                  long ldb, float *C, long ldc, int acc, const float *bias, const float *res, int post, float *aux) {
    switch (nv) {
#if NVMAX > 2
    case 4: UKS(4) break;
    case 3: UKS(3) break;
#endif
    case 2: UKS(2) break;
    case 1: UKS(1) break;
    default: uedge(mr, nr, kb, ke, A, rsa, csa, B, ldb, C, ldc, acc, bias, res, post, aux);
    }
}

/* The column panels of an N-column B: whole tiles of NVMAX vectors, then what is left in whole vectors, then
   the edge. A packed B holds each panel as K contiguous rows of its own width (ldb < 0 says so); gemm and pack
   both cut panels here, so they always agree. */
static inline int panel_width(int left) {
    int nv = left / VL > NVMAX ? NVMAX : left / VL;
    return nv ? nv * VL : left;
}

/* C[M x N] = A[M x K] B[K x N] (+ C if acc, + bias row if given and not acc). causal: CAUSAL_N computes only the
   column panels a row block can see (j <= i), CAUSAL_KEND sums p <= i, CAUSAL_KBEG sums p >= i. */
static void gemm_post(int M, int N, int K, const float *A, long rsa, long csa, const float *Bm, long ldbm, float *C,
                      long ldc, int acc, const float *bias, const float *res, int post, float *aux, int causal) {
    for (int n0 = 0; n0 < N;) {
        int nr = panel_width(N - n0), nv = nr / VL; /* nv = 0: an edge narrower than a vector */
        int mrb = nv ? MR_OF(nv) : MRMAX;
        const float *B = ldbm < 0 ? Bm + (long)n0 * K - n0 : Bm;
        long ldb = ldbm < 0 ? nr : ldbm;
        for (int m0 = 0; m0 < M; m0 += mrb) {
            int mr = M - m0 < mrb ? M - m0 : mrb;
            if (causal == CAUSAL_N && n0 >= m0 + mr) continue;
            int kb = 0, ke = K;
            if (causal == CAUSAL_KEND) ke = m0 + mr < K ? m0 + mr : K;
            if (causal == CAUSAL_KBEG) kb = m0;
            long at = (long)m0 * ldc + n0;
            block(mr, nv, nr, kb, ke, A + m0 * rsa, rsa, csa, B + n0, ldb, C + at, ldc, acc, bias ? bias + n0 : NULL,
                  res ? res + at : NULL, post, aux ? aux + at : NULL);
        }
        n0 += nr;
    }
}

/* The plain product: C (+)= A B (+ bias), nothing done to the sums. */
static void gemm(int M, int N, int K, const float *A, long rsa, long csa, const float *Bm, long ldbm, float *C,
                 long ldc, int acc, const float *bias, int causal) {
    gemm_post(M, N, K, A, rsa, csa, Bm, ldbm, C, ldc, acc, bias, NULL, POST_NONE, NULL, causal);
}

typedef struct {
    int V, T, C, L, H, D, B, nt, chunk; /* chunk: sequences a thread takes through a pass at a time */
    long N, np, rows; /* N = B T; rows: of every activation buffer, nt chunks of chunk T rows */
    float *p, *m, *v;   /* flat, owned by the caller */
    float **g;          /* per thread flat gradients */
    float *wt;          /* transposed weights, packed */
    float *pk;          /* the weights packed (only the matrices are filled) */
    long *off, *toff; /* offsets of the tensors in the flat buffers, and of the transposed copies */
    /* activations, N rows each */
    float **h, **a1, **qkv, **o, **hmid, **a2, **f, **gd, **att, *mean, *rstd, *lnf, *logits; /* f: gelu(fc), gd: its slope */
    float *dh, *dt, *dqkv, *du, *scratch;
    double part[64], lossp[64];
    double times[8];
    int profile; /* when set, thread 0 adds its CPU seconds per kind of work to prof */
    double prof[8]; /* thread 0: linear fwd, attention fwd, element-wise fwd, head+loss, head back,
                       element-wise back, linear back, attention back */
} Ctx;

enum { P_WTE, P_WPE, P_LNFG, P_LNFB };
enum { L_LN1G, L_LN1B, L_ATTW, L_ATTB, L_PROJW, L_PROJB, L_LN2G, L_LN2B, L_FCW, L_FCB, L_FPW, L_FPB };
#define LP(x, l, k) ((x) + ctx->off[4 + 12 * (l) + (k)])

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

void ctx_profile(Ctx *ctx, int on) { ctx->profile = on; }

static inline long ldp_of(int T);
static long scratch_size(int T, int D) { return ldp_of(T) * (T + D) + 64; }

static float *falloc(long n) {
    long bytes = ((n * 4 + 63) / 64) * 64 + 64;
    float *q = aligned_alloc(64, bytes);
    memset(q, 0, bytes);
    return q;
}

static float **fallocs(int k, long n) {
    float **q = malloc(sizeof(float *) * k);
    for (int i = 0; i < k; i++) q[i] = falloc(n);
    return q;
}

/* off: the offsets of wte, wpe, lnf.g, lnf.b, then per layer the 12 tensors in SPEC order. */
void *ctx_new(int V, int T, int C, int L, int H, int B, int nt, int chunk, long np, const long *off, float *p,
              float *m, float *v) {
    if (nt > 64) return NULL;
    Ctx *ctx = calloc(1, sizeof(Ctx));
    ctx->V = V, ctx->T = T, ctx->C = C, ctx->L = L, ctx->H = H, ctx->D = C / H, ctx->B = B, ctx->nt = nt;
    ctx->N = (long)B * T, ctx->np = np, ctx->p = p, ctx->m = m, ctx->v = v;
    ctx->off = malloc(sizeof(long) * (4 + 12 * L)), ctx->toff = malloc(sizeof(long) * (1 + 4 * L));
    memcpy(ctx->off, off, sizeof(long) * (4 + 12 * L));
    ctx->chunk = chunk < 1 ? 1 : chunk;
    long N = ctx->rows = (long)nt * ctx->chunk * T;
    ctx->g = fallocs(nt, np);
    ctx->toff[0] = 0; /* wte^T (C x V), then per layer attn^T, proj^T, fc^T, fcproj^T */
    long at = (long)V * C;
    for (int l = 0; l < L; l++) {
        long sz[4] = {3L * C * C, (long)C * C, 4L * C * C, 4L * C * C};
        for (int k = 0; k < 4; k++) ctx->toff[1 + 4 * l + k] = at, at += sz[k];
    }
    ctx->wt = falloc(at);
    ctx->pk = falloc(np);
    ctx->h = fallocs(L + 1, N * C);
    ctx->a1 = fallocs(L, N * C), ctx->qkv = fallocs(L, N * 3 * C), ctx->o = fallocs(L, N * C);
    ctx->hmid = fallocs(L, N * C), ctx->a2 = fallocs(L, N * C), ctx->f = fallocs(L, N * 4 * C);
    ctx->att = fallocs(L, (long)nt * ctx->chunk * H * T * ldp_of(T));
    ctx->mean = falloc(N * (2 * L + 1)), ctx->rstd = falloc(N * (2 * L + 1));
    ctx->lnf = falloc(N * C), ctx->logits = falloc(N * V);
    ctx->dh = falloc(N * C), ctx->dt = falloc(N * C), ctx->dqkv = falloc(N * 3 * C);
    ctx->du = falloc(N * 4 * C), ctx->gd = fallocs(L, N * 4 * C);
    ctx->scratch = falloc((long)nt * scratch_size(T, ctx->D));
    return ctx;
}

static void transpose(const float *src, long lds, int T, int D, float *dst, long ldd);

/* dst = src (rows x cols, row-major) in packed panels, transposed first if tr (then dst packs src^T). */
static void pack(const float *src, int rows, int cols, int tr, float *dst) {
    int K = tr ? cols : rows, N = tr ? rows : cols;
    for (int n0 = 0; n0 < N;) {
        int nr = panel_width(N - n0);
        float *d = dst + (long)n0 * K;
        if (tr)
            transpose(src + (long)n0 * cols, cols, nr, K, d, nr); /* d[k][j] = src[n0 + j][k] */
        else
            for (int k = 0; k < K; k++)
                for (int j = 0; j < nr; j++) d[(long)k * nr + j] = src[(long)k * cols + n0 + j];
        n0 += nr;
    }
}

static void refresh_packs(Ctx *ctx, int tid, int nt) {
    int C = ctx->C;
    if (tid == 0) pack(ctx->p + ctx->off[P_WTE], ctx->V, C, 1, ctx->wt);
    if (tid == (nt > 1 ? 1 : 0)) pack(ctx->p + ctx->off[P_WTE], ctx->V, C, 0, ctx->pk + ctx->off[P_WTE]);
    static const int mats[4] = {L_ATTW, L_PROJW, L_FCW, L_FPW};
    for (int l = 0; l < ctx->L; l++) {
        if ((l + 1) % nt != tid) continue;
        for (int k = 0; k < 4; k++) {
            int n_in = k == 3 ? 4 * C : C, n_out = k == 0 ? 3 * C : k == 2 ? 4 * C : C;
            pack(LP(ctx->p, l, mats[k]), n_in, n_out, 1, ctx->wt + ctx->toff[1 + 4 * l + k]);
            pack(LP(ctx->p, l, mats[k]), n_in, n_out, 0, LP(ctx->pk, l, mats[k]));
        }
    }
}

void ctx_loaded(Ctx *ctx) { refresh_packs(ctx, 0, 1), (void)0; }

static void layernorm(const float *x, long rows, int C, const float *g, const float *b, float *y, float *mean,
                      float *rstd) {
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * C;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int c = 0; c < C; c++) s += xr[c];
        float mu = s / C, q = 0.0f;
#pragma omp simd reduction(+ : q)
        for (int c = 0; c < C; c++) q += (xr[c] - mu) * (xr[c] - mu);
        float rs = 1.0f / sqrtf(q / C + 1e-5f);
        mean[r] = mu, rstd[r] = rs;
        float *yr = y + r * C;
#pragma omp simd
        for (int c = 0; c < C; c++) yr[c] = (xr[c] - mu) * rs * g[c] + b[c];
    }
}

/* dx (+)= LN backward of dy; dg, db accumulate (zeroed here first). */
static void layernorm_back(const float *dy, const float *x, long rows, int C, const float *g, const float *mean,
                           const float *rstd, float *dx, int acc, float *dg, float *db, int acc_g) {
    if (!acc_g) memset(dg, 0, sizeof(float) * C), memset(db, 0, sizeof(float) * C);
    for (long r = 0; r < rows; r++) {
        const float *dyr = dy + r * C, *xr = x + r * C;
        float mu = mean[r], rs = rstd[r], s1 = 0.0f, s2 = 0.0f;
#pragma omp simd reduction(+ : s1, s2)
        for (int c = 0; c < C; c++) {
            float xh = (xr[c] - mu) * rs, d = dyr[c] * g[c];
            s1 += d, s2 += d * xh;
            dg[c] += dyr[c] * xh, db[c] += dyr[c];
        }
        s1 /= C, s2 /= C;
        float *dxr = dx + r * C;
#pragma omp simd
        for (int c = 0; c < C; c++) {
            float xh = (xr[c] - mu) * rs, d = rs * (dyr[c] * g[c] - s1 - xh * s2);
            dxr[c] = acc ? dxr[c] + d : d;
        }
    }
}

static void colsum(const float *x, long rows, int C, float *out, int acc) {
    if (!acc) memset(out, 0, sizeof(float) * C);
    for (long r = 0; r < rows; r++)
#pragma omp simd
        for (int c = 0; c < C; c++) out[c] += x[r * C + c];
}

/* Backward of y = x W + b over M rows (W: n_in x n_out, wt its transpose): gW (+)= x^T dy, gb (+)= column sums
   of dy, dx = dy W^T, times dmul element by element if given (the slope of what made x). */
static void linear_back(long M, int n_in, int n_out, const float *x, const float *dy, const float *wt, float *gw,
                        float *gb, float *dx, const float *dmul, int acc) {
    gemm(n_in, n_out, (int)M, x, 1, n_in, dy, n_out, gw, n_out, acc, NULL, FULL);
    colsum(dy, M, n_out, gb, acc);
    gemm_post((int)M, n_in, n_out, dy, n_out, 1, wt, -1, dx, n_in, 0, NULL, NULL, dmul ? POST_MUL : POST_NONE,
              (float *)dmul, FULL);
}

/* Horizontal max and sum by halving, log2(VL) dependent steps instead of VL. */
#if VL == 16
#define SH1 (vi){8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7}
#define SH2 (vi){4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3}
#define SH3 (vi){2, 3, 0, 1, 6, 7, 4, 5, 2, 3, 0, 1, 6, 7, 4, 5}
#else
#define SH1 (vi){4, 5, 6, 7, 0, 1, 2, 3}
#define SH2 (vi){2, 3, 0, 1, 6, 7, 4, 5}
#define SH3 SH2
#endif
static inline vf vmax(vf a, vf b) { return vsel(a > b, a, b); }

static inline float hmax(vf x) {
    x = vmax(x, __builtin_shuffle(x, SH1));
    x = vmax(x, __builtin_shuffle(x, SH2));
    if (VL == 16) x = vmax(x, __builtin_shuffle(x, SH3));
    return x[0] > x[1] ? x[0] : x[1];
}

static inline float hsum(vf x) {
    x += __builtin_shuffle(x, SH1);
    x += __builtin_shuffle(x, SH2);
    if (VL == 16) x += __builtin_shuffle(x, SH3);
    return x[0] + x[1];
}

static inline vi lanes(int base) {
#if VL == 16
    const vi iota = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
#else
    const vi iota = {0, 1, 2, 3, 4, 5, 6, 7};
#endif
    return iota + base;
}

/* dst[d][t] = src[t][d] for t < T, d < D (row strides lds and ldd): whole VL x VL blocks in registers, by
   log2(VL) rounds of two-vector shuffles (each round swaps the off-diagonal halves of ever smaller blocks),
   the rest one float at a time. */
static void transpose(const float *src, long lds, int T, int D, float *dst, long ldd) {
    vi lo[4], hi[4];
    int nst = 0;
    for (int st = VL / 2; st >= 1; st /= 2, nst++) {
        vi l = lanes(0), up = (l & st) != 0;
        lo[nst] = (up & (l + VL - st)) | (~up & l);
        hi[nst] = (up & (l + VL)) | (~up & (l + st));
    }
    int tv = T / VL * VL, dv = D / VL * VL;
    for (int t0 = 0; t0 < tv; t0 += VL)
        for (int d0 = 0; d0 < dv; d0 += VL) {
            vf r[VL];
            for (int i = 0; i < VL; i++) r[i] = vld(src + (long)(t0 + i) * lds + d0);
            int k = 0;
            for (int st = VL / 2; st >= 1; st /= 2, k++)
                for (int i = 0; i < VL; i++)
                    if (!(i & st)) {
                        vf a = r[i], b = r[i + st];
                        r[i] = __builtin_shuffle(a, b, lo[k]);
                        r[i + st] = __builtin_shuffle(a, b, hi[k]);
                    }
            for (int i = 0; i < VL; i++) vst(dst + (long)(d0 + i) * ldd + t0, r[i]);
        }
    for (int t = 0; t < T; t++)
        for (int d = t < tv ? dv : 0; d < D; d++) dst[(long)d * ldd + t] = src[(long)t * lds + d];
}

/* Rows of attention matrices are ldp = T rounded up to whole vectors apart, so that a row's last vector never
   reaches into the next row. */
static inline long ldp_of(int T) { return (T + VL - 1) / VL * VL; }

/* Causal attention of one (sequence, head): S = Q K^T scaled, P = softmax (kept in P), O = P V. */
static void attn_fwd(Ctx *ctx, const float *q, float *o, float *P, float *sc) {
    int T = ctx->T, D = ctx->D, C = ctx->C;
    long ld = 3L * C, lp = ldp_of(T);
    const float *k = q + C, *v = q + 2 * C;
    float *kt = sc, scale = 1.0f / sqrtf((float)D);
    transpose(k, ld, T, D, kt, lp);
    gemm(T, T, D, q, ld, 1, kt, lp, P, lp, 0, NULL, CAUSAL_N);
    for (int i = 0; i < T; i++) {
        /* whole vectors up to the one holding the diagonal, the future masked */
        float *row = P + (long)i * lp;
        int nvec = i / VL + 1;
        vf mx = (vf){0} - 3.0e38f, sum = (vf){0};
        for (int w = 0; w < nvec; w++) mx = vsel(lanes(w * VL) <= i, vsel(vld(row + w * VL) > mx, vld(row + w * VL), mx), mx);
        float m = hmax(mx);
        for (int w = 0; w < nvec; w++) {
            vf e = vsel(lanes(w * VL) <= i, vexp((vld(row + w * VL) - m) * scale), (vf){0});
            vst(row + w * VL, e);
            sum += e;
        }
        float inv = 1.0f / hsum(sum);
        for (int w = 0; w < nvec; w++) vst(row + w * VL, vld(row + w * VL) * inv);
        memset(row + nvec * VL, 0, sizeof(float) * (lp - nvec * VL));
    }
    gemm(T, D, T, P, lp, 1, v, ld, o, C, 0, NULL, CAUSAL_KEND);
}

static void attn_bwd(Ctx *ctx, const float *q, const float *o, const float *P, const float *dout, float *dq,
                     float *sc) {
    int T = ctx->T, D = ctx->D, C = ctx->C;
    long ld = 3L * C, lp = ldp_of(T);
    const float *k = q + C, *v = q + 2 * C;
    float *vt = sc, *dp = sc + (long)D * lp, scale = 1.0f / sqrtf((float)D);
    transpose(v, ld, T, D, vt, lp);
    gemm(T, T, D, dout, C, 1, vt, lp, dp, lp, 0, NULL, CAUSAL_N);
    for (int i = 0; i < T; i++) {
        float delta = 0.0f;
        const float *pr = P + (long)i * lp;
        float *dr = dp + (long)i * lp;
#pragma omp simd reduction(+ : delta)
        for (int d = 0; d < D; d++) delta += dout[(long)i * C + d] * o[(long)i * C + d];
        int nvec = i / VL + 1;
        for (int w = 0; w < nvec; w++) {
            vf x = (vld(dr + w * VL) - delta) * vld(pr + w * VL) * scale;
            vst(dr + w * VL, vsel(lanes(w * VL) <= i, x, (vf){0}));
        }
        memset(dr + nvec * VL, 0, sizeof(float) * (lp - nvec * VL));
    }
    gemm(T, D, T, dp, lp, 1, k, ld, dq, ld, 0, NULL, CAUSAL_KEND);             /* dQ = dS K */
    gemm(T, D, T, dp, 1, lp, q, ld, dq + C, ld, 0, NULL, CAUSAL_KBEG);         /* dK = dS^T Q */
    gemm(T, D, T, P, 1, lp, dout, C, dq + 2 * C, ld, 0, NULL, CAUSAL_KBEG);    /* dV = P^T dO */
}

/* Forward and backward of the chunk of sequences b0..b1, on thread tid's rows of the activation buffers, into
   gradient buffer g (overwritten by the first chunk, acc = 0, and added to by the next ones); returns the sum of
   the chunk's token losses. A chunk is a few sequences, so that its activations stay in the core's own cache. */
static double pass(Ctx *ctx, int tid, int b0, int b1, const int32_t *tok, float *g, int acc) {
    int T = ctx->T, C = ctx->C, V = ctx->V, L = ctx->L, H = ctx->H, D = ctx->D;
    long r0 = (long)tid * ctx->chunk * T, M = (long)(b1 - b0) * T, N = ctx->rows;
    const float *P = ctx->p;
    float *sc = ctx->scratch + tid * scratch_size(T, D);
    long a0 = (long)tid * ctx->chunk * H; /* this thread's first (sequence, head) slot of the attention buffers */
#define ROWS(buf, w) ((buf) + r0 * (w))
    double last = ctx->profile && tid == 0 ? cpu_seconds() : 0.0;
#define MARK(k)                                                                                                      \
    do {                                                                                                             \
        if (ctx->profile && tid == 0) {                                                                              \
            double now_ = cpu_seconds();                                                                             \
            ctx->prof[k] += now_ - last, last = now_;                                                                \
        }                                                                                                            \
    } while (0)
    for (int b = b0; b < b1; b++)
        for (int t = 0; t < T; t++) {
            const float *e = P + ctx->off[P_WTE] + (long)tok[(long)b * (T + 1) + t] * C;
            const float *pe = P + ctx->off[P_WPE] + (long)t * C;
            float *hr = ROWS(ctx->h[0], C) + ((long)(b - b0) * T + t) * C;
#pragma omp simd
            for (int c = 0; c < C; c++) hr[c] = e[c] + pe[c];
        }
    MARK(2);
    for (int l = 0; l < L; l++) {
        float *hin = ROWS(ctx->h[l], C), *a1 = ROWS(ctx->a1[l], C), *qkv = ROWS(ctx->qkv[l], 3 * C);
        float *o = ROWS(ctx->o[l], C), *hm = ROWS(ctx->hmid[l], C), *a2 = ROWS(ctx->a2[l], C);
        float *u = ROWS(ctx->f[l], 4 * C), *gd = ROWS(ctx->gd[l], 4 * C), *hout = ROWS(ctx->h[l + 1], C);
        float *mean = ctx->mean + N * 2 * l + r0, *rstd = ctx->rstd + N * 2 * l + r0;
        layernorm(hin, M, C, LP(P, l, L_LN1G), LP(P, l, L_LN1B), a1, mean, rstd);
        MARK(2);
        gemm(M, 3 * C, C, a1, C, 1, LP(ctx->pk, l, L_ATTW), -1, qkv, 3 * C, 0, LP(P, l, L_ATTB), FULL);
        MARK(0);
        for (int b = b0; b < b1; b++)
            for (int hh = 0; hh < H; hh++)
                attn_fwd(ctx, qkv + (long)(b - b0) * T * 3 * C + hh * D, o + (long)(b - b0) * T * C + hh * D,
                         ctx->att[l] + (a0 + (long)(b - b0) * H + hh) * T * ldp_of(T), sc);
                         MARK(1);
        gemm_post(M, C, C, o, C, 1, LP(ctx->pk, l, L_PROJW), -1, hm, C, 0, LP(P, l, L_PROJB), hin, POST_NONE, NULL,
                  FULL);
        MARK(0);
        layernorm(hm, M, C, LP(P, l, L_LN2G), LP(P, l, L_LN2B), a2, mean + N, rstd + N);
        MARK(2);
        gemm_post(M, 4 * C, C, a2, C, 1, LP(ctx->pk, l, L_FCW), -1, u, 4 * C, 0, LP(P, l, L_FCB), NULL, POST_GELU, gd,
                  FULL);
        gemm_post(M, C, 4 * C, u, 4 * C, 1, LP(ctx->pk, l, L_FPW), -1, hout, C, 0, LP(P, l, L_FPB), hm, POST_NONE,
                  NULL, FULL);
        MARK(0);
    }
    float *lnf = ROWS(ctx->lnf, C), *lg = ROWS(ctx->logits, V), *hl = ROWS(ctx->h[L], C);
    float *meanf = ctx->mean + N * 2 * L + r0, *rstdf = ctx->rstd + N * 2 * L + r0;
    layernorm(hl, M, C, P + ctx->off[P_LNFG], P + ctx->off[P_LNFB], lnf, meanf, rstdf);
    MARK(2);
    gemm(M, V, C, lnf, C, 1, ctx->wt, -1, lg, V, 0, NULL, FULL);
    MARK(3);
    double loss = 0.0;
    float inv = 1.0f / (float)ctx->N;
    for (int b = b0; b < b1; b++)
        for (int t = 0; t < T; t++) {
            float *row = lg + ((long)(b - b0) * T + t) * V, mx = -3.0e38f, s = 0.0f;
            int y = tok[(long)b * (T + 1) + t + 1];
            #pragma omp simd reduction(max : mx)
            for (int j = 0; j < V; j++) mx = row[j] > mx ? row[j] : mx;
            float target = row[y];
#pragma omp simd reduction(+ : s)
            for (int j = 0; j < V; j++) {
                float e = fexp(row[j] - mx);
                row[j] = e, s += e;
            }
            loss += (double)(logf(s) + mx - target);
            float is = inv / s;
#pragma omp simd
            for (int j = 0; j < V; j++) row[j] *= is;
            row[y] -= inv;
        }
    MARK(3);
    /* backward */
    float *dh = ROWS(ctx->dh, C), *dt = ROWS(ctx->dt, C), *dqkv = ROWS(ctx->dqkv, 3 * C), *du = ROWS(ctx->du, 4 * C);
    gemm(V, C, (int)M, lg, 1, V, lnf, C, g + ctx->off[P_WTE], C, acc, NULL, FULL);
    MARK(4);
    gemm(M, C, V, lg, V, 1, ctx->pk + ctx->off[P_WTE], -1, dt, C, 0, NULL, FULL);
    MARK(4);
    layernorm_back(dt, hl, M, C, P + ctx->off[P_LNFG], meanf, rstdf, dh, 0, g + ctx->off[P_LNFG],
                   g + ctx->off[P_LNFB], acc);
                   MARK(5);
    for (int l = L - 1; l >= 0; l--) {
        float *hin = ROWS(ctx->h[l], C), *a1 = ROWS(ctx->a1[l], C), *qkv = ROWS(ctx->qkv[l], 3 * C);
        float *o = ROWS(ctx->o[l], C), *hm = ROWS(ctx->hmid[l], C), *a2 = ROWS(ctx->a2[l], C);
        float *u = ROWS(ctx->f[l], 4 * C), *gd = ROWS(ctx->gd[l], 4 * C);
        float *mean = ctx->mean + N * 2 * l + r0, *rstd = ctx->rstd + N * 2 * l + r0;
        const float *wt = ctx->wt;
        linear_back(M, 4 * C, C, u, dh, wt + ctx->toff[4 + 4 * l], LP(g, l, L_FPW), LP(g, l, L_FPB), du, gd, acc);
        MARK(6);
        linear_back(M, C, 4 * C, a2, du, wt + ctx->toff[3 + 4 * l], LP(g, l, L_FCW), LP(g, l, L_FCB), dt, NULL, acc);
        MARK(6);
        layernorm_back(dt, hm, M, C, LP(P, l, L_LN2G), mean + N, rstd + N, dh, 1, LP(g, l, L_LN2G),
                       LP(g, l, L_LN2B), acc);
                       MARK(5);
        linear_back(M, C, C, o, dh, wt + ctx->toff[2 + 4 * l], LP(g, l, L_PROJW), LP(g, l, L_PROJB), dt, NULL, acc);
        MARK(6);
        for (int b = b0; b < b1; b++)
            for (int hh = 0; hh < H; hh++) {
                long ro = (long)(b - b0) * T * C + hh * D, rq = (long)(b - b0) * T * 3 * C + hh * D;
                attn_bwd(ctx, qkv + rq, o + ro, ctx->att[l] + (a0 + (long)(b - b0) * H + hh) * T * ldp_of(T),
                         dt + ro, dqkv + rq, sc);
                         MARK(7);
            }
        linear_back(M, C, 3 * C, a1, dqkv, wt + ctx->toff[1 + 4 * l], LP(g, l, L_ATTW), LP(g, l, L_ATTB), dt, NULL, acc);
        MARK(6);
        layernorm_back(dt, hin, M, C, LP(P, l, L_LN1G), mean, rstd, dh, 1, LP(g, l, L_LN1G), LP(g, l, L_LN1B),
                       acc);
        MARK(5);
    }
    float *gw = g + ctx->off[P_WTE], *gp = g + ctx->off[P_WPE];
    if (!acc) memset(gp, 0, sizeof(float) * T * C);
    for (int b = b0; b < b1; b++)
        for (int t = 0; t < T; t++) {
            const float *d = dh + ((long)(b - b0) * T + t) * C;
            float *w = gw + (long)tok[(long)b * (T + 1) + t] * C, *pe = gp + (long)t * C;
#pragma omp simd
            for (int c = 0; c < C; c++) w[c] += d[c], pe[c] += d[c];
        }
    MARK(5);
    return loss;
#undef ROWS
}

/* One step on batch tok (B x (T+1) int32); returns the mean loss before the update. n_decay: the first
   n_decay elements of the flat buffers are the decayed (2-D) tensors. */
double ctx_step(Ctx *ctx, const int32_t *tok, float lr, float c1, float c2, float beta1, float beta2, float eps,
                float wd, float clip, long n_decay) {
    int nt = ctx->nt, B = ctx->B;
    double t0 = omp_get_wtime();
#pragma omp parallel num_threads(nt)
    {
        int tid = omp_get_thread_num(), n = omp_get_num_threads();
        int b0 = (int)((long)B * tid / n), b1 = (int)((long)B * (tid + 1) / n);
        double loss = 0.0;
        for (int b = b0; b < b1; b += ctx->chunk)
            loss += pass(ctx, tid, b, b + ctx->chunk < b1 ? b + ctx->chunk : b1, tok, ctx->g[tid], b != b0);
        if (b0 == b1) memset(ctx->g[tid], 0, sizeof(float) * ctx->np);
        ctx->lossp[tid] = loss;
        if (tid == 0) ctx->times[1] += omp_get_wtime();
#pragma omp barrier
        if (tid == 0) ctx->times[2] += omp_get_wtime();
        long lo = ctx->np * tid / n, hi = ctx->np * (tid + 1) / n;
        float *g0 = ctx->g[0];
        for (int k = 1; k < n; k++) {
            const float *gk = ctx->g[k];
#pragma omp simd
            for (long i = lo; i < hi; i++) g0[i] += gk[i];
        }
        double ss = 0.0;
#pragma omp simd reduction(+ : ss)
        for (long i = lo; i < hi; i++) ss += (double)g0[i] * (double)g0[i];
        ctx->part[tid] = ss;
#pragma omp barrier
        double tot = 0.0;
        for (int k = 0; k < n; k++) tot += ctx->part[k];
        double norm = sqrt(tot);
        float scale = (float)fmin(1.0, clip / (norm + 1e-6));
        float *p = ctx->p, *m = ctx->m, *v = ctx->v;
#pragma omp simd
        for (long i = lo; i < hi; i++) {
            float gi = g0[i] * scale, dec = i < n_decay ? wd : 0.0f;
            m[i] = beta1 * m[i] + (1.0f - beta1) * gi;
            v[i] = beta2 * v[i] + (1.0f - beta2) * gi * gi;
            p[i] -= lr * ((m[i] / c1) / (sqrtf(v[i] / c2) + eps) + dec * p[i]);
        }
#pragma omp barrier
        refresh_packs(ctx, tid, n);
    }
    double loss = 0.0;
    for (int k = 0; k < nt; k++) loss += ctx->lossp[k];
    ctx->times[3] += omp_get_wtime();
    ctx->times[4] += t0;
    return loss / (double)ctx->N;
}

/* Phase seconds accumulated so far: forward, backward, wait, optimiser (thread 0's view). */
void ctx_times(Ctx *ctx, double *out, int reset) {
    double *t = ctx->times;
    (void)t;
    memcpy(out, ctx->times, sizeof(double) * 5);
    memcpy(out + 5, ctx->prof, sizeof(double) * 8);
    if (reset) memset(ctx->times, 0, sizeof ctx->times), memset(ctx->prof, 0, sizeof ctx->prof);
}
