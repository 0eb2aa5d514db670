/* The float32 multiply-add peak of one core: twelve independent chains of vector FMAs held in registers,
   no memory traffic. Prints the best rate of `repeats` runs of `iterations` in GFLOP/s. Compiled by
   harness/scoring/peak.py for the widest vectors the CPU's flags name (AVX-512, AVX2+FMA, or plain SSE). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <immintrin.h>

#if defined(__AVX512F__)
typedef __m512 vec;
#define WIDTH 16
#define SET1 _mm512_set1_ps
#define FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define FIRST(a) _mm512_cvtss_f32(a)
#elif defined(__FMA__)
typedef __m256 vec;
#define WIDTH 8
#define SET1 _mm256_set1_ps
#define FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define FIRST(a) _mm256_cvtss_f32(a)
#else
typedef __m128 vec;
#define WIDTH 4
#define SET1 _mm_set1_ps
#define FMA(a, b, c) _mm_add_ps(_mm_mul_ps(a, b), c)
#define FIRST(a) _mm_cvtss_f32(a)
#endif
#define CHAINS 12

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char **argv) {
    long iterations = argc > 1 ? atol(argv[1]) : 20000000;
    int repeats = argc > 2 ? atoi(argv[2]) : 5;
    double best = 0.0;
    float sink = 0.0f;
    for (int r = 0; r < repeats; r++) {
        vec acc[CHAINS];
        vec b = SET1(0.9999999f), c = SET1(1e-7f);
        for (int i = 0; i < CHAINS; i++) acc[i] = SET1((float)i);
        double start = now();
        for (long k = 0; k < iterations; k++) {
#pragma GCC unroll 12
            for (int i = 0; i < CHAINS; i++) acc[i] = FMA(acc[i], b, c);
        }
        double seconds = now() - start;
        for (int i = 0; i < CHAINS; i++) sink += FIRST(acc[i]);
        double rate = 2.0 * WIDTH * CHAINS * (double)iterations / seconds / 1e9;
        if (rate > best) best = rate;
    }
    printf("%.3f %d %g\n", best, WIDTH, (double)sink);
    return 0;
}
