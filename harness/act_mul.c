/* act(gate) * up for bfloat16 tensors, in one pass, written over gate; and rotary position
 * embeddings (`harness_rotary`) in one pass.
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

static void run(const part_t *p) {
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

static void *worker(void *p) {
    run((const part_t *)p);
    return 0;
}

#define MAX_THREADS 256

int harness_act_mul(uint16_t *gate, const uint16_t *up, const float *table, int64_t n, int threads) {
    pthread_t ids[MAX_THREADS];
    part_t parts[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    int64_t chunk = (n + threads - 1) / threads;
    chunk = (chunk + 63) & ~(int64_t)63; /* whole cache lines per thread */
    int used = 0;
    for (int k = 0; k < threads; k++) {
        int64_t start = (int64_t)k * chunk;
        if (start >= n) break;
        int64_t end = start + chunk > n ? n : start + chunk;
        parts[k] = (part_t){gate + start, up + start, table, end - start};
        used = k + 1;
        if (k > 0) started[k] = pthread_create(&ids[k], 0, worker, &parts[k]) == 0;
    }
    if (used > 0) run(&parts[0]);
    for (int k = 1; k < used; k++) {
        if (started[k])
            pthread_join(ids[k], 0);
        else
            run(&parts[k]); /* no thread to be had: this one does it */
    }
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
