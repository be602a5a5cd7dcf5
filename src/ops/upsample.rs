//! Fused mask upsampling, as SAM's `postprocess_masks`: low-resolution mask logits →
//! bilinear resize to the padded model-input size → crop the valid top-left region →
//! bilinear resize to the original image size → sigmoid / threshold (`logit > 0`), in one pass.
//!
//! Both resizes follow `torch.nn.functional.interpolate(mode="bilinear",
//! align_corners=False)`. The chain is linear and separable, so each output row (column) is a
//! fixed combination of at most a few consecutive low-resolution rows (columns): the two
//! intermediate neighbours of the second resize, each a bilinear of two low-resolution ones.
//! The composite weights are computed exactly (in f64) from both stages, so the result equals
//! the chain up to f32 rounding without materialising the intermediate map.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{sigmoid, simd_dispatch, FloatSlice, Fma};
use super::params::{mask_out_shape, MaskOutput, UpsampleParams};
use crate::error::{Error, Result};

/// The three sizes of the mask post-processing chain, each `(height, width)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskResize {
    /// The padded model-input size the low-resolution logits are first resized to.
    pub padded: (usize, usize),
    /// The top-left region of `padded` holding the (resized) image; the rest is padding.
    pub valid: (usize, usize),
    /// The original image size of the final masks.
    pub orig: (usize, usize),
}

impl MaskResize {
    fn check(&self) -> Result<()> {
        let ok = self.padded.0 > 0
            && self.padded.1 > 0
            && self.valid.0 > 0
            && self.valid.1 > 0
            && self.orig.0 > 0
            && self.orig.1 > 0
            && self.valid.0 <= self.padded.0
            && self.valid.1 <= self.padded.1;
        if ok {
            Ok(())
        } else {
            Err(Error::shape(
                "upsample_masks",
                format!("{self:?}: sizes must be positive and valid within padded"),
            ))
        }
    }
}

/// `torch` bilinear (`align_corners=False`) along one axis of `input → output` samples: for
/// each output index the two input indices and the weight of the second.
fn linear_taps(input: usize, output: usize) -> impl Iterator<Item = (usize, usize, f64)> {
    let scale = input as f64 / output as f64;
    (0..output).map(move |o| {
        let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        let l = (src - i0 as f64).clamp(0.0, 1.0);
        (i0, i1, l)
    })
}

/// The composite resize along one axis: output `o` is
/// `Σ_t weights[o·taps + t] · low[start[o] + t]`.
#[derive(Debug, Clone)]
pub(crate) struct AxisTaps {
    pub(crate) taps: usize,
    pub(crate) start: Vec<u32>,
    pub(crate) weights: Vec<f32>,
}

impl AxisTaps {
    /// `low → padded` (bilinear), keep `[0, valid)`, `valid → out` (bilinear).
    pub(crate) fn new(low: usize, padded: usize, valid: usize, out: usize) -> Self {
        let first: Vec<_> = linear_taps(low, padded).take(valid).collect();
        // Each output mixes two intermediate samples, each two low-resolution ones.
        let entries: Vec<[(usize, f64); 4]> = linear_taps(valid, out)
            .map(|(v0, v1, l2)| {
                let (a0, a1, la) = first[v0];
                let (b0, b1, lb) = first[v1];
                [
                    (a0, (1.0 - l2) * (1.0 - la)),
                    (a1, (1.0 - l2) * la),
                    (b0, l2 * (1.0 - lb)),
                    (b1, l2 * lb),
                ]
            })
            .collect();
        let span = |e: &[(usize, f64); 4]| {
            let lo = e.iter().map(|t| t.0).min().unwrap_or(0);
            let hi = e.iter().map(|t| t.0).max().unwrap_or(0);
            (lo, hi - lo + 1)
        };
        let taps = entries
            .iter()
            .map(|e| span(e).1)
            .max()
            .unwrap_or(1)
            .min(low);
        let mut start = Vec::with_capacity(out);
        let mut wide = vec![0f64; out * taps];
        for (o, e) in entries.iter().enumerate() {
            let s = span(e).0.min(low - taps);
            start.push(s as u32);
            for &(i, wt) in e {
                wide[o * taps + i - s] += wt;
            }
        }
        Self {
            taps,
            start,
            weights: wide.into_iter().map(|w| w as f32).collect(),
        }
    }
}

/// Low-resolution rows and output rows handled by one task.
const ROWS_PER_TASK: usize = 32;

/// One task's input: a low-resolution map, the taps of both axes, and the output rows
/// `[y0, y0 + rows)` to produce.
struct RowTask<'a> {
    /// One `h × low_w` map.
    low: &'a [f32],
    low_w: usize,
    ty: &'a AxisTaps,
    tx: &'a AxisTaps,
    y0: usize,
    rows: usize,
    /// Write probabilities (sigmoid) rather than logits to `values`.
    probs: bool,
}

/// One task: `masks`/`values` are the task's output rows (empty when not requested);
/// `values` receives probabilities or logits; `h1` is scratch.
#[inline(always)]
fn resize_rows_generic<F: Fma>(
    t: &RowTask<'_>,
    h1: &mut Vec<f32>,
    masks: &mut [u8],
    values: &mut [f32],
) {
    let RowTask {
        low,
        low_w,
        ty,
        tx,
        y0,
        rows,
        probs,
    } = *t;
    let wo = tx.start.len();
    let r_lo = ty.start[y0] as usize;
    let r_hi = ty.start[y0 + rows - 1] as usize + ty.taps;
    // Horizontal pass on the low-resolution rows this block needs.
    h1.clear();
    h1.resize((r_hi - r_lo) * wo, 0.0);
    let kx = tx.taps;
    for (r, dst) in h1.chunks_exact_mut(wo).enumerate() {
        let src = &low[(r_lo + r) * low_w..][..low_w];
        for ((d, &s), w) in dst
            .iter_mut()
            .zip(&tx.start)
            .zip(tx.weights.chunks_exact(kx))
        {
            let s = &src[s as usize..][..kx];
            let mut acc = 0f32;
            for (a, b) in w.iter().zip(s) {
                acc = F::fma(*a, *b, acc);
            }
            *d = acc;
        }
    }
    // Vertical pass, then the pointwise tail, one output row at a time.
    let mut line = vec![0f32; wo];
    let ky = ty.taps;
    for i in 0..rows {
        let y = y0 + i;
        let base = ty.start[y] as usize - r_lo;
        let wy = &ty.weights[y * ky..][..ky];
        line.iter_mut().for_each(|v| *v = 0.0);
        for (t, &w) in wy.iter().enumerate() {
            if w == 0.0 {
                continue;
            }
            let src = &h1[(base + t) * wo..][..wo];
            for (d, s) in line.iter_mut().zip(src) {
                *d = F::fma(w, *s, *d);
            }
        }
        if !masks.is_empty() {
            for (m, v) in masks[i * wo..][..wo].iter_mut().zip(&line) {
                *m = (*v > 0.0) as u8;
            }
        }
        if !values.is_empty() {
            let dst = &mut values[i * wo..][..wo];
            if probs {
                for (d, v) in dst.iter_mut().zip(&line) {
                    *d = sigmoid::<F>(*v);
                }
            } else {
                dst.copy_from_slice(&line);
            }
        }
    }
}

simd_dispatch! {
    fn resize_rows(
        t: &RowTask<'_>,
        h1: &mut Vec<f32>,
        masks: &mut [u8],
        values: &mut [f32],
    ) = resize_rows_generic;
}

/// Splits `buf` (`n` masks of `ho × wo`) into per-task row blocks; an empty `buf` yields
/// empty blocks.
fn row_blocks<T>(buf: &mut [T], n: usize, ho: usize, wo: usize) -> Vec<&mut [T]> {
    let blocks_per_mask = ho.div_ceil(ROWS_PER_TASK);
    if buf.is_empty() {
        return (0..n * blocks_per_mask)
            .map(|_| Default::default())
            .collect();
    }
    buf.chunks_mut(ho * wo)
        .flat_map(|m| m.chunks_mut(ROWS_PER_TASK * wo))
        .collect()
}

/// The fused kernel on the CPU. `low`: `n` maps of `h × w`. Returns the masks (when
/// `want_masks`) and the f32 values (probabilities or logits, when `values` is given).
pub(crate) fn upsample_cpu(
    low: &[f32],
    (n, h, w): (usize, usize, usize),
    r: &MaskResize,
    want_masks: bool,
    values: Option<MaskOutput>,
) -> (Vec<u8>, Vec<f32>) {
    let (ho, wo) = r.orig;
    let ty = AxisTaps::new(h, r.padded.0, r.valid.0, ho);
    let tx = AxisTaps::new(w, r.padded.1, r.valid.1, wo);
    let mut masks = if want_masks {
        vec![0u8; n * ho * wo]
    } else {
        Vec::new()
    };
    let mut vals = if values.is_some() {
        vec![0f32; n * ho * wo]
    } else {
        Vec::new()
    };
    let probs = values == Some(MaskOutput::Probs);
    let blocks_per_mask = ho.div_ceil(ROWS_PER_TASK);
    let tasks: Vec<_> = row_blocks(&mut masks, n, ho, wo)
        .into_iter()
        .zip(row_blocks(&mut vals, n, ho, wo))
        .enumerate()
        .collect();
    tasks
        .into_par_iter()
        .for_each_init(Vec::new, |h1, (t, (m, v))| {
            let (mask, block) = (t / blocks_per_mask, t % blocks_per_mask);
            let y0 = block * ROWS_PER_TASK;
            let task = RowTask {
                low: &low[mask * h * w..][..h * w],
                low_w: w,
                ty: &ty,
                tx: &tx,
                y0,
                rows: ROWS_PER_TASK.min(ho - y0),
                probs,
            };
            resize_rows(&task, h1, m, v);
        });
    (masks, vals)
}

/// The op behind the public functions: `(…, h, w)` logits → `(…, H, W)` u8 masks or f32.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaskUpsampleOp {
    pub(crate) r: MaskResize,
    pub(crate) out: MaskOutput,
}

impl MaskUpsampleOp {
    /// The plain-number form the GPU backends take.
    #[cfg_attr(
        not(any(feature = "cuda", all(feature = "metal", target_os = "macos"))),
        allow(dead_code)
    )]
    fn params(&self) -> UpsampleParams {
        UpsampleParams {
            padded: self.r.padded,
            valid: self.r.valid,
            orig: self.r.orig,
            output: self.out,
        }
    }
}

impl CustomOp1 for MaskUpsampleOp {
    fn name(&self) -> &'static str {
        "mask-upsample"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, h, w, shape) = mask_out_shape(layout.dims(), self.r.orig)?;
        let low = FloatSlice::new(storage, layout, "upsample_masks")?.to_f32();
        let storage = match self.out {
            MaskOutput::Masks => {
                CpuStorage::U8(upsample_cpu(&low, (n, h, w), &self.r, true, None).0)
            }
            kind => CpuStorage::F32(upsample_cpu(&low, (n, h, w), &self.r, false, Some(kind)).1),
        };
        Ok((storage, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::mask_upsample_fwd(&self.params(), storage, layout)
    }

    #[cfg(all(feature = "metal", target_os = "macos"))]
    fn metal_fwd(
        &self,
        storage: &candle_core::MetalStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::MetalStorage, Shape)> {
        super::metal::mask_upsample_fwd(&self.params(), storage, layout)
    }
}

/// Shape and dtype checks, then the contiguous detached logits for the fused kernel.
fn prepare(logits: &Tensor, r: &MaskResize) -> Result<Tensor> {
    let x = validate(logits, r)?;
    super::require_kernel(&x, "upsample_masks on a GPU tensor")?;
    Ok(x)
}

/// Shape and dtype checks; the contiguous detached logits.
fn validate(logits: &Tensor, r: &MaskResize) -> Result<Tensor> {
    const OP: &str = "upsample_masks";
    r.check()?;
    let dims = logits.dims();
    if !(dims.len() == 3 || dims.len() == 4)
        || dims[dims.len() - 1] == 0
        || dims[dims.len() - 2] == 0
    {
        return Err(Error::shape(
            OP,
            format!("logits {dims:?}: need (N, h, w) or (B, M, h, w) with h, w > 0"),
        ));
    }
    super::require_float(logits, OP, "logits")?;
    Ok(logits.detach().contiguous()?)
}

fn split_masks(flat: Vec<u8>, r: &MaskResize) -> Vec<Vec<u8>> {
    let plane = r.orig.0 * r.orig.1;
    flat.chunks_exact(plane).map(<[u8]>::to_vec).collect()
}

/// Binary masks (`1` where the upsampled logit is `> 0`), one row-major `orig.0 × orig.1`
/// buffer per mask. `logits`: `(N, h, w)` or `(B, M, h, w)`, f32/f16/bf16.
pub fn upsample_masks(logits: &Tensor, r: &MaskResize) -> Result<Vec<Vec<u8>>> {
    let x = prepare(logits, r)?;
    if x.device().is_cpu() {
        let (n, h, w, _) = mask_out_shape(x.dims(), r.orig)?;
        let low = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let (masks, _) = upsample_cpu(&low, (n, h, w), r, true, None);
        return Ok(split_masks(masks, r));
    }
    let op = MaskUpsampleOp {
        r: *r,
        out: MaskOutput::Masks,
    };
    let masks = x.apply_op1_no_bwd(&op)?.flatten_all()?.to_vec1::<u8>()?;
    Ok(split_masks(masks, r))
}

/// Probabilities (sigmoid of the upsampled logits), shape `(…, orig.0, orig.1)`, f32.
pub fn upsample_mask_probs(logits: &Tensor, r: &MaskResize) -> Result<Tensor> {
    let op = MaskUpsampleOp {
        r: *r,
        out: MaskOutput::Probs,
    };
    Ok(prepare(logits, r)?.apply_op1_no_bwd(&op)?)
}

/// The upsampled logits themselves, shape `(…, orig.0, orig.1)`, f32.
pub fn upsample_mask_logits(logits: &Tensor, r: &MaskResize) -> Result<Tensor> {
    let op = MaskUpsampleOp {
        r: *r,
        out: MaskOutput::Logits,
    };
    Ok(prepare(logits, r)?.apply_op1_no_bwd(&op)?)
}

/// Masks and probabilities together; on the CPU both come from one pass.
pub fn upsample_masks_and_probs(logits: &Tensor, r: &MaskResize) -> Result<(Vec<Vec<u8>>, Tensor)> {
    let x = prepare(logits, r)?;
    if !x.device().is_cpu() {
        return Ok((upsample_masks(&x, r)?, upsample_mask_probs(&x, r)?));
    }
    let (n, h, w, shape) = mask_out_shape(x.dims(), r.orig)?;
    let low = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let (masks, probs) = upsample_cpu(&low, (n, h, w), r, true, Some(MaskOutput::Probs));
    let probs = Tensor::from_vec(probs, shape, x.device())?;
    Ok((split_masks(masks, r), probs))
}

/// The same chain from candle's elementary ops (`upsample_bilinear2d`, `narrow`,
/// `upsample_bilinear2d`, sigmoid, `> 0`): the reference for tests and benchmarks.
/// Returns `(u8 masks, f32 probabilities)`, both `(…, orig.0, orig.1)`.
pub fn upsample_masks_plain(logits: &Tensor, r: &MaskResize) -> Result<(Tensor, Tensor)> {
    let x = validate(logits, r)?;
    let (n, h, w, shape) = mask_out_shape(x.dims(), r.orig)?;
    let x = x.to_dtype(DType::F32)?.reshape((n, 1, h, w))?;
    let x = x
        .upsample_bilinear2d(r.padded.0, r.padded.1, false)?
        .narrow(2, 0, r.valid.0)?
        .narrow(3, 0, r.valid.1)?
        .contiguous()?
        .upsample_bilinear2d(r.orig.0, r.orig.1, false)?
        .reshape(shape)?;
    let masks = x.gt(0f64)?;
    let probs = candle_nn::ops::sigmoid(&x)?;
    Ok((masks, probs))
}
