/* out (n x m) = a (n x k) @ w (k x m), float32, row-major; each row accumulated as fused multiply-adds. */
void gemm(const float *a, const float *w, float *out, long n, long k, long m) {
    for (long i = 0; i < n; i++) {
        float *o = out + i * m;
        for (long j = 0; j < m; j++) o[j] = 0.0f;
        for (long q = 0; q < k; q++) {
            const float s = a[i * k + q];
            const float *row = w + q * m;
            for (long j = 0; j < m; j++) o[j] += s * row[j]; /* contracted into an FMA */
        }
    }
}
