// Fused mask upsampling: low-resolution logits (N, h, w) -> bilinear to the padded size ->
// crop the valid top-left region -> bilinear to the original size -> mask / probability /
// logit, in one pass (4 x 4 exact taps per output pixel). Mirrors src/ops/upsample.rs and
// kernels/cuda/mask_upsample.cu.
#include <metal_stdlib>
using namespace metal;

struct MaskUpsampleParams {
    int n;
    int h;
    int w;
    int padded_h;
    int padded_w;
    int valid_h;
    int valid_w;
    int out_h;
    int out_w;
    int mode; // 1: probabilities, 2: logits (f32 kernels only)
};

static void linear_tap(int o, int in, int out, thread int& i0, thread int& i1, thread float& l) {
    const float scale = float(in) / float(out);
    const float src = max((float(o) + 0.5f) * scale - 0.5f, 0.0f);
    const int a = min(int(src), in - 1);
    i0 = a;
    i1 = min(a + 1, in - 1);
    l = clamp(src - float(a), 0.0f, 1.0f);
}

static void axis_taps(int o, int low, int padded, int valid, int out, thread int* idx,
                      thread float* wt) {
    int v0, v1, a0, a1, b0, b1;
    float l2, la, lb;
    linear_tap(o, valid, out, v0, v1, l2);
    linear_tap(v0, low, padded, a0, a1, la);
    linear_tap(v1, low, padded, b0, b1, lb);
    idx[0] = a0;
    idx[1] = a1;
    idx[2] = b0;
    idx[3] = b1;
    wt[0] = (1.0f - l2) * (1.0f - la);
    wt[1] = (1.0f - l2) * la;
    wt[2] = l2 * (1.0f - lb);
    wt[3] = l2 * lb;
}

template <typename T>
static float upsampled(device const T* low, constant MaskUpsampleParams& p, uint i) {
    const int x = i % p.out_w;
    const int y = (i / p.out_w) % p.out_h;
    const long m = i / (p.out_w * p.out_h);
    int iy[4], ix[4];
    float wy[4], wx[4];
    axis_taps(y, p.h, p.padded_h, p.valid_h, p.out_h, iy, wy);
    axis_taps(x, p.w, p.padded_w, p.valid_w, p.out_w, ix, wx);
    float value = 0.0f;
    for (int a = 0; a < 4; a++) {
        device const T* row = low + (m * p.h + iy[a]) * p.w;
        float r = 0.0f;
        for (int b = 0; b < 4; b++) r += wx[b] * float(row[ix[b]]);
        value += wy[a] * r;
    }
    return value;
}

template <typename T>
kernel void mask_upsample_masks(device const T* low [[buffer(0)]],
                                device uchar* out [[buffer(1)]],
                                constant MaskUpsampleParams& p [[buffer(2)]],
                                uint i [[thread_position_in_grid]]) {
    if (i >= uint(p.n * p.out_h * p.out_w)) return;
    out[i] = upsampled(low, p, i) > 0.0f ? 1 : 0;
}

template <typename T>
kernel void mask_upsample_values(device const T* low [[buffer(0)]],
                                 device float* out [[buffer(1)]],
                                 constant MaskUpsampleParams& p [[buffer(2)]],
                                 uint i [[thread_position_in_grid]]) {
    if (i >= uint(p.n * p.out_h * p.out_w)) return;
    const float v = upsampled(low, p, i);
    out[i] = p.mode == 1 ? 1.0f / (1.0f + exp(-v)) : v;
}

#define instantiate_mask_upsample(suffix, T)                                                \
    template [[host_name("mask_upsample_masks_" #suffix)]] [[kernel]]                       \
        decltype(mask_upsample_masks<T>) mask_upsample_masks<T>;                             \
    template [[host_name("mask_upsample_values_" #suffix)]] [[kernel]]                      \
        decltype(mask_upsample_values<T>) mask_upsample_values<T>;

instantiate_mask_upsample(f32, float)
instantiate_mask_upsample(f16, half)
#if defined(__HAVE_BFLOAT__)
instantiate_mask_upsample(bf16, bfloat)
#endif
