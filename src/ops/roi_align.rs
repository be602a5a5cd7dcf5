//! ROI Align (He et al., "Mask R-CNN", 2017) with the exact semantics of torchvision's
//! `torchvision.ops.roi_align`: bilinear samples on a regular grid inside each output bin,
//! averaged; backward pass to the features for training.
//!
//! Sampling rules (torchvision `roi_align_kernel.cpp`, reproduced operation by operation in
//! f32): box corners are scaled by `spatial_scale` and shifted by −0.5 when `aligned`; without
//! `aligned` boxes are at least 1×1; `sampling_ratio ≤ 0` picks `ceil(roi_size / output_size)`
//! samples per bin and axis; a sample with `y < −1`, `y > H`, `x < −1` or `x > W` contributes
//! zero, others are clamped into the map; each bin is divided by the number of samples.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{f32_values, storage_from_f32, FloatSlice};
use super::params::{RoiAlignBackwardParams, RoiAlignParams};
use crate::error::{Error, Result, RoiProblem};

/// ROI Align parameters (torchvision's argument names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoiAlign {
    /// Output bins per box, `(height, width)`.
    pub output_size: (usize, usize),
    /// Factor from box coordinates to feature-map coordinates (1 / stride).
    pub spatial_scale: f32,
    /// Samples per bin and axis; `≤ 0` for adaptive (`ceil(roi_size / output_size)`).
    pub sampling_ratio: i32,
    /// Pixel-centre alignment (shift boxes by −0.5 and allow boxes smaller than a pixel).
    pub aligned: bool,
}

impl RoiAlign {
    /// `output_size` bins, unit scale, adaptive sampling, `aligned = true`.
    pub fn new(output_size: (usize, usize)) -> Self {
        Self {
            output_size,
            spatial_scale: 1.0,
            sampling_ratio: -1,
            aligned: true,
        }
    }

    pub fn with_spatial_scale(mut self, spatial_scale: f32) -> Self {
        self.spatial_scale = spatial_scale;
        self
    }

    pub fn with_sampling_ratio(mut self, sampling_ratio: i32) -> Self {
        self.sampling_ratio = sampling_ratio;
        self
    }

    pub fn with_aligned(mut self, aligned: bool) -> Self {
        self.aligned = aligned;
        self
    }

    /// The plain-number form the GPU backends take.
    #[cfg_attr(
        not(any(feature = "cuda", all(feature = "metal", target_os = "macos"))),
        allow(dead_code)
    )]
    pub(crate) fn params(&self) -> RoiAlignParams {
        RoiAlignParams {
            pooled_h: self.output_size.0,
            pooled_w: self.output_size.1,
            spatial_scale: self.spatial_scale,
            sampling_ratio: self.sampling_ratio,
            aligned: self.aligned,
        }
    }
}

/// Pools `features: (N, C, H, W)` over `rois: (K, 5)` rows `[batch_index, x1, y1, x2, y2]`
/// into `(K, C, oh, ow)` in the features' dtype (f32, f16 or bf16; computed in f32).
///
/// Differentiable with respect to `features` (not the boxes), as torchvision.
pub fn roi_align(features: &Tensor, rois: &Tensor, p: &RoiAlign) -> Result<Tensor> {
    const OP: &str = "roi_align";
    let (n, _c, _h, _w) = features.dims4().map_err(|_| {
        Error::shape(
            OP,
            format!("features {:?}: need (N, C, H, W)", features.dims()),
        )
    })?;
    let (_k, five) = rois
        .dims2()
        .map_err(|_| Error::shape(OP, format!("rois {:?}: need (K, 5)", rois.dims())))?;
    if five != 5 {
        return Err(Error::shape(
            OP,
            format!("rois {:?}: need (K, 5)", rois.dims()),
        ));
    }
    if p.output_size.0 == 0 || p.output_size.1 == 0 {
        return Err(Error::shape(
            OP,
            format!("output_size {:?} must be positive", p.output_size),
        ));
    }
    if !p.spatial_scale.is_finite() {
        return Err(Error::shape(
            OP,
            format!("spatial_scale {} is not finite", p.spatial_scale),
        ));
    }
    super::require_float(features, OP, "features")?;
    super::require_float(rois, OP, "rois")?;
    super::require_same_device(features, rois, OP)?;
    super::require_kernel(features, "roi_align on a GPU tensor")?;
    let rois = rois.detach().to_dtype(DType::F32)?.contiguous()?;
    let host: Vec<f32> = rois.flatten_all()?.to_vec1()?;
    for (index, roi) in host.chunks_exact(5).enumerate() {
        if let Some(problem) = roi_problem(roi, p, n) {
            return Err(Error::BadRoi { index, problem });
        }
    }
    Ok(features
        .contiguous()?
        .apply_op2(&rois, RoiAlignOp { p: *p })?)
}

/// The most bilinear samples one box may take (adaptive sampling on a huge box would
/// otherwise run for hours).
const MAX_SAMPLES_PER_ROI: u64 = 1 << 24;

/// The gradient of `roi_align(features, rois, p)` with respect to `features` (shape
/// `features_shape = (N, C, H, W)`) for the output gradient `grad_output: (K, C, oh, ow)` —
/// what the backward pass computes, for callers that drive their own training loop. CPU and
/// CUDA (the Metal build has no backward kernel).
pub fn roi_align_backward(
    grad_output: &Tensor,
    rois: &Tensor,
    p: &RoiAlign,
    features_shape: (usize, usize, usize, usize),
) -> Result<Tensor> {
    const OP: &str = "roi_align_backward";
    let (n, c, h, w) = features_shape;
    let k = rois.dims2().map(|d| d.0).unwrap_or(usize::MAX);
    let want = [k, c, p.output_size.0, p.output_size.1];
    if rois.dims().len() != 2 || rois.dims()[1] != 5 || grad_output.dims() != want {
        return Err(Error::shape(
            OP,
            format!(
                "grad_output {:?}, rois {:?}: need (K, {c}, {}, {}) and (K, 5)",
                grad_output.dims(),
                rois.dims(),
                p.output_size.0,
                p.output_size.1
            ),
        ));
    }
    super::require_float(grad_output, OP, "grad_output")?;
    super::require_float(rois, OP, "rois")?;
    super::require_same_device(grad_output, rois, OP)?;
    super::require_kernel(grad_output, "roi_align_backward on a GPU tensor")?;
    let rois = checked_rois(rois, p, n)?;
    let op = RoiAlignBackwardOp {
        p: *p,
        batch: n,
        height: h,
        width: w,
    };
    Ok(grad_output
        .detach()
        .contiguous()?
        .apply_op2_no_bwd(&rois, &op)?)
}

/// `rois` as a contiguous f32 tensor after checking every row on the host.
fn checked_rois(rois: &Tensor, p: &RoiAlign, batch: usize) -> Result<Tensor> {
    let rois = rois.detach().to_dtype(DType::F32)?.contiguous()?;
    let host: Vec<f32> = rois.flatten_all()?.to_vec1()?;
    for (index, roi) in host.chunks_exact(5).enumerate() {
        if let Some(problem) = roi_problem(roi, p, batch) {
            return Err(Error::BadRoi { index, problem });
        }
    }
    Ok(rois)
}

/// What is wrong with one `[batch_index, x1, y1, x2, y2]` row, if anything.
fn roi_problem(roi: &[f32], p: &RoiAlign, batch: usize) -> Option<RoiProblem> {
    if roi.iter().any(|v| !v.is_finite()) {
        return Some(RoiProblem::NotFinite);
    }
    let b = roi[0];
    // torchvision truncates the batch index towards zero.
    if b <= -1.0 || b.trunc() as usize >= batch {
        return Some(RoiProblem::BatchIndex { got: b, batch });
    }
    let f = frame(roi, p);
    let bins = (p.output_size.0 as u64).saturating_mul(p.output_size.1 as u64);
    let samples = bins
        .saturating_mul(f.grid_h.max(0) as u64)
        .saturating_mul(f.grid_w.max(0) as u64);
    if samples > MAX_SAMPLES_PER_ROI {
        return Some(RoiProblem::TooManySamples {
            samples,
            max: MAX_SAMPLES_PER_ROI,
        });
    }
    None
}

/// One bilinear sample: the four neighbours (plane offsets) and their weights.
#[derive(Clone, Copy, Default)]
pub(crate) struct Sample {
    pub(crate) pos: [u32; 4],
    pub(crate) w: [f32; 4],
}

/// Everything about one box that does not depend on the channel.
pub(crate) struct RoiGeometry {
    pub(crate) batch: usize,
    /// Samples per bin (grid_h · grid_w), 0 when the grid is empty.
    pub(crate) per_bin: usize,
    /// Divisor of each bin's sum (`max(grid_h · grid_w, 1)`).
    pub(crate) count: f32,
    /// `oh · ow · per_bin` samples, bin-major, then grid row, then grid column.
    pub(crate) samples: Vec<Sample>,
}

/// torchvision's bilinear weights for a point of an `height × width` plane; `None` when the
/// point is outside `[-1, height] × [-1, width]` (contributes zero).
fn bilinear(height: usize, width: usize, y: f32, x: f32) -> Option<Sample> {
    let (hf, wf) = (height as f32, width as f32);
    // Written as "not inside" so that NaN coordinates land here too.
    if !(y >= -1.0 && y <= hf && x >= -1.0 && x <= wf) {
        return None;
    }
    let mut y = if y <= 0.0 { 0.0 } else { y };
    let mut x = if x <= 0.0 { 0.0 } else { x };
    let mut y_low = y as usize;
    let mut x_low = x as usize;
    let y_high;
    let x_high;
    if y_low >= height - 1 {
        y_low = height - 1;
        y_high = y_low;
        y = y_low as f32;
    } else {
        y_high = y_low + 1;
    }
    if x_low >= width - 1 {
        x_low = width - 1;
        x_high = x_low;
        x = x_low as f32;
    } else {
        x_high = x_low + 1;
    }
    let ly = y - y_low as f32;
    let lx = x - x_low as f32;
    let hy = 1.0 - ly;
    let hx = 1.0 - lx;
    let at = |r: usize, c: usize| (r * width + c) as u32;
    Some(Sample {
        pos: [
            at(y_low, x_low),
            at(y_low, x_high),
            at(y_high, x_low),
            at(y_high, x_high),
        ],
        w: [hy * hx, hy * lx, ly * hx, ly * lx],
    })
}

/// A box in feature-map coordinates: start, bin sizes and samples per bin and axis (≤ 0
/// means an empty grid), in torchvision's order of f32 operations.
struct Frame {
    start_h: f32,
    start_w: f32,
    bin_h: f32,
    bin_w: f32,
    grid_h: i64,
    grid_w: i64,
}

fn frame(roi: &[f32], p: &RoiAlign) -> Frame {
    let (oh, ow) = p.output_size;
    let scale = p.spatial_scale;
    let offset = if p.aligned { 0.5f32 } else { 0.0 };
    let start_w = roi[1] * scale - offset;
    let start_h = roi[2] * scale - offset;
    let end_w = roi[3] * scale - offset;
    let end_h = roi[4] * scale - offset;
    let mut roi_w = end_w - start_w;
    let mut roi_h = end_h - start_h;
    if !p.aligned {
        roi_w = roi_w.max(1.0);
        roi_h = roi_h.max(1.0);
    }
    let grid = |size: f32, bins: usize| -> i64 {
        if p.sampling_ratio > 0 {
            p.sampling_ratio as i64
        } else {
            (size / bins as f32).ceil() as i64
        }
    };
    Frame {
        start_h,
        start_w,
        bin_h: roi_h / oh as f32,
        bin_w: roi_w / ow as f32,
        grid_h: grid(roi_h, oh),
        grid_w: grid(roi_w, ow),
    }
}

/// The sampling grid of one box (`roi` = `[batch_index, x1, y1, x2, y2]`) on an
/// `height × width` map.
pub(crate) fn geometry(roi: &[f32], p: &RoiAlign, height: usize, width: usize) -> RoiGeometry {
    let (oh, ow) = p.output_size;
    let f = frame(roi, p);
    let count = f.grid_h.saturating_mul(f.grid_w).max(1) as f32;
    let (gh, gw) = if f.grid_h > 0 && f.grid_w > 0 {
        (f.grid_h as usize, f.grid_w as usize)
    } else {
        (0, 0)
    };
    let mut samples = Vec::with_capacity(oh * ow * gh * gw);
    if height > 0 && width > 0 {
        for ph in 0..oh {
            for pw in 0..ow {
                for iy in 0..gh {
                    let y =
                        f.start_h + ph as f32 * f.bin_h + (iy as f32 + 0.5) * f.bin_h / gh as f32;
                    for ix in 0..gw {
                        let x = f.start_w
                            + pw as f32 * f.bin_w
                            + (ix as f32 + 0.5) * f.bin_w / gw as f32;
                        samples.push(bilinear(height, width, y, x).unwrap_or_default());
                    }
                }
            }
        }
    }
    RoiGeometry {
        batch: roi[0].trunc() as usize,
        per_bin: if samples.is_empty() { 0 } else { gh * gw },
        count,
        samples,
    }
}

/// The geometry of every row of `rois`, rejecting rows that do not fit an `n`-image batch.
pub(crate) fn all_geometry(
    rois: &[f32],
    p: &RoiAlign,
    n: usize,
    height: usize,
    width: usize,
) -> candle_core::Result<Vec<RoiGeometry>> {
    rois.chunks_exact(5)
        .enumerate()
        .map(|(index, roi)| match roi_problem(roi, p, n) {
            Some(problem) => Err(candle_core::Error::wrap(Error::BadRoi { index, problem })),
            None => Ok(geometry(roi, p, height, width)),
        })
        .collect()
}

/// Forward on the CPU: `features` (N·C planes of H·W) → `(K, C, oh, ow)` as f32.
pub(crate) fn forward_cpu(
    features: &[f32],
    dims: (usize, usize, usize, usize),
    rois: &[f32],
    p: &RoiAlign,
) -> candle_core::Result<Vec<f32>> {
    let (n, c, h, w) = dims;
    let geo = all_geometry(rois, p, n, h, w)?;
    let bins = p.output_size.0 * p.output_size.1;
    let plane = h * w;
    let mut out = vec![0f32; geo.len() * c * bins];
    if bins == 0 || c == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(bins)
        .with_min_len(16)
        .enumerate()
        .for_each(|(kc, dst)| {
            let g = &geo[kc / c];
            if g.per_bin == 0 {
                return;
            }
            let ch = kc % c;
            let src = &features[(g.batch * c + ch) * plane..][..plane];
            for (d, bin) in dst.iter_mut().zip(g.samples.chunks_exact(g.per_bin)) {
                let mut acc = 0f32;
                for s in bin {
                    acc += s.w[0] * src[s.pos[0] as usize]
                        + s.w[1] * src[s.pos[1] as usize]
                        + s.w[2] * src[s.pos[2] as usize]
                        + s.w[3] * src[s.pos[3] as usize];
                }
                *d = acc / g.count;
            }
        });
    Ok(out)
}

/// Backward on the CPU: `grad_out: (K, C, oh, ow)` → `(N, C, H, W)` as f32. Each feature
/// plane is owned by one task, which visits the boxes of its image (no atomics, deterministic).
pub(crate) fn backward_cpu(
    grad_out: &[f32],
    rois: &[f32],
    p: &RoiAlign,
    dims: (usize, usize, usize, usize),
) -> candle_core::Result<Vec<f32>> {
    let (n, c, h, w) = dims;
    let geo = all_geometry(rois, p, n, h, w)?;
    let bins = p.output_size.0 * p.output_size.1;
    let plane = h * w;
    let mut grad = vec![0f32; n * c * plane];
    if plane == 0 {
        return Ok(grad);
    }
    let mut by_image: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (k, g) in geo.iter().enumerate() {
        if g.per_bin > 0 {
            by_image[g.batch].push(k);
        }
    }
    grad.par_chunks_mut(plane)
        .enumerate()
        .for_each(|(nc, dst)| {
            let (img, ch) = (nc / c, nc % c);
            for &k in &by_image[img] {
                let g = &geo[k];
                let go = &grad_out[(k * c + ch) * bins..][..bins];
                for (&gv, bin) in go.iter().zip(g.samples.chunks_exact(g.per_bin)) {
                    for s in bin {
                        for t in 0..4 {
                            dst[s.pos[t] as usize] += gv * s.w[t] / g.count;
                        }
                    }
                }
            }
        });
    Ok(grad)
}

/// The forward op: `(features, rois)` → pooled features.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoiAlignOp {
    pub(crate) p: RoiAlign,
}

impl CustomOp2 for RoiAlignOp {
    fn name(&self) -> &'static str {
        "roi-align"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = l1.shape().dims4()?;
        let (k, _) = l2.shape().dims2()?;
        let feats = FloatSlice::new(s1, l1, "roi_align")?;
        let dtype = feats.dtype();
        let rois = f32_values(s2, l2, "roi_align")?;
        let out = forward_cpu(&feats.to_f32(), dims, &rois, &self.p)?;
        let (oh, ow) = self.p.output_size;
        Ok((
            storage_from_f32(out, dtype)?,
            Shape::from((k, dims.1, oh, ow)),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::roi_align_fwd(&self.p.params(), s1, l1, s2, l2)
    }

    #[cfg(all(feature = "metal", target_os = "macos"))]
    fn metal_fwd(
        &self,
        s1: &candle_core::MetalStorage,
        l1: &Layout,
        s2: &candle_core::MetalStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::MetalStorage, Shape)> {
        super::metal::roi_align_fwd(&self.p.params(), s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        features: &Tensor,
        rois: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, _c, h, w) = features.dims4()?;
        let op = RoiAlignBackwardOp {
            p: self.p,
            batch: n,
            height: h,
            width: w,
        };
        let g = grad.contiguous()?.apply_op2(rois, op)?;
        Ok((Some(g), None))
    }
}

/// The backward op: `(grad_output, rois)` → gradient of the features. Linear in
/// `grad_output`; its own backward is the forward op.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoiAlignBackwardOp {
    pub(crate) p: RoiAlign,
    pub(crate) batch: usize,
    pub(crate) height: usize,
    pub(crate) width: usize,
}

impl RoiAlignBackwardOp {
    /// The plain-number form the CUDA backend takes.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    fn params(&self) -> RoiAlignBackwardParams {
        RoiAlignBackwardParams {
            roi: self.p.params(),
            batch: self.batch,
            height: self.height,
            width: self.width,
        }
    }
}

impl CustomOp2 for RoiAlignBackwardOp {
    fn name(&self) -> &'static str {
        "roi-align-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_k, c, _oh, _ow) = l1.shape().dims4()?;
        let go = FloatSlice::new(s1, l1, "roi_align backward")?;
        let dtype = go.dtype();
        let rois = f32_values(s2, l2, "roi_align backward")?;
        let dims = (self.batch, c, self.height, self.width);
        let grad = backward_cpu(&go.to_f32(), &rois, &self.p, dims)?;
        Ok((storage_from_f32(grad, dtype)?, Shape::from(dims)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::roi_align_bwd(&self.params(), s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        _grad_out: &Tensor,
        rois: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad
            .contiguous()?
            .apply_op2(rois, RoiAlignOp { p: self.p })?;
        Ok((Some(g), None))
    }
}
