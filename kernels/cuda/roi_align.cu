// ROI Align (torchvision semantics) forward and backward, f32 arithmetic for f32/f16/bf16
// features. Mirrors the CPU reference in src/ops/roi_align.rs: boxes scaled by
// spatial_scale and shifted by -0.5 when aligned; boxes at least 1x1 when not aligned;
// sampling_ratio <= 0 means ceil(roi_size / bins) samples per bin and axis; samples outside
// [-1, H] x [-1, W] contribute zero, others are clamped; each bin divided by its sample count.
#include "common.cuh"

struct RoiFrame {
    int batch;
    float start_h, start_w, bin_h, bin_w;
    int grid_h, grid_w;
    float count;
};

__device__ __forceinline__ RoiFrame roi_frame(const float* roi, float scale, int oh, int ow,
                                              int sampling_ratio, int aligned) {
    RoiFrame f;
    f.batch = (int)roi[0];
    float offset = aligned ? 0.5f : 0.0f;
    float start_w = roi[1] * scale - offset;
    float start_h = roi[2] * scale - offset;
    float end_w = roi[3] * scale - offset;
    float end_h = roi[4] * scale - offset;
    float roi_w = end_w - start_w;
    float roi_h = end_h - start_h;
    if (!aligned) {
        roi_w = fmaxf(roi_w, 1.0f);
        roi_h = fmaxf(roi_h, 1.0f);
    }
    f.start_h = start_h;
    f.start_w = start_w;
    f.bin_h = roi_h / (float)oh;
    f.bin_w = roi_w / (float)ow;
    f.grid_h = sampling_ratio > 0 ? sampling_ratio : (int)ceilf(roi_h / (float)oh);
    f.grid_w = sampling_ratio > 0 ? sampling_ratio : (int)ceilf(roi_w / (float)ow);
    int n = f.grid_h * f.grid_w;
    f.count = (float)(n > 1 ? n : 1);
    return f;
}

// Bilinear neighbours and weights of (y, x) on an h x w plane; false when the sample is
// outside [-1, h] x [-1, w] (it then contributes zero).
__device__ __forceinline__ bool bilinear_taps(int h, int w, float y, float x, int pos[4],
                                              float wt[4]) {
    if (!(y >= -1.0f && y <= (float)h && x >= -1.0f && x <= (float)w)) return false;
    if (y <= 0.0f) y = 0.0f;
    if (x <= 0.0f) x = 0.0f;
    int y_low = (int)y, x_low = (int)x, y_high, x_high;
    if (y_low >= h - 1) {
        y_high = y_low = h - 1;
        y = (float)y_low;
    } else {
        y_high = y_low + 1;
    }
    if (x_low >= w - 1) {
        x_high = x_low = w - 1;
        x = (float)x_low;
    } else {
        x_high = x_low + 1;
    }
    float ly = y - (float)y_low, lx = x - (float)x_low;
    float hy = 1.0f - ly, hx = 1.0f - lx;
    pos[0] = y_low * w + x_low;
    pos[1] = y_low * w + x_high;
    pos[2] = y_high * w + x_low;
    pos[3] = y_high * w + x_high;
    wt[0] = hy * hx;
    wt[1] = hy * lx;
    wt[2] = ly * hx;
    wt[3] = ly * lx;
    return true;
}

// One thread per output element (roi, channel, bin).
template <typename T>
__device__ void roi_align_fwd(const T* input, const float* rois, T* output, int n_rois,
                              int channels, int height, int width, int oh, int ow, float scale,
                              int sampling_ratio, int aligned) {
    const int64_t total = (int64_t)n_rois * channels * oh * ow;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int pw = i % ow;
        int ph = (i / ow) % oh;
        int c = (i / ow / oh) % channels;
        int k = i / ow / oh / channels;
        RoiFrame f = roi_frame(rois + 5 * k, scale, oh, ow, sampling_ratio, aligned);
        const T* plane = input + ((int64_t)f.batch * channels + c) * height * width;
        float acc = 0.0f;
        if (height > 0 && width > 0) {
            for (int iy = 0; iy < f.grid_h; iy++) {
                float y = f.start_h + ph * f.bin_h + (iy + 0.5f) * f.bin_h / (float)f.grid_h;
                for (int ix = 0; ix < f.grid_w; ix++) {
                    float x =
                        f.start_w + pw * f.bin_w + (ix + 0.5f) * f.bin_w / (float)f.grid_w;
                    int pos[4];
                    float wt[4];
                    if (bilinear_taps(height, width, y, x, pos, wt)) {
                        acc += wt[0] * to_f32(plane[pos[0]]) + wt[1] * to_f32(plane[pos[1]]) +
                               wt[2] * to_f32(plane[pos[2]]) + wt[3] * to_f32(plane[pos[3]]);
                    }
                }
            }
        }
        output[i] = from_f32<T>(acc / f.count);
    }
}

#define ROI_ALIGN_FWD_PARAMS(T)                                                          \
    (const T* input, const float* rois, T* output, int n_rois, int channels, int height,  \
     int width, int oh, int ow, float scale, int sampling_ratio, int aligned)
UNIRES_FLOAT_KERNELS(roi_align_fwd, ROI_ALIGN_FWD_PARAMS,
                     (input, rois, output, n_rois, channels, height, width, oh, ow, scale,
                      sampling_ratio, aligned))

// One thread per element of grad_output; scatters into an f32 gradient with atomics.
template <typename T>
__device__ void roi_align_bwd(const T* grad_output, const float* rois, float* grad_input,
                              int n_rois, int channels, int height, int width, int oh, int ow,
                              float scale, int sampling_ratio, int aligned) {
    const int64_t total = (int64_t)n_rois * channels * oh * ow;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int pw = i % ow;
        int ph = (i / ow) % oh;
        int c = (i / ow / oh) % channels;
        int k = i / ow / oh / channels;
        RoiFrame f = roi_frame(rois + 5 * k, scale, oh, ow, sampling_ratio, aligned);
        if (height <= 0 || width <= 0) continue;
        float* plane = grad_input + ((int64_t)f.batch * channels + c) * height * width;
        float g = to_f32(grad_output[i]);
        for (int iy = 0; iy < f.grid_h; iy++) {
            float y = f.start_h + ph * f.bin_h + (iy + 0.5f) * f.bin_h / (float)f.grid_h;
            for (int ix = 0; ix < f.grid_w; ix++) {
                float x = f.start_w + pw * f.bin_w + (ix + 0.5f) * f.bin_w / (float)f.grid_w;
                int pos[4];
                float wt[4];
                if (bilinear_taps(height, width, y, x, pos, wt)) {
                    for (int t = 0; t < 4; t++) atomicAdd(plane + pos[t], g * wt[t] / f.count);
                }
            }
        }
    }
}

#define ROI_ALIGN_BWD_PARAMS(T)                                                         \
    (const T* grad_output, const float* rois, float* grad_input, int n_rois, int channels, \
     int height, int width, int oh, int ow, float scale, int sampling_ratio, int aligned)
UNIRES_FLOAT_KERNELS(roi_align_bwd, ROI_ALIGN_BWD_PARAMS,
                     (grad_output, rois, grad_input, n_rois, channels, height, width, oh, ow,
                      scale, sampling_ratio, aligned))

// f32 -> T conversion of the accumulated gradient.
template <typename T>
__device__ void cast_from_f32(const float* src, T* dst, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        dst[i] = from_f32<T>(src[i]);
    }
}

#define CAST_PARAMS(T) (const float* src, T* dst, int64_t n)
UNIRES_FLOAT_KERNELS(cast_from_f32, CAST_PARAMS, (src, dst, n))
