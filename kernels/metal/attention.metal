// Fused scaled dot-product attention (online softmax, no score matrix), f32 arithmetic for
// f32/f16/bf16 inputs. Mirrors the CPU kernel in src/ops/attention_cpu.rs and
// kernels/cuda/attention.cu: one simdgroup (32 lanes) per query row, ATTN_WARPS rows per
// threadgroup, keys and values staged through threadgroup memory in tiles of kt <= 32 rows.
#include <metal_stdlib>
using namespace metal;

#define ATTN_WARPS 4
#define ATTN_MAX_DIM 256
#define ATTN_PER_LANE (ATTN_MAX_DIM / 32)

struct AttentionParams {
    int heads;
    int kv_heads;
    int sq;
    int sk;
    int d;
    int dv;
    float scale;
    int causal;
    int kt;
};

template <typename T>
kernel void attention_fwd(device const T* q [[buffer(0)]],
                          device const T* k [[buffer(1)]],
                          device const T* v [[buffer(2)]],
                          device T* out [[buffer(3)]],
                          constant AttentionParams& p [[buffer(4)]],
                          threadgroup float* smem [[threadgroup(0)]],
                          uint3 tg [[threadgroup_position_in_grid]],
                          uint tid [[thread_index_in_threadgroup]],
                          uint lane [[thread_index_in_simdgroup]],
                          uint warp [[simdgroup_index_in_threadgroup]]) {
    threadgroup float* ks = smem;              // kt x d
    threadgroup float* vs = smem + p.kt * p.d; // kt x dv
    const int bh = tg.y;
    const int b = bh / p.heads, h = bh % p.heads;
    const long kv = long(b) * p.kv_heads + h / (p.heads / p.kv_heads);
    const int q_first = tg.x * ATTN_WARPS;
    const int qi = q_first + int(warp);
    const bool active = qi < p.sq;
    const int offset = p.sk > p.sq ? p.sk - p.sq : 0;
    const float NEG_INF = -INFINITY;

    float qr[ATTN_PER_LANE], acc[ATTN_PER_LANE];
    for (int t = 0; t < ATTN_PER_LANE; t++) {
        int c = int(lane) + 32 * t;
        qr[t] = (active && c < p.d) ? float(q[(long(bh) * p.sq + qi) * p.d + c]) * p.scale : 0.0f;
        acc[t] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    const int q_last = min(q_first + ATTN_WARPS, p.sq) - 1;
    const int kend = p.causal ? min(p.sk, offset + q_last + 1) : p.sk;
    for (int k0 = 0; k0 < kend; k0 += p.kt) {
        const int kc = min(p.kt, kend - k0);
        threadgroup_barrier(mem_flags::mem_threadgroup);
        for (int i = int(tid); i < kc * p.d; i += 32 * ATTN_WARPS)
            ks[i] = float(k[(kv * p.sk + k0) * p.d + i]);
        for (int i = int(tid); i < kc * p.dv; i += 32 * ATTN_WARPS)
            vs[i] = float(v[(kv * p.sk + k0) * p.dv + i]);
        threadgroup_barrier(mem_flags::mem_threadgroup);
        if (!active) continue;
        float s_mine = NEG_INF;
        for (int j = 0; j < kc; j++) {
            float part = 0.0f;
            for (int t = 0; t < ATTN_PER_LANE; t++) {
                int c = int(lane) + 32 * t;
                if (c < p.d) part += qr[t] * ks[j * p.d + c];
            }
            part = simd_sum(part);
            bool visible = !p.causal || (k0 + j) <= offset + qi;
            if (int(lane) == j) s_mine = visible ? part : NEG_INF;
        }
        const float m_new = max(m, simd_max(s_mine));
        if (m_new == NEG_INF) continue;
        const float pr = s_mine == NEG_INF ? 0.0f : exp(s_mine - m_new);
        const float alpha = m == NEG_INF ? 0.0f : exp(m - m_new);
        l = l * alpha + simd_sum(pr);
        for (int t = 0; t < ATTN_PER_LANE; t++) acc[t] *= alpha;
        for (int j = 0; j < kc; j++) {
            const float pj = simd_shuffle(pr, ushort(j));
            for (int t = 0; t < ATTN_PER_LANE; t++) {
                int c = int(lane) + 32 * t;
                if (c < p.dv) acc[t] += pj * vs[j * p.dv + c];
            }
        }
        m = m_new;
    }
    if (!active) return;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int t = 0; t < ATTN_PER_LANE; t++) {
        int c = int(lane) + 32 * t;
        if (c < p.dv) out[(long(bh) * p.sq + qi) * p.dv + c] = T(acc[t] * inv);
    }
}

#define instantiate_attention(suffix, T)                                              \
    template [[host_name("attention_fwd_" #suffix)]] [[kernel]] decltype(attention_fwd<T>) \
        attention_fwd<T>;

instantiate_attention(f32, float)
instantiate_attention(f16, half)
#if defined(__HAVE_BFLOAT__)
instantiate_attention(bf16, bfloat)
#endif
