/* A matrix-vector product for decoding on a CPU: y = x W^T (+ b) for a few rows of x.
 *
 * Decoding one token per sequence multiplies 1 to 3 rows by every weight matrix, so a step reads all weights
 * once and does almost no arithmetic per byte: the speed is how fast a kernel streams the weight from memory.
 * The first kernel reads the weight in its own row-major layout (no copy) in blocks of BLOCK_ROWS rows: for each
 * block it asks for the next block ahead of use (into L2), then takes each input row's dot products with the
 * block's rows (the block stays in L1 for the second and third input row). Threads split the blocks. The second
 * (tiled_part) reads a tiled copy of the weight, faster where the memory is fast (see there).
 *
 * Shapes: W (n, k) row-major, x (m, k), b (n) or NULL, y (m, n); all float32, contiguous.
 * Below it, a pre-norm decoder layer's decode step built on the same product (native_decoder.py).
 * Written in GCC vector extensions so one source compiles to AVX-512 or AVX2 with -march=native.
 */
#include <math.h>
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

typedef float vec8 __attribute__((vector_size(8 * sizeof(float))));
typedef float vec4 __attribute__((vector_size(4 * sizeof(float))));

typedef int32_t ivec __attribute__((vector_size(LANES * sizeof(int32_t))));

static inline vec splat(float value) {
    vec v;
    for (int l = 0; l < LANES; l++) v[l] = value;
    return v;
}

/* e^x per lane, within 1 ulp of expf for x in [-87, 88]; 0 below -87 (where e^x is under 1.7e-38; -inf gives 0),
 * 1.7e38 above 88 instead of the overflow; a NaN stays NaN. Range reduction by ln 2 in two parts and a degree-6
 * polynomial (the Cephes coefficients), in vector code: the decode step's SiLU and softmax call it some 25,000 times
 * a token, where a scalar expf call costs more than the rest of their arithmetic. */
static inline vec exp_lanes(vec x) {
    const ivec low = x < splat(-87.0f), high = x > splat(88.0f);
    x = (vec)((low & (ivec)splat(-87.0f)) | (high & (ivec)splat(88.0f)) | (~(low | high) & (ivec)x));
    const vec rounder = splat(12582912.0f); /* 1.5 * 2^23: adding it rounds to the nearest integer */
    const vec n = (x * splat(1.44269504088896341f) + rounder) - rounder;
    const vec r = (x - n * splat(0.693359375f)) + n * splat(2.12194440e-4f);
    vec p = splat(1.9875691500e-4f);
    p = p * r + splat(1.3981999507e-3f);
    p = p * r + splat(8.3334519073e-3f);
    p = p * r + splat(4.1665795894e-2f);
    p = p * r + splat(1.6666665459e-1f);
    p = p * r + splat(5.0000001201e-1f);
    p = p * (r * r) + r + splat(1.0f);
    const ivec exponent = (__builtin_convertvector(n, ivec) + 127) << 23;
    return (vec)(~low & (ivec)(p * (vec)exponent));
}

/* e^x for n values in place, through exp_lanes (the tail padded). */
static void exp_in_place(float *x, int64_t n) {
    int64_t j = 0;
    for (; j + LANES <= n; j += LANES) {
        const vec e = exp_lanes(load(x + j));
        memcpy(x + j, &e, sizeof e);
    }
    if (j < n) {
        float tail[LANES] = {0};
        memcpy(tail, x + j, (n - j) * sizeof(float));
        const vec e = exp_lanes(load(tail));
        memcpy(x + j, &e, (n - j) * sizeof(float));
    }
}

void modelcore_exp_f32(float *x, int64_t n) { exp_in_place(x, n); } /* for the accuracy test */

/* The lanes' sum as a tree (16 -> 8 -> 4 -> 1): a few dependent additions instead of sixteen, so the next block's
 * loads are not held up behind a long chain at every block's end. */
static inline float sum_lanes(vec v) {
    _Static_assert(LANES == 16, "sum_lanes adds 16 lanes");
    const vec8 half = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                      __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    const vec4 quarter =
        __builtin_shufflevector(half, half, 0, 1, 2, 3) + __builtin_shufflevector(half, half, 4, 5, 6, 7);
    return (quarter[0] + quarter[2]) + (quarter[1] + quarter[3]);
}

/* Dot products of rows [row, row + rows) of W with x[i] for every input row i; rows <= BLOCK_ROWS. Inlined so
 * that a full block's constant row count unrolls the accumulators into registers. The vector loop starts at
 * column `start`, where the rows' loads are cache-line aligned (a weight memory-mapped from a safetensors file
 * often is not, and loads that straddle two lines cost about 10%); columns before it and after the last full
 * vector are summed one by one. */
static inline __attribute__((always_inline)) void block_dots(const float *W, const float *x, const float *b, float *y,
                                                             int64_t m, int64_t ldy, int64_t k, int64_t row, int rows,
                                                             int64_t start, const float *next, int accumulate) {
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
            if (b != NULL) s += b[row + r];
            if (accumulate)
                y[i * ldy + row + r] += s;
            else
                y[i * ldy + row + r] = s;
        }
    }
}

/* This thread's share (thread `id` of `team`) of y = x W^T (+ b), or y += x W^T (+ b) when `accumulate`; y's rows
 * are `ldy` floats apart. Blocks of rows are split evenly, so each output is one row's sum in one order whatever
 * the team. */
static void gemv_part(const float *W, const float *x, const float *b, float *y, int64_t m, int64_t n, int64_t k,
                      int64_t ldy, int accumulate, int64_t id, int64_t team) {
    const int64_t blocks = (n + BLOCK_ROWS - 1) / BLOCK_ROWS;
    const int64_t first = blocks * id / team, last = blocks * (id + 1) / team;
    /* every row starts at the same offset within a cache line when a row is a whole number of lines */
    const uintptr_t misaligned = (uintptr_t)W % 64;
    const int64_t start =
        k % LANES == 0 && misaligned % sizeof(float) == 0 && k >= LANES ? (64 - misaligned) % 64 / sizeof(float) : 0;
    for (int64_t block = first; block < last; block++) {
        const int64_t row = block * BLOCK_ROWS;
        const float *next = block + 1 < last ? W + (row + BLOCK_ROWS) * k : NULL;
        if (n - row >= BLOCK_ROWS)
            block_dots(W, x, b, y, m, ldy, k, row, BLOCK_ROWS, start, next, accumulate);
        else
            block_dots(W, x, b, y, m, ldy, k, row, (int)(n - row), start, next, accumulate);
    }
}

/* ---- The same product on a tiled copy of the weight ----
 *
 * A copy of W (n, k) laid out as tiles of TILE_ROWS rows by LANES columns, (ceil(n / TILE_ROWS), ceil(k / LANES),
 * TILE_ROWS, LANES), zero-padded, so that a thread's share of the rows is one sequential stream in memory. On the
 * Zen 4 VM measured it reads at the rate torch.sum reads memory at every bandwidth the VM shows, where the
 * row-major kernel above drops to 0.81-0.85 of it at the highest (benchmarks/README.md); blocks of 4 or 8 rows read
 * slower than 2. The copy is made by native.tiled_copies. */
#define TILE_ROWS 2
#define TILE (TILE_ROWS * LANES)

/* Rows [row, row + rows) of the tiled weight for M input rows (M constant after inlining: 1, 2 or 3). */
static inline __attribute__((always_inline)) void tile_dots(const float *T, const float *x, const float *b, float *y,
                                                            const int M, int64_t ldy, int64_t k, int64_t row,
                                                            int rows, int accumulate) {
    const int64_t chunks = (k + LANES - 1) / LANES, full = k / LANES;
    const float *t = T + row / TILE_ROWS * chunks * TILE;
    vec acc[3][TILE_ROWS];
    for (int i = 0; i < M; i++)
        for (int r = 0; r < TILE_ROWS; r++) acc[i][r] = (vec){0};
    for (int64_t j = 0; j < full; j++, t += TILE) {
        vec w[TILE_ROWS];
        for (int r = 0; r < TILE_ROWS; r++) w[r] = load(t + r * LANES);
        for (int i = 0; i < M; i++) {
            const vec xv = load(x + i * k + j * LANES);
            for (int r = 0; r < TILE_ROWS; r++) acc[i][r] += w[r] * xv;
        }
    }
    if (full < chunks) { /* the last columns: x's tail padded with zeros like the tile */
        for (int i = 0; i < M; i++) {
            float tail[LANES] = {0};
            memcpy(tail, x + i * k + full * LANES, (k - full * LANES) * sizeof(float));
            const vec xv = load(tail);
            for (int r = 0; r < TILE_ROWS; r++) acc[i][r] += load(t + r * LANES) * xv;
        }
    }
    for (int i = 0; i < M; i++)
        for (int r = 0; r < rows; r++) {
            float s = sum_lanes(acc[i][r]);
            if (b != NULL) s += b[row + r];
            if (accumulate)
                y[i * ldy + row + r] += s;
            else
                y[i * ldy + row + r] = s;
        }
}

/* Rows [first, last) of n for thread `id` of `team` when groups of `granule` rows are split evenly (tiles here,
 * gemv_part's blocks of rows in the decoder stack). */
static inline void rows_share(int64_t n, int64_t granule, int64_t id, int64_t team, int64_t *first, int64_t *last) {
    const int64_t groups = (n + granule - 1) / granule;
    *first = groups * id / team * granule;
    *last = groups * (id + 1) / team * granule;
    if (*last > n) *last = n;
}

/* gemv_part on a tiled copy T of W, for 1 to 3 input rows (more go three at a time); with TILE_ROWS 2 a tile is
 * whole or has one row. */
static void tiled_part(const float *T, const float *x, const float *b, float *y, int64_t m, int64_t n, int64_t k,
                       int64_t ldy, int accumulate, int64_t id, int64_t team) {
    int64_t first, last;
    rows_share(n, TILE_ROWS, id, team, &first, &last);
    for (int64_t i = 0; i < m; i += 3) {
        const int64_t rows_x = m - i < 3 ? m - i : 3;
        const float *xi = x + i * k;
        float *yi = y + i * ldy;
        /* every count constant where tile_dots is inlined, so its accumulators stay in registers (a runtime row
         * count spilled them to the stack; the read rate measured the same either way on the Zen 4) */
        for (int64_t row = first; row < last; row += TILE_ROWS) {
            const int whole = last - row >= TILE_ROWS;
            if (rows_x == 1 && whole)
                tile_dots(T, xi, b, yi, 1, ldy, k, row, TILE_ROWS, accumulate);
            else if (rows_x == 1)
                tile_dots(T, xi, b, yi, 1, ldy, k, row, 1, accumulate);
            else if (rows_x == 2 && whole)
                tile_dots(T, xi, b, yi, 2, ldy, k, row, TILE_ROWS, accumulate);
            else if (rows_x == 2)
                tile_dots(T, xi, b, yi, 2, ldy, k, row, 1, accumulate);
            else if (whole)
                tile_dots(T, xi, b, yi, 3, ldy, k, row, TILE_ROWS, accumulate);
            else
                tile_dots(T, xi, b, yi, 3, ldy, k, row, 1, accumulate);
        }
    }
}

#ifdef _OPENMP
#define TEAM() const int64_t team = omp_get_num_threads(), id = omp_get_thread_num()
#else
#define TEAM() const int64_t team = 1, id = 0
#endif

void modelcore_gemv_f32(const float *W, const float *x, const float *b, float *y, int64_t m, int64_t n, int64_t k,
                        int threads) {
#pragma omp parallel num_threads(threads)
    {
        TEAM();
        gemv_part(W, x, b, y, m, n, k, n, 0, id, team);
    }
}

void modelcore_gemv_tiled_f32(const float *T, const float *x, const float *b, float *y, int64_t m, int64_t n,
                              int64_t k, int threads) {
#pragma omp parallel num_threads(threads)
    {
        TEAM();
        tiled_part(T, x, b, y, m, n, k, n, 0, id, team);
    }
}

/* ---- Pre-norm decoder layers for one new token per sequence (Llama and the families built like it) ----
 *
 * Between its seven matrix-vector products a decoder layer has some fifty small operations on a few thousand
 * floats (norms, rotary positions, attention over the cache, the gated activation, residual adds). As torch ops
 * they cost a few microseconds each, and the interpreter's own work between them runs with caches just flushed
 * by the weights streaming through: together about a quarter of a decode step of a 100M model
 * (benchmarks/README.md). modelcore_decoder_stack_f32 runs a stack of such layers in C, in one OpenMP region,
 * with a barrier between dependent phases. Per layer, on the residual stream h (m, hidden):
 *
 *   xn = rms_norm(h); q, k, v = xn Wq^T, xn Wk^T, xn Wv^T (+ biases); rotate q and k;
 *   write k and v into the layer's cache at position `write`;
 *   a = softmax(q K^T * scaling over the allowed positions) V per head; h += a Wo^T (+ bo);
 *   xn = rms_norm(h); h += (silu(xn Wg^T) * (xn Wu^T)) Wd^T (+ biases)
 *
 * Rotary positions use the "rotate half" layout: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) over the two
 * halves of a head. Query head j reads key/value head j / (heads / kv_heads) (grouped-query attention). The
 * caches are the caller's tensors (B, kv_heads, S, head_dim) with any strides but a contiguous last dimension. */

typedef struct {
    int64_t hidden, heads, kv_heads, head_dim, intermediate;
    int64_t tiled; /* nonzero: the seven weights are tiled copies (tiled_part), else row-major (gemv_part) */
    float eps_attention, eps_mlp, scaling;
    const float *norm_attention, *norm_mlp;
    const float *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo;
    const float *wg, *bg, *wu, *bu, *wd, *bd;
} modelcore_decoder_layer;

typedef struct {
    float *keys, *values;                       /* the layer's cache, (B, kv_heads, S, head_dim) */
    int64_t k_sb, k_sh, k_ss, v_sb, v_sh, v_ss; /* their strides in floats */
    int64_t length;                             /* S: the positions attended over, the new one included */
    int64_t write;                              /* where the new token's key and value go */
} modelcore_layer_cache;

static void rms_norm(const float *x, const float *weight, float eps, int64_t n, float *out) {
    float squares = 0.0f;
#pragma omp simd reduction(+ : squares)
    for (int64_t c = 0; c < n; c++) squares += x[c] * x[c];
    const float scale = 1.0f / sqrtf(squares / (float)n + eps);
    for (int64_t c = 0; c < n; c++) out[c] = weight[c] * (x[c] * scale);
}

static void rotate(float *x, const float *cos, const float *sin, int64_t head_dim) {
    const int64_t half = head_dim / 2;
    for (int64_t d = 0; d < half; d++) {
        const float x1 = x[d], x2 = x[d + half];
        x[d] = x1 * cos[d] - x2 * sin[d];
        x[d + half] = x2 * cos[d + half] + x1 * sin[d + half];
    }
}

/* The `group` query heads that share one key/value head (contiguous in q and out) over S cached positions, each
 * out = softmax(q . K[s] * scaling over the allowed s) V: a key or value row is read once for the group instead of
 * once per head (group 1: one head). scores: group * S. */
static void attend_group(const float *q, const float *K, int64_t k_ss, const float *V, int64_t v_ss, int64_t S,
                         const uint8_t *mask, int64_t mask_ss, float scaling, int64_t hd, int64_t group,
                         float *scores, float *out) {
    float top[group], total[group];
    for (int64_t g = 0; g < group; g++) top[g] = -INFINITY, total[g] = 0.0f;
    for (int64_t s = 0; s < S; s++) {
        const float *key = K + s * k_ss;
        const int allowed = mask == NULL || mask[s * mask_ss];
        for (int64_t g = 0; g < group; g++) {
            if (!allowed) {
                scores[g * S + s] = -INFINITY;
                continue;
            }
            const float *qg = q + g * hd;
            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int64_t d = 0; d < hd; d++) dot += qg[d] * key[d];
            scores[g * S + s] = dot * scaling;
            if (scores[g * S + s] > top[g]) top[g] = scores[g * S + s];
        }
    }
    for (int64_t d = 0; d < group * hd; d++) out[d] = 0.0f;
    if (top[0] == -INFINITY) return; /* nothing to attend to (the model never asks for this): zeros */
    for (int64_t g = 0; g < group; g++) {
        for (int64_t s = 0; s < S; s++) scores[g * S + s] -= top[g];
        exp_in_place(scores + g * S, S); /* masked positions: exp(-inf) = 0 */
    }
    for (int64_t s = 0; s < S; s++) {
        if (mask != NULL && !mask[s * mask_ss]) continue; /* masked, for the whole group */
        const float *value = V + s * v_ss;
        for (int64_t g = 0; g < group; g++) {
            const float p = scores[g * S + s];
            total[g] += p;
            float *og = out + g * hd;
#pragma omp simd
            for (int64_t d = 0; d < hd; d++) og[d] += p * value[d];
        }
    }
    for (int64_t g = 0; g < group; g++) {
        const float inverse = 1.0f / total[g];
        for (int64_t d = 0; d < hd; d++) out[g * hd + d] *= inverse;
    }
}

/* gate = silu(gate) * up = gate / (1 + e^-gate) * up, for n values. */
static void silu_times(float *gate, const float *up, int64_t n) {
    int64_t j = 0;
    for (; j + LANES <= n; j += LANES) {
        const vec g = load(gate + j), e = exp_lanes(-g);
        const vec out = g / (splat(1.0f) + e) * load(up + j);
        memcpy(gate + j, &out, sizeof out);
    }
    for (; j < n; j++) gate[j] = gate[j] / (1.0f + expf(-gate[j])) * up[j];
}

/* This thread's share of y (+)= x W^T (+ b) through the layer's layout of weights. */
static inline void product(const modelcore_decoder_layer *L, const float *W, const float *x, const float *b, float *y,
                           int64_t m, int64_t n, int64_t k, int accumulate, int64_t id, int64_t team) {
    if (L->tiled)
        tiled_part(W, x, b, y, m, n, k, n, accumulate, id, team);
    else
        gemv_part(W, x, b, y, m, n, k, n, accumulate, id, team);
}

/* Rows [first, last) of an n-row product that `product` gives thread `id` of `team`. */
static void share(const modelcore_decoder_layer *L, int64_t n, int64_t id, int64_t team, int64_t *first,
                  int64_t *last) {
    rows_share(n, L->tiled ? TILE_ROWS : BLOCK_ROWS, id, team, first, last);
}

/* Whether each thread's rows of the query and of the key/value products are exactly the heads of whole key/value
 * groups, [kv0, kv1) for thread `id` (the same answer in every thread). Then a thread rotates, caches and attends
 * with its own heads right after its products, with no barrier between (12 heads and 4 key/value heads on 2
 * threads: 6 and 2 each). */
static int own_heads(const modelcore_decoder_layer *L, int64_t id, int64_t team, int64_t *kv0, int64_t *kv1) {
    const int64_t hd = L->head_dim, per_group = L->heads / L->kv_heads * hd;
    for (int64_t t = 0; t < team; t++) {
        int64_t qf, ql, kf, kl;
        share(L, L->heads * hd, t, team, &qf, &ql);
        share(L, L->kv_heads * hd, t, team, &kf, &kl);
        if (ql < qf) ql = qf; /* a thread with no rows */
        if (kl < kf) kl = kf;
        if (qf % per_group || ql % per_group || kf != qf / per_group * hd || kl != ql / per_group * hd) return 0;
        if (t == id) *kv0 = qf / per_group, *kv1 = ql / per_group;
    }
    return 1;
}

/* Rotation, caching and attention when a thread's product rows are its own key/value groups (own_heads). */
static void attend_own(const modelcore_decoder_layer *L, const modelcore_layer_cache *cache, int64_t m,
                       const float *cos, const float *sin, int64_t rope_stride, const uint8_t *mask, int64_t mask_sb,
                       int64_t mask_ss, float *q, float *k, const float *v, float *attn, float *scores, int64_t kv0,
                       int64_t kv1) {
    const int64_t hd = L->head_dim, nq = L->heads * hd, nk = L->kv_heads * hd, group = L->heads / L->kv_heads;
    for (int64_t i = 0; i < m; i++)
        for (int64_t kv = kv0; kv < kv1; kv++) {
            float *heads = q + i * nq + kv * group * hd, *key = k + i * nk + kv * hd;
            const float *cos_i = cos + i * rope_stride, *sin_i = sin + i * rope_stride;
            for (int64_t g = 0; g < group; g++) rotate(heads + g * hd, cos_i, sin_i, hd);
            rotate(key, cos_i, sin_i, hd);
            float *keys = cache->keys + i * cache->k_sb + kv * cache->k_sh;
            float *values = cache->values + i * cache->v_sb + kv * cache->v_sh;
            memcpy(keys + cache->write * cache->k_ss, key, hd * sizeof(float));
            memcpy(values + cache->write * cache->v_ss, v + i * nk + kv * hd, hd * sizeof(float));
            attend_group(heads, keys, cache->k_ss, values, cache->v_ss, cache->length,
                         mask == NULL ? NULL : mask + i * mask_sb, mask_ss, L->scaling, hd, group, scores,
                         attn + i * nq + kv * group * hd);
        }
}

/* The same by single heads, each thread taking every team-th, with barriers between (any split of the rows). */
static void attend_shared(const modelcore_decoder_layer *L, const modelcore_layer_cache *cache, int64_t m,
                          const float *cos, const float *sin, int64_t rope_stride, const uint8_t *mask,
                          int64_t mask_sb, int64_t mask_ss, float *q, float *k, const float *v, float *attn,
                          float *scores, int64_t id, int64_t team) {
    const int64_t hd = L->head_dim, nq = L->heads * hd, nk = L->kv_heads * hd;
    const int64_t group = L->heads / L->kv_heads, rotated = L->heads + L->kv_heads;
#pragma omp barrier
    for (int64_t item = id; item < m * rotated; item += team) {
        const int64_t i = item / rotated, head = item % rotated;
        if (head < L->heads) {
            rotate(q + i * nq + head * hd, cos + i * rope_stride, sin + i * rope_stride, hd);
            continue;
        }
        const int64_t kv = head - L->heads;
        float *key = k + i * nk + kv * hd;
        rotate(key, cos + i * rope_stride, sin + i * rope_stride, hd);
        memcpy(cache->keys + i * cache->k_sb + kv * cache->k_sh + cache->write * cache->k_ss, key, hd * sizeof(float));
        memcpy(cache->values + i * cache->v_sb + kv * cache->v_sh + cache->write * cache->v_ss, v + i * nk + kv * hd,
               hd * sizeof(float));
    }
#pragma omp barrier
    for (int64_t item = id; item < m * L->heads; item += team) {
        const int64_t i = item / L->heads, head = item % L->heads, kv = head / group;
        attend_group(q + i * nq + head * hd, cache->keys + i * cache->k_sb + kv * cache->k_sh, cache->k_ss,
                     cache->values + i * cache->v_sb + kv * cache->v_sh, cache->v_ss, cache->length,
                     mask == NULL ? NULL : mask + i * mask_sb, mask_ss, L->scaling, hd, 1, scores,
                     attn + i * nq + head * hd);
    }
}

/* One layer, run by every thread of the region (thread `id` of `team`); ends with a barrier, so h is whole.
 * scores: this thread's heads / kv_heads * S floats. */
static void decoder_layer(const modelcore_decoder_layer *L, const modelcore_layer_cache *cache, float *h, int64_t m,
                          const float *cos, const float *sin, int64_t rope_stride, const uint8_t *mask,
                          int64_t mask_sb, int64_t mask_ss, float *xn, float *q, float *k, float *v, float *attn,
                          float *gate, float *up, float *scores, int64_t id, int64_t team) {
    const int64_t c = L->hidden, hd = L->head_dim, nq = L->heads * hd, nk = L->kv_heads * hd;
    const int64_t inter = L->intermediate;
    /* each thread norms every row into its own xn (a few thousand values: cheaper than a barrier and a thread
     * waiting while the other norms); h is whole after the previous layer's last barrier */
    for (int64_t i = 0; i < m; i++) rms_norm(h + i * c, L->norm_attention, L->eps_attention, c, xn + i * c);
    product(L, L->wq, xn, L->bq, q, m, nq, c, 0, id, team);
    product(L, L->wk, xn, L->bk, k, m, nk, c, 0, id, team);
    product(L, L->wv, xn, L->bv, v, m, nk, c, 0, id, team);
    int64_t kv0 = 0, kv1 = 0;
    if (own_heads(L, id, team, &kv0, &kv1))
        attend_own(L, cache, m, cos, sin, rope_stride, mask, mask_sb, mask_ss, q, k, v, attn, scores, kv0, kv1);
    else
        attend_shared(L, cache, m, cos, sin, rope_stride, mask, mask_sb, mask_ss, q, k, v, attn, scores, id, team);
#pragma omp barrier
    product(L, L->wo, attn, L->bo, h, m, c, nq, 1, id, team);
#pragma omp barrier
    for (int64_t i = 0; i < m; i++) rms_norm(h + i * c, L->norm_mlp, L->eps_mlp, c, xn + i * c);
    product(L, L->wg, xn, L->bg, gate, m, inter, c, 0, id, team);
    product(L, L->wu, xn, L->bu, up, m, inter, c, 0, id, team);
    int64_t first, last; /* this thread's rows of gate and up, the same rows the product gave it for both */
    share(L, inter, id, team, &first, &last);
    for (int64_t i = 0; i < m; i++) silu_times(gate + i * inter + first, up + i * inter + first, last - first);
#pragma omp barrier
    product(L, L->wd, gate, L->bd, h, m, c, inter, 1, id, team);
#pragma omp barrier
}

/* `count` layers of equal sizes in order, on h (m, hidden) in place. mask: (m or 1, S) bytes, nonzero where a
 * position may be attended (strides mask_sb, mask_ss; mask_sb 0 shares one row), or NULL for every position.
 * scratch: m * (2 * heads * head_dim + 2 * kv_heads * head_dim + 2 * intermediate) floats, then threads * m * hidden
 * (each thread's normed rows), then threads * heads / kv_heads * (the longest cache's S). */
void modelcore_decoder_stack_f32(const modelcore_decoder_layer *layers, const modelcore_layer_cache *caches,
                                 int64_t count, float *h, int64_t m, const float *cos, const float *sin,
                                 int64_t rope_stride, const uint8_t *mask, int64_t mask_sb, int64_t mask_ss,
                                 const float *final_norm, float final_eps, float *scratch, int threads) {
    const modelcore_decoder_layer *L = layers;
    const int64_t c = L->hidden, nq = L->heads * L->head_dim, nk = L->kv_heads * L->head_dim;
    float *q = scratch, *k = q + m * nq, *v = k + m * nk, *attn = v + m * nk;
    float *gate = attn + m * nq, *up = gate + m * L->intermediate, *normed = up + m * L->intermediate;
    float *scores = normed + threads * m * c;
    int64_t longest = 0;
    for (int64_t l = 0; l < count; l++) longest = caches[l].length > longest ? caches[l].length : longest;
#pragma omp parallel num_threads(threads)
    {
        TEAM();
        float *xn = normed + id * m * c, *own_scores = scores + id * (L->heads / L->kv_heads) * longest;
        for (int64_t l = 0; l < count; l++)
            decoder_layer(layers + l, caches + l, h, m, cos, sin, rope_stride, mask, mask_sb, mask_ss, xn, q, k, v,
                          attn, gate, up, own_scores, id, team);
        if (final_norm != NULL) /* the model's norm after its last layer (h is whole after the layer's barrier) */
            for (int64_t i = id; i < m; i += team) rms_norm(h + i * c, final_norm, final_eps, c, h + i * c);
    }
}

/* ---- The first index of each row's maximum, as torch.max(dim=-1).indices: a NaN counts as the maximum ----
 *
 * For greedy decoding, on the logits (rows, n). In the decode loop this runs right after the weights have streamed
 * through the caches, where torch's reduction costs 80-200 us in cache misses on its own code; this is two straight
 * passes over a row (128 KB for 32,000 logits). One thread (the caller's). */
void modelcore_argmax_f32(const float *x, int64_t rows, int64_t n, int64_t *out) {
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * n;
        float best = -INFINITY;
        int nan = 0;
        for (int64_t j = 0; j < n; j++) {
            best = row[j] > best ? row[j] : best;
            nan |= row[j] != row[j];
        }
        int64_t index = 0;
        for (int64_t j = 0; j < n; j++)
            if (nan ? row[j] != row[j] : row[j] == best) {
                index = j;
                break;
            }
        out[r] = index;
    }
}
