/* A matrix-vector product for decoding on a CPU: y = x W^T (+ b) for a few rows of x.
 *
 * Decoding one token per sequence multiplies 1 to 3 rows by every weight matrix, so a step reads all weights
 * once and does almost no arithmetic per byte: the speed is how fast a kernel streams the weight from memory.
 * This kernel reads the weight in its own row-major layout (no copy) in blocks of BLOCK_ROWS rows: for each
 * block it asks for the next block ahead of use (into L2), then takes each input row's dot products with the
 * block's rows (the block stays in L1 for the second and third input row). Threads split the blocks.
 *
 * Shapes: W (n, k) row-major, x (m, k), b (n) or NULL, y (m, n); all float32, contiguous.
 * Written in GCC vector extensions so one source compiles to AVX-512 or AVX2 with -march=native.
 */
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define BLOCK_ROWS 8
#define LANES 16

typedef float vec __attribute__((vector_size(LANES * sizeof(float))));

static inline vec load(const float *p) {
    vec v;
    memcpy(&v, p, sizeof v); /* an unaligned load */
    return v;
}

static inline float sum_lanes(vec v) {
    float s = 0.0f;
    for (int l = 0; l < LANES; l++) s += v[l];
    return s;
}

/* Dot products of rows [row, row + rows) of W with x[i] for every input row i; rows <= BLOCK_ROWS. Inlined so
 * that a full block's constant row count unrolls the accumulators into registers. The vector loop starts at
 * column `start`, where the rows' loads are cache-line aligned (a weight memory-mapped from a safetensors file
 * often is not, and loads that straddle two lines cost about 10%); columns before it and after the last full
 * vector are summed one by one. */
static inline __attribute__((always_inline)) void block_dots(const float *W, const float *x, const float *b, float *y,
                                                             int64_t m, int64_t n, int64_t k, int64_t row, int rows,
                                                             int64_t start, const float *next) {
    const float *w = W + row * k;
    const int64_t stop = start + (k - start) / LANES * LANES;
    for (int64_t i = 0; i < m; i++) {
        const float *xi = x + i * k;
        vec acc[BLOCK_ROWS];
        for (int r = 0; r < rows; r++) acc[r] = (vec){0};
        for (int64_t j = start; j < stop; j += LANES) {
            if (next != NULL && i == 0) /* the next block, one cache line of each row per step */
                for (int r = 0; r < rows; r++) __builtin_prefetch(next + r * k + j, 0, 2);
            const vec xv = load(xi + j);
            for (int r = 0; r < rows; r++) acc[r] += load(w + r * k + j) * xv;
        }
        for (int r = 0; r < rows; r++) {
            float s = sum_lanes(acc[r]);
            for (int64_t j = 0; j < start; j++) s += w[r * k + j] * xi[j];
            for (int64_t j = stop; j < k; j++) s += w[r * k + j] * xi[j];
            y[i * n + row + r] = b != NULL ? s + b[row + r] : s;
        }
    }
}

void modelcore_gemv_f32(const float *W, const float *x, const float *b, float *y, int64_t m, int64_t n, int64_t k,
                        int threads) {
    const int64_t blocks = (n + BLOCK_ROWS - 1) / BLOCK_ROWS;
#pragma omp parallel num_threads(threads)
    {
#ifdef _OPENMP
        const int64_t team = omp_get_num_threads(), id = omp_get_thread_num();
#else
        const int64_t team = 1, id = 0;
#endif
        const int64_t first = blocks * id / team, last = blocks * (id + 1) / team;
        /* every row starts at the same offset within a cache line when a row is a whole number of lines */
        const uintptr_t misaligned = (uintptr_t)W % 64;
        const int64_t start =
            k % LANES == 0 && misaligned % sizeof(float) == 0 && k >= LANES ? (64 - misaligned) % 64 / sizeof(float) : 0;
        for (int64_t block = first; block < last; block++) {
            const int64_t row = block * BLOCK_ROWS;
            const float *next = block + 1 < last ? W + (row + BLOCK_ROWS) * k : NULL;
            if (n - row >= BLOCK_ROWS)
                block_dots(W, x, b, y, m, n, k, row, BLOCK_ROWS, start, next);
            else
                block_dots(W, x, b, y, m, n, k, row, (int)(n - row), start, next);
        }
    }
}
