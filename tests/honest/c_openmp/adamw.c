/* AdamW (SPEC section 3) over one flat float32 tensor, its elements shared out among OpenMP threads. */
#include <math.h>
#include <omp.h>
#include <stddef.h>

/* How many threads the runtime gives a parallel region, through an OpenMP 5 allocation (omp_aligned_alloc
   needs the OMP_5.0 symbol versions of a runtime newer than the one torch bundles). */
int threads_seen(void) {
    int *seen = (int *)omp_aligned_alloc(64, sizeof(int), omp_default_mem_alloc);
    if (seen == NULL) return -1;
    *seen = 0;
#pragma omp parallel
    {
#pragma omp single
        *seen = omp_get_num_threads();
    }
    int n = *seen;
    omp_free(seen, omp_default_mem_alloc);
    return n;
}

void adamw(float *p, const float *g, float *m, float *v, long n, float scale, float lr, float beta1, float beta2,
           float c1, float c2, float eps, float decay) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        float gi = g[i] * scale;
        m[i] = beta1 * m[i] + (1.0f - beta1) * gi;
        v[i] = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        float update = (m[i] / c1) / (sqrtf(v[i] / c2) + eps) + decay * p[i];
        p[i] -= lr * update;
    }
}
