/* The arithmetic peak of the cores, measured: every thread runs independent chains of
 * vector instructions with no memory traffic, so the rate is set by the FMA units alone.
 *   fp32: vfmadd231ps zmm  = 16 lanes x (multiply + add)              = 32 FLOP
 *   bf16: vdpbf16ps  zmm   = 16 lanes x 2 bf16 products, both summed   = 64 FLOP
 * On a CPU without AVX-512 (built without -mavx512f) the fp32 chains are AVX2 FMAs on ymm
 * registers (8 lanes, 16 FLOP) and there is no bf16 instruction: bf16 is reported as null.
 * (a multiply-add counts as 2 FLOP, as torch's FlopCounterMode counts a convolution).
 * On AVX-512 without bf16 (built with -mavx512f alone) bf16 is null too.
 * Build: gcc -O2 -mavx512f -mavx512bf16 -fopenmp peak.c -o peak   (AVX-512 with bf16)
 *        gcc -O2 -mavx2 -mfma -fopenmp peak.c -o peak             (AVX2 only)
 * Run:   ./peak THREADS SECONDS   -> one line of JSON with GFLOP/s for each precision. */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* More chains than latency x ports (4-5 x 2), so every unit always has independent work, and
 * no more than the registers hold with the two operands: a chain spilled to the stack adds a
 * load and a store to every FMA (16 chains on AVX2's 16 ymm registers measured 0.6x the rate). */
#ifdef __AVX512F__
#define CHAINS 16 /* of 32 zmm registers */
#else
#define CHAINS 14 /* of 16 ymm registers */
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

#ifdef __AVX512F__
#define LANES_FLOP 32.0
static float fma_loop(long iters) {
    __m512 acc[CHAINS];
    __m512 a = _mm512_set1_ps(1.0000001f), b = _mm512_set1_ps(0.9999999f);
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_set1_ps((float)c);
    for (long i = 0; i < iters; i++) {
#pragma GCC unroll 16
        for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_fmadd_ps(a, acc[c], b);
        __asm__ volatile("" : "+v"(a), "+v"(b));
    }
    __m512 s = acc[0];
    for (int c = 1; c < CHAINS; c++) s = _mm512_add_ps(s, acc[c]);
    return _mm512_reduce_add_ps(s);
}

#ifdef __AVX512BF16__
static float bf16_loop(long iters) {
    __m512 acc[CHAINS];
    __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3f80);
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_set1_ps((float)c);
    for (long i = 0; i < iters; i++) {
#pragma GCC unroll 16
        for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_dpbf16_ps(acc[c], a, b);
        __asm__ volatile("" : "+v"(a), "+v"(b));
    }
    __m512 s = acc[0];
    for (int c = 1; c < CHAINS; c++) s = _mm512_add_ps(s, acc[c]);
    return _mm512_reduce_add_ps(s);
}

#endif

#else /* AVX2 + FMA: the same chains on ymm registers */
#define LANES_FLOP 16.0
static float fma_loop(long iters) {
    __m256 acc[CHAINS];
    __m256 a = _mm256_set1_ps(1.0000001f), b = _mm256_set1_ps(0.9999999f);
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_set1_ps((float)c);
    for (long i = 0; i < iters; i++) {
#pragma GCC unroll 16
        for (int c = 0; c < CHAINS; c++) acc[c] = _mm256_fmadd_ps(a, acc[c], b);
        __asm__ volatile("" : "+v"(a), "+v"(b));
    }
    __m256 s = acc[0];
    for (int c = 1; c < CHAINS; c++) s = _mm256_add_ps(s, acc[c]);
    float lanes[8];
    _mm256_storeu_ps(lanes, s);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}
#endif

/* GFLOP/s of all threads together: each runs `iters`, the time is the slowest thread's. */
static double rate(int threads, long iters, int bf16, float *sink) {
    double t0 = now();
    float total = 0.0f;
#pragma omp parallel num_threads(threads) reduction(+ : total)
#ifdef __AVX512BF16__
    total += bf16 ? bf16_loop(iters) : fma_loop(iters);
#else
    total += fma_loop(iters);
#endif
    double seconds = now() - t0;
    *sink += total;
    double flop_per_instr = bf16 ? 64.0 : LANES_FLOP;
    return threads * (double)iters * CHAINS * flop_per_instr / seconds * 1e-9;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : omp_get_max_threads();
    double seconds = argc > 2 ? atof(argv[2]) : 1.0;
    float sink = 0.0f;
    long iters = 1000000;
    /* calibrate so that one measurement lasts about `seconds` / 5 */
    double t0 = now();
    rate(threads, iters, 0, &sink);
    double dt = now() - t0;
    iters = (long)(iters * (seconds / 5.0) / (dt > 1e-6 ? dt : 1e-6));
    if (iters < 1000) iters = 1000;
    double best_fp32 = 0.0, best_bf16 = 0.0;
    for (int rep = 0; rep < 5; rep++) { /* alternate, keep the best of each (a peak) */
        double f = rate(threads, iters, 0, &sink);
#ifdef __AVX512BF16__
        double b = rate(threads, iters, 1, &sink);
#else
        double b = 0.0; /* no bf16 instruction in this build */
#endif
        if (f > best_fp32) best_fp32 = f;
        if (b > best_bf16) best_bf16 = b;
    }
#ifdef __AVX512BF16__
    printf("{\"threads\": %d, \"fp32_gflops\": %.1f, \"bf16_gflops\": %.1f, \"sink\": %g}\n", threads, best_fp32,
           best_bf16, (double)(sink * 0.0f));
#else
    printf("{\"threads\": %d, \"fp32_gflops\": %.1f, \"bf16_gflops\": null, \"sink\": %g}\n", threads, best_fp32,
           (double)(sink * 0.0f + best_bf16));
#endif
    return 0;
}
