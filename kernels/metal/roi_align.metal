// ROI Align (torchvision semantics) forward, f32 arithmetic for f32/f16/bf16 features.
// Mirrors the CPU reference in src/ops/roi_align.rs (see kernels/cuda/roi_align.cu).
#include <metal_stdlib>
using namespace metal;

struct RoiAlignParams {
    int n_rois;
    int channels;
    int height;
    int width;
    int oh;
    int ow;
    float scale;
    int sampling_ratio;
    int aligned;
};

struct RoiFrame {
    int batch;
    float start_h, start_w, bin_h, bin_w;
    int grid_h, grid_w;
    float count;
};

static RoiFrame roi_frame(device const float* roi, constant RoiAlignParams& p) {
    RoiFrame f;
    f.batch = int(roi[0]);
    float offset = p.aligned ? 0.5f : 0.0f;
    float start_w = roi[1] * p.scale - offset;
    float start_h = roi[2] * p.scale - offset;
    float end_w = roi[3] * p.scale - offset;
    float end_h = roi[4] * p.scale - offset;
    float roi_w = end_w - start_w;
    float roi_h = end_h - start_h;
    if (!p.aligned) {
        roi_w = max(roi_w, 1.0f);
        roi_h = max(roi_h, 1.0f);
    }
    f.start_h = start_h;
    f.start_w = start_w;
    f.bin_h = roi_h / float(p.oh);
    f.bin_w = roi_w / float(p.ow);
    f.grid_h = p.sampling_ratio > 0 ? p.sampling_ratio : int(ceil(roi_h / float(p.oh)));
    f.grid_w = p.sampling_ratio > 0 ? p.sampling_ratio : int(ceil(roi_w / float(p.ow)));
    int n = f.grid_h * f.grid_w;
    f.count = float(n > 1 ? n : 1);
    return f;
}

// Bilinear value of (y, x) on an h x w plane; zero outside [-1, h] x [-1, w].
template <typename T>
static float bilinear(device const T* plane, int h, int w, float y, float x) {
    if (!(y >= -1.0f && y <= float(h) && x >= -1.0f && x <= float(w))) return 0.0f;
    if (y <= 0.0f) y = 0.0f;
    if (x <= 0.0f) x = 0.0f;
    int y_low = int(y), x_low = int(x), y_high, x_high;
    if (y_low >= h - 1) {
        y_high = y_low = h - 1;
        y = float(y_low);
    } else {
        y_high = y_low + 1;
    }
    if (x_low >= w - 1) {
        x_high = x_low = w - 1;
        x = float(x_low);
    } else {
        x_high = x_low + 1;
    }
    float ly = y - float(y_low), lx = x - float(x_low);
    float hy = 1.0f - ly, hx = 1.0f - lx;
    return hy * hx * float(plane[y_low * w + x_low]) + hy * lx * float(plane[y_low * w + x_high]) +
           ly * hx * float(plane[y_high * w + x_low]) + ly * lx * float(plane[y_high * w + x_high]);
}

// One thread per output element (roi, channel, bin).
template <typename T>
kernel void roi_align_fwd(device const T* input [[buffer(0)]],
                          device const float* rois [[buffer(1)]],
                          device T* output [[buffer(2)]],
                          constant RoiAlignParams& p [[buffer(3)]],
                          uint i [[thread_position_in_grid]]) {
    const uint total = uint(p.n_rois * p.channels * p.oh * p.ow);
    if (i >= total) return;
    int pw = i % p.ow;
    int ph = (i / p.ow) % p.oh;
    int c = (i / p.ow / p.oh) % p.channels;
    int k = i / p.ow / p.oh / p.channels;
    RoiFrame f = roi_frame(rois + 5 * k, p);
    device const T* plane = input + (long(f.batch) * p.channels + c) * p.height * p.width;
    float acc = 0.0f;
    if (p.height > 0 && p.width > 0) {
        for (int iy = 0; iy < f.grid_h; iy++) {
            float y = f.start_h + ph * f.bin_h + (iy + 0.5f) * f.bin_h / float(f.grid_h);
            for (int ix = 0; ix < f.grid_w; ix++) {
                float x = f.start_w + pw * f.bin_w + (ix + 0.5f) * f.bin_w / float(f.grid_w);
                acc += bilinear(plane, p.height, p.width, y, x);
            }
        }
    }
    output[i] = T(acc / f.count);
}

#define instantiate_roi_align(suffix, T)                                              \
    template [[host_name("roi_align_fwd_" #suffix)]] [[kernel]] decltype(roi_align_fwd<T>) \
        roi_align_fwd<T>;

instantiate_roi_align(f32, float)
instantiate_roi_align(f16, half)
#if defined(__HAVE_BFLOAT__)
instantiate_roi_align(bf16, bfloat)
#endif
