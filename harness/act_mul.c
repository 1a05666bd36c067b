/* act(gate) * up for bfloat16 tensors, in one pass, written over gate; rotary position
 * embeddings (`harness_rotary`) and Gemma 3's RMSNorm (`harness_gemma3_norm`) in one pass.
 *
 * An element-wise activation of a bfloat16 value has only 65,536 possible inputs, so `table` holds
 * the activation of every bfloat16 bit pattern as the model's own code computes it (made by torch
 * at start, widened to float32 exactly). The product of two bfloat16 values is exact in float32;
 * it is rounded to bfloat16 to nearest, ties to even, as torch's vector code rounds (a NaN becomes 0xffff). So each
 * element is what `act_fn(gate) * up` gives, with one read of each input and one write.
 *
 * Compiled by harness/kernels.py with the machine's C compiler when a bfloat16 model is scored on
 * CPU; the work is split over `threads` POSIX threads (the caller's thread takes the first part).
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    uint16_t *gate;
    const uint16_t *up;
    const float *table;
    int64_t n;
} part_t;

static inline uint16_t to_bfloat16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return 0xffff; /* NaN, as torch's vector code writes it */
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

static void run(const void *part) {
    const part_t *p = part;
    uint16_t *gate = p->gate;
    const uint16_t *up = p->up;
    const float *table = p->table;
    for (int64_t i = 0; i < p->n; i++) {
        uint32_t bits = (uint32_t)up[i] << 16;
        float u;
        memcpy(&u, &bits, sizeof u);
        gate[i] = to_bfloat16(table[gate[i]] * u);
    }
}

#define MAX_THREADS 256

static int clamp_threads(int threads) {
    return threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
}

typedef struct {
    void (*work)(const void *);
    const void *part;
} job_t;

static void *start_job(void *job) {
    const job_t *j = job;
    j->work(j->part);
    return 0;
}

/* `work` on each of the `used` parts (`size` bytes apart): a POSIX thread each for all but the first,
 * which the caller's thread takes (as it takes any part for which no thread could be had). */
static void run_parts(void (*work)(const void *), const void *parts, size_t size, int used) {
    pthread_t ids[MAX_THREADS];
    job_t jobs[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int k = 1; k < used; k++) {
        jobs[k] = (job_t){work, (const char *)parts + k * size};
        started[k] = pthread_create(&ids[k], 0, start_job, &jobs[k]) == 0;
    }
    if (used > 0) work(parts);
    for (int k = 1; k < used; k++) {
        if (started[k])
            pthread_join(ids[k], 0);
        else
            work(jobs[k].part); /* no thread to be had: this one does it */
    }
}

int harness_act_mul(uint16_t *gate, const uint16_t *up, const float *table, int64_t n, int threads) {
    part_t parts[MAX_THREADS];
    threads = clamp_threads(threads);
    int64_t chunk = (n + threads - 1) / threads;
    chunk = (chunk + 63) & ~(int64_t)63; /* whole cache lines per thread */
    int used = 0;
    for (int64_t start = 0; used < threads && start < n; start += chunk, used++)
        parts[used] = (part_t){gate + start, up + start, table, (start + chunk > n ? n : start + chunk) - start};
    run_parts(run, parts, sizeof parts[0], used);
    return 0;
}

/* Rotary position embeddings as transformers' `apply_rotary_pos_emb` computes them in bfloat16:
 * out = x * cos + rotate_half(x) * sin, where rotate_half(x) = cat(-x2, x1), each product and the
 * sum rounded to bfloat16 as torch rounds each of its operations (a product of two bfloat16 values
 * is exact in float32; the sum is rounded to float32 and then to bfloat16, as torch's is). x and out
 * are (B, H, T, D) with the strides given (D contiguous); cos and sin are (B, T, D), contiguous. */
static inline float widen(uint16_t v) {
    uint32_t bits = (uint32_t)v << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint16_t narrow(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    uint16_t rounded = (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
    return (bits & 0x7fffffffu) > 0x7f800000u ? (uint16_t)0xffff : rounded;
}

/* out[d] = x[d] * c[d] + sign * y[d] * s[d], each operation rounded to bfloat16 (sign is exact). */
static void rotate(const uint16_t *restrict x, const uint16_t *restrict y, const uint16_t *restrict c,
                   const uint16_t *restrict s, uint16_t *restrict out, int n, float sign) {
    for (int d = 0; d < n; d++)
        out[d] = narrow(widen(narrow(widen(x[d]) * widen(c[d]))) + widen(narrow((sign * widen(y[d])) * widen(s[d]))));
}

int harness_rotary(const uint16_t *x, uint16_t *out, const uint16_t *cos, const uint16_t *sin, int64_t batch,
                   int64_t heads, int64_t tokens, int64_t dim, int64_t stride_b, int64_t stride_h, int64_t stride_t) {
    int half = (int)(dim / 2);
    for (int64_t b = 0; b < batch; b++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t t = 0; t < tokens; t++) {
                int64_t at = b * stride_b + h * stride_h + t * stride_t, row = (b * tokens + t) * dim;
                rotate(x + at, x + at + half, cos + row, sin + row, out + at, half, -1.0f);               /* x1 c - x2 s */
                rotate(x + at + half, x + at, cos + row + half, sin + row + half, out + at + half, half, 1.0f); /* x2 c + x1 s */
            }
    return 0;
}

/* Gemma 3's RMSNorm of bfloat16 rows, in one pass per row, as torch computes
 * `(x.float() * rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)) * scale` rounded to bfloat16,
 * scale = 1 + weight (float32). A bfloat16 value's square is exact in float32; the squares are summed
 * in the order of torch's vectorised inner sum (ATen's SumKernel: `lanes`-wide vectors, four
 * interleaved accumulators, the cascade's levels of 16 steps, then the vectors' lanes in order),
 * the mean is that sum divided by the width, and each further operation rounds once, as torch's do.
 * `lanes` is the width of the vectors torch's sum uses on this CPU (8 with AVX2, and 8 too on a Xeon
 * with AVX-512 where it was seen; 16 allowed); the caller's probe checks the bits against torch's own
 * and keeps torch's where they differ. */
#define MAX_LANES 16

static inline __attribute__((always_inline)) float sum_of_squares(const uint16_t *x, int64_t width, const int lanes) {
    enum { ILP = 4, LEVELS = 4 };
    float acc[LEVELS][ILP][MAX_LANES];
    int64_t vectors = width / lanes, steps = vectors / ILP;
    int64_t ceil_log2 = 0;
    while (((int64_t)1 << ceil_log2) < steps) ceil_log2++;
    if (steps <= 2) ceil_log2 = 1;
    int64_t power = ceil_log2 / LEVELS > 4 ? ceil_log2 / LEVELS : 4, step = (int64_t)1 << power, mask = step - 1;
    int cascade = steps >= step; /* else the upper levels stay zero, and adding them changes nothing */
    memset(acc, 0, cascade ? sizeof acc : sizeof acc[0]);
    int64_t i = 0;
#define ADD_STEP(at)                                                        \
    for (int k = 0; k < ILP; k++) {                                         \
        const uint16_t *v = x + ((at) * ILP + k) * lanes;                   \
        for (int l = 0; l < lanes; l++) {                                   \
            float f = widen(v[l]);                                          \
            acc[0][k][l] += f * f;                                          \
        }                                                                   \
    }
    while (i + step <= steps) {
        for (int64_t j = 0; j < step; j++, i++) ADD_STEP(i)
        for (int j = 1; j < LEVELS; j++) {
            for (int k = 0; k < ILP; k++)
                for (int l = 0; l < lanes; l++) {
                    acc[j][k][l] += acc[j - 1][k][l];
                    acc[j - 1][k][l] = 0.0f;
                }
            if ((i & (mask << (j * power))) != 0) break;
        }
    }
    for (; i < steps; i++) ADD_STEP(i)
#undef ADD_STEP
    for (int j = 1; cascade && j < LEVELS; j++)
        for (int k = 0; k < ILP; k++)
            for (int l = 0; l < lanes; l++) acc[0][k][l] += acc[j][k][l];
    for (int64_t t = steps * ILP; t < vectors; t++)  /* vectors left over from the interleaving */
        for (int l = 0; l < lanes; l++) {
            float f = widen(x[t * lanes + l]);
            acc[0][0][l] += f * f;
        }
    for (int k = 1; k < ILP; k++)
        for (int l = 0; l < lanes; l++) acc[0][0][l] += acc[0][k][l];
    float total = 0.0f;
    for (int64_t t = vectors * lanes; t < width; t++) {  /* the scalar tail, then the lanes */
        float f = widen(x[t]);
        total += f * f;
    }
    for (int l = 0; l < lanes; l++) total += acc[0][0][l];
    return total;
}

typedef struct {
    const uint16_t *x;
    uint16_t *out;
    const float *scale;
    int64_t rows, width;
    float eps;
    int lanes;
} norm_part_t;

static inline __attribute__((always_inline)) void norm_rows_of(const norm_part_t *p, const int lanes) {
    const float *restrict scale = p->scale;
    for (int64_t r = 0; r < p->rows; r++) {
        const uint16_t *restrict x = p->x + r * p->width;
        uint16_t *restrict out = p->out + r * p->width;
        float mean = sum_of_squares(x, p->width, lanes) / (float)p->width;
        float inv = 1.0f / sqrtf(mean + p->eps);
        for (int64_t d = 0; d < p->width; d++) {
            float y = widen(x[d]) * inv;
            out[d] = narrow(y * scale[d]);
        }
    }
}

/* One copy per vector width, so the compiler sees the lanes as a constant (and vectorises them). */
static void norm_rows(const void *part) {
    const norm_part_t *p = part;
    switch (p->lanes) {
    case 16: norm_rows_of(p, 16); break;
    case 8: norm_rows_of(p, 8); break;
    default: norm_rows_of(p, p->lanes);
    }
}

int harness_gemma3_norm(const uint16_t *x, uint16_t *out, const float *scale, int64_t rows, int64_t width, float eps,
                        int lanes, int threads) {
    if (lanes < 1 || lanes > MAX_LANES) return 1;
    norm_part_t parts[MAX_THREADS];
    threads = clamp_threads(threads);
    int64_t chunk = (rows + threads - 1) / threads;
    int used = 0;
    for (int64_t start = 0; used < threads && start < rows; start += chunk, used++)
        parts[used] = (norm_part_t){x + start * width, out + start * width, scale,
                                    (start + chunk > rows ? rows : start + chunk) - start, width, eps, lanes};
    run_parts(norm_rows, parts, sizeof parts[0], used);
    return 0;
}

/* The mean of each row's squares, as the norm computes it: for the probe that checks the order of
 * the sum against torch's `x.float().pow(2).mean(-1)` (the norm's bfloat16 output would hide most
 * differences in the last bit of a sum). */
int harness_mean_squares(const uint16_t *x, float *out, int64_t rows, int64_t width, int lanes) {
    if (lanes < 1 || lanes > MAX_LANES) return 1;
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *row = x + r * width;
        out[r] = lanes == 16 ? sum_of_squares(row, width, 16) / (float)width
                 : lanes == 8 ? sum_of_squares(row, width, 8) / (float)width
                              : sum_of_squares(row, width, lanes) / (float)width;
    }
    return 0;
}
