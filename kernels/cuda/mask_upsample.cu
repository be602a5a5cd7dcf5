// Fused mask upsampling: low-resolution logits (N, h, w) -> bilinear to the padded size ->
// crop the valid top-left region -> bilinear to the original size -> mask / probability /
// logit, in one pass. Both resizes follow torch `interpolate(mode="bilinear",
// align_corners=False)`. Each output pixel combines the 2x2 intermediate neighbours of the
// second resize, each itself a bilinear of 2x2 low-resolution pixels: 4 x 4 taps, exact.
// Mirrors the CPU kernel in src/ops/upsample.rs.
#include "common.cuh"

// torch's source index for align_corners=False: the two neighbours and the weight of the
// second.
__device__ __forceinline__ void linear_tap(int o, int in, int out, int* i0, int* i1,
                                           float* l) {
    const float scale = (float)in / (float)out;
    const float src = fmaxf(((float)o + 0.5f) * scale - 0.5f, 0.0f);
    int a = min((int)src, in - 1);
    *i0 = a;
    *i1 = min(a + 1, in - 1);
    *l = fminf(fmaxf(src - (float)a, 0.0f), 1.0f);
}

// The four low-resolution taps of output index `o` along one axis.
__device__ __forceinline__ void axis_taps(int o, int low, int padded, int valid, int out,
                                          int idx[4], float wt[4]) {
    int v0, v1, a0, a1, b0, b1;
    float l2, la, lb;
    linear_tap(o, valid, out, &v0, &v1, &l2);
    linear_tap(v0, low, padded, &a0, &a1, &la);
    linear_tap(v1, low, padded, &b0, &b1, &lb);
    idx[0] = a0;
    idx[1] = a1;
    idx[2] = b0;
    idx[3] = b1;
    wt[0] = (1.0f - l2) * (1.0f - la);
    wt[1] = (1.0f - l2) * la;
    wt[2] = l2 * (1.0f - lb);
    wt[3] = l2 * lb;
}

// mode 0: u8 masks (logit > 0); 1: f32 probabilities; 2: f32 logits.
template <typename T>
__device__ void mask_upsample(const T* low, void* out, int n, int h, int w, int padded_h,
                              int padded_w, int valid_h, int valid_w, int out_h, int out_w,
                              int mode) {
    const int64_t total = (int64_t)n * out_h * out_w;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int x = i % out_w;
        const int y = (i / out_w) % out_h;
        const int64_t m = i / ((int64_t)out_w * out_h);
        int iy[4], ix[4];
        float wy[4], wx[4];
        axis_taps(y, h, padded_h, valid_h, out_h, iy, wy);
        axis_taps(x, w, padded_w, valid_w, out_w, ix, wx);
        float value = 0.0f;
        for (int a = 0; a < 4; a++) {
            const T* row = low + (m * h + iy[a]) * w;
            float r = 0.0f;
            for (int b = 0; b < 4; b++) r += wx[b] * to_f32(row[ix[b]]);
            value += wy[a] * r;
        }
        if (mode == 0) {
            ((uint8_t*)out)[i] = value > 0.0f ? 1 : 0;
        } else if (mode == 1) {
            ((float*)out)[i] = 1.0f / (1.0f + expf(-value));
        } else {
            ((float*)out)[i] = value;
        }
    }
}

#define MASK_UPSAMPLE_PARAMS(T)                                                          \
    (const T* low, void* out, int n, int h, int w, int padded_h, int padded_w, int valid_h, \
     int valid_w, int out_h, int out_w, int mode)
UNIRES_FLOAT_KERNELS(mask_upsample, MASK_UPSAMPLE_PARAMS,
                     (low, out, n, h, w, padded_h, padded_w, valid_h, valid_w, out_h, out_w,
                      mode))
