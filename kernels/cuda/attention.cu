// Fused scaled dot-product attention (online softmax, no score matrix), f32 arithmetic for
// f32/f16/bf16 inputs. Mirrors the CPU kernel in src/ops/attention_cpu.rs: q (B,H,Sq,D),
// k (B,Hkv,Sk,D), v (B,Hkv,Sk,Dv) contiguous, GQA head h reads kv head h / (H / Hkv);
// causal: query i (the last Sq of Sk positions) sees keys j <= Sk - Sq + i.
//
// One warp per query row, ATTN_WARPS rows per block; keys and values are staged through
// shared memory in tiles of `kt <= 32` rows (one score per lane). D, Dv <= ATTN_MAX_DIM.
#include "common.cuh"

#define ATTN_WARPS 4
#define ATTN_MAX_DIM 256
#define ATTN_PER_LANE (ATTN_MAX_DIM / 32)
#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(FULL_MASK, x, o);
    return x;
}

__device__ __forceinline__ float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(FULL_MASK, x, o));
    return x;
}

template <typename T>
__device__ void attention_fwd(const T* q, const T* k, const T* v, T* out, int heads,
                              int kv_heads, int sq, int sk, int d, int dv, float scale,
                              int causal, int kt) {
    extern __shared__ float smem[];
    float* ks = smem;           // kt x d
    float* vs = smem + kt * d;  // kt x dv
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int bh = blockIdx.y;
    const int b = bh / heads, h = bh % heads;
    const int64_t kv = (int64_t)b * kv_heads + h / (heads / kv_heads);
    const int q_first = blockIdx.x * ATTN_WARPS;
    const int qi = q_first + warp;
    const bool active = qi < sq;
    const int offset = sk > sq ? sk - sq : 0;
    const float NEG_INF = -INFINITY;

    float qr[ATTN_PER_LANE], acc[ATTN_PER_LANE];
#pragma unroll
    for (int t = 0; t < ATTN_PER_LANE; t++) {
        int c = lane + 32 * t;
        qr[t] = (active && c < d) ? to_f32(q[((int64_t)bh * sq + qi) * d + c]) * scale : 0.0f;
        acc[t] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    // Keys any row of this block may see (block-uniform, so every thread syncs alike).
    const int q_last = min(q_first + ATTN_WARPS, sq) - 1;
    const int kend = causal ? min(sk, offset + q_last + 1) : sk;
    for (int k0 = 0; k0 < kend; k0 += kt) {
        const int kc = min(kt, kend - k0);
        __syncthreads();
        for (int i = threadIdx.x; i < kc * d; i += blockDim.x)
            ks[i] = to_f32(k[(kv * sk + k0) * d + i]);
        for (int i = threadIdx.x; i < kc * dv; i += blockDim.x)
            vs[i] = to_f32(v[(kv * sk + k0) * dv + i]);
        __syncthreads();
        if (!active) continue;  // warp-uniform
        // Lane j keeps the score of key k0 + j.
        float s_mine = NEG_INF;
        for (int j = 0; j < kc; j++) {
            float part = 0.0f;
#pragma unroll
            for (int t = 0; t < ATTN_PER_LANE; t++) {
                int c = lane + 32 * t;
                if (c < d) part += qr[t] * ks[j * d + c];
            }
            part = warp_sum(part);
            bool visible = !causal || (k0 + j) <= offset + qi;
            if (lane == j) s_mine = visible ? part : NEG_INF;
        }
        const float m_new = fmaxf(m, warp_max(s_mine));
        if (m_new == NEG_INF) continue;  // every key so far masked (warp-uniform)
        const float p = s_mine == NEG_INF ? 0.0f : expf(s_mine - m_new);
        const float alpha = m == NEG_INF ? 0.0f : expf(m - m_new);
        l = l * alpha + warp_sum(p);
#pragma unroll
        for (int t = 0; t < ATTN_PER_LANE; t++) acc[t] *= alpha;
        for (int j = 0; j < kc; j++) {
            const float pj = __shfl_sync(FULL_MASK, p, j);
#pragma unroll
            for (int t = 0; t < ATTN_PER_LANE; t++) {
                int c = lane + 32 * t;
                if (c < dv) acc[t] += pj * vs[j * dv + c];
            }
        }
        m = m_new;
    }
    if (!active) return;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int t = 0; t < ATTN_PER_LANE; t++) {
        int c = lane + 32 * t;
        if (c < dv) out[((int64_t)bh * sq + qi) * dv + c] = from_f32<T>(acc[t] * inv);
    }
}

#define ATTENTION_FWD_PARAMS(T)                                                         \
    (const T* q, const T* k, const T* v, T* out, int heads, int kv_heads, int sq, int sk, \
     int d, int dv, float scale, int causal, int kt)
UNIRES_FLOAT_KERNELS(attention_fwd, ATTENTION_FWD_PARAMS,
                     (q, k, v, out, heads, kv_heads, sq, sk, d, dv, scale, causal, kt))
