//! The two layout changes of a ConvNeXt block, each folded into the pass next to it:
//! [`layer_norm_to_nhwc`] (the LayerNorm after the depthwise convolution, reading NCHW and
//! writing channels-last) and [`scaled_residual_nchw`], the end of the block in one pass:
//! `x + scale · (y + bias)`, where `x` is the block's NCHW input and `y` the channels-last
//! output of its second pointwise layer.
//!
//! Composed from candle's ops this is four passes over the activation, each writing a fresh
//! tensor: the bias add, the layer-scale multiply, the NHWC → NCHW copy and the residual add
//! (on ConvNeXt-L at 768 the first stage's activations are 28 MB each). Here the CPU path
//! reads `y` in tiles of 16 channels × 64 positions (one cache line of `y` per position),
//! and writes each output channel's row once; channel tiles are split across the rayon pool.
//! Other devices, non-contiguous inputs and tensors that track gradients take candle's
//! composition ([`scaled_residual_plain`]).

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ops::cpu::Elem;

/// Channels per task (and per tile).
const TILE_C: usize = 16;
/// Positions per tile: 64 cache lines of `y` stay in L1 while 16 channels read them.
const TILE_P: usize = 64;

struct ScaledResidual {
    n: usize,
    c: usize,
    hw: usize,
}

/// `out (N, C, HW)` from `x (N, C, HW)`, `y (N, HW, C)` and `sc (2, C)` = (scale, scale · bias).
fn run<T: Elem>(x: &[T], y: &[T], sc: &[f32], d: &ScaledResidual) -> Vec<T> {
    let (c, hw) = (d.c, d.hw);
    let mut out = vec![T::from_f32(0.0); d.n * c * hw];
    let (scale, shift) = sc.split_at(c);
    // One task per (image, tile of channels): it owns `TILE_C` whole output rows.
    out.par_chunks_mut(c * hw)
        .enumerate()
        .for_each(|(n, image)| {
            let xs = &x[n * c * hw..(n + 1) * c * hw];
            let ys = &y[n * hw * c..(n + 1) * hw * c];
            image
                .par_chunks_mut(TILE_C * hw)
                .enumerate()
                .for_each(|(tile, rows)| {
                    let c0 = tile * TILE_C;
                    let tc = rows.len() / hw;
                    let xs = &xs[c0 * hw..(c0 + tc) * hw];
                    for p0 in (0..hw).step_by(TILE_P) {
                        let p1 = (p0 + TILE_P).min(hw);
                        for j in 0..tc {
                            let ch = c0 + j;
                            let (s, b) = (scale[ch], shift[ch]);
                            let orow = &mut rows[j * hw + p0..j * hw + p1];
                            let xrow = &xs[j * hw + p0..j * hw + p1];
                            for (k, (o, xv)) in orow.iter_mut().zip(xrow).enumerate() {
                                let yv = ys[(p0 + k) * c + ch].to_f32();
                                *o = T::from_f32(xv.to_f32() + (s * yv + b));
                            }
                        }
                    }
                });
        });
    out
}

impl CustomOp3 for ScaledResidual {
    fn name(&self) -> &'static str {
        "scaled-residual-nchw"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (Some((a, b)), Some((c, d)), Some((e, f))) = (
            l1.contiguous_offsets(),
            l2.contiguous_offsets(),
            l3.contiguous_offsets(),
        ) else {
            candle_core::bail!("scaled-residual: contiguous inputs only");
        };
        let CpuStorage::F32(sc) = s3 else {
            candle_core::bail!("scaled-residual: f32 scale rows");
        };
        let sc = &sc[e..f];
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(y)) => {
                CpuStorage::F32(run(&x[a..b], &y[c..d], sc, self))
            }
            (CpuStorage::F16(x), CpuStorage::F16(y)) => {
                CpuStorage::F16(run(&x[a..b], &y[c..d], sc, self))
            }
            (CpuStorage::BF16(x), CpuStorage::BF16(y)) => {
                CpuStorage::BF16(run(&x[a..b], &y[c..d], sc, self))
            }
            _ => candle_core::bail!("scaled-residual: f32, f16 or bf16 of one dtype"),
        };
        Ok((out, l1.shape().clone()))
    }
}

struct LayerNormToNhwc {
    n: usize,
    c: usize,
    hw: usize,
    eps: f32,
}

/// `out (N, HW, C)`: the LayerNorm over channels of `x (N, C, HW)` at each position, with
/// `wb (2, C)` = (weight, bias).
fn run_ln<T: Elem>(x: &[T], wb: &[f32], d: &LayerNormToNhwc) -> Vec<T> {
    let (c, hw) = (d.c, d.hw);
    let mut out = vec![T::from_f32(0.0); d.n * hw * c];
    let (weight, bias) = wb.split_at(c);
    out.par_chunks_mut(hw * c)
        .enumerate()
        .for_each(|(n, image)| {
            let xs = &x[n * c * hw..(n + 1) * c * hw];
            // One task per block of positions: it owns those output rows.
            image
                .par_chunks_mut(TILE_P * c)
                .enumerate()
                .for_each(|(block, rows)| {
                    let p0 = block * TILE_P;
                    let tp = rows.len() / c;
                    // Two passes over the block's columns (they stay in cache): the mean,
                    // then the centred variance, summed in f64 (a plain f32 sum of 192
                    // values offset by 3 is already off by 1e-6 in the mean).
                    let mut sum = [0f64; TILE_P];
                    for ch in 0..c {
                        let col = &xs[ch * hw + p0..ch * hw + p0 + tp];
                        for (m, v) in sum.iter_mut().zip(col) {
                            *m += f64::from(v.to_f32());
                        }
                    }
                    let inv_c = 1.0 / c as f64;
                    let mut mean = [0f32; TILE_P];
                    for (m, s) in mean.iter_mut().zip(&sum) {
                        *m = (s * inv_c) as f32;
                    }
                    let mut var = [0f64; TILE_P];
                    for ch in 0..c {
                        let col = &xs[ch * hw + p0..ch * hw + p0 + tp];
                        for ((r, m), v) in var.iter_mut().zip(&mean).zip(col) {
                            let dv = f64::from(v.to_f32() - m);
                            *r += dv * dv;
                        }
                    }
                    let mut rstd = [0f32; TILE_P];
                    for (r, v) in rstd.iter_mut().zip(&var) {
                        *r = (1.0 / (v * inv_c + f64::from(d.eps)).sqrt()) as f32;
                    }
                    // Write 16 channels of every row of the block at a time.
                    for c0 in (0..c).step_by(TILE_C) {
                        for ch in c0..(c0 + TILE_C).min(c) {
                            let (w, b) = (weight[ch], bias[ch]);
                            let col = &xs[ch * hw + p0..ch * hw + p0 + tp];
                            for (k, v) in col.iter().enumerate() {
                                let y = (v.to_f32() - mean[k]) * rstd[k];
                                rows[k * c + ch] = T::from_f32(y * w + b);
                            }
                        }
                    }
                });
        });
    out
}

impl candle_core::CustomOp2 for LayerNormToNhwc {
    fn name(&self) -> &'static str {
        "layer-norm-nchw-to-nhwc"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (Some((a, b)), Some((c, d))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("layer-norm-nhwc: contiguous inputs only");
        };
        let CpuStorage::F32(wb) = s2 else {
            candle_core::bail!("layer-norm-nhwc: f32 weight rows");
        };
        let wb = &wb[c..d];
        let out = match s1 {
            CpuStorage::F32(x) => CpuStorage::F32(run_ln(&x[a..b], wb, self)),
            CpuStorage::F16(x) => CpuStorage::F16(run_ln(&x[a..b], wb, self)),
            CpuStorage::BF16(x) => CpuStorage::BF16(run_ln(&x[a..b], wb, self)),
            _ => candle_core::bail!("layer-norm-nhwc: f32, f16 or bf16"),
        };
        let dims = l1.shape().dims();
        let shape = match dims {
            [n, c, h, w] => Shape::from((*n, *h, *w, *c)),
            _ => candle_core::bail!("layer-norm-nhwc: NCHW input"),
        };
        Ok((out, shape))
    }
}

/// LayerNorm over the channels of an NCHW tensor, written channels-last: `x (N, C, H, W)` →
/// `(N, H, W, C)`, as `layer_norm(x.permute(0, 2, 3, 1))` (ConvNeXt's block LayerNorm after
/// the depthwise convolution). One parallel pass on the CPU; elsewhere (or when tracking
/// gradients, or for a non-contiguous input) `layer_norm` is `None` and the caller composes.
pub fn layer_norm_to_nhwc(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Option<Tensor>> {
    let (n, c, h, w) = x.dims4()?;
    if weight.dims() != [c] || bias.dims() != [c] {
        return Err(Error::shape(
            "layer_norm_to_nhwc",
            format!(
                "weight {:?}, bias {:?} for {c} channels",
                weight.dims(),
                bias.dims()
            ),
        ));
    }
    let fused = x.device().is_cpu()
        && !(x.track_op() || weight.track_op() || bias.track_op())
        && x.is_contiguous()
        && matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16)
        && n * c * h * w > 0;
    if !fused {
        return Ok(None);
    }
    let wb = Tensor::cat(
        &[weight.to_dtype(DType::F32)?, bias.to_dtype(DType::F32)?],
        0,
    )?;
    let op = LayerNormToNhwc {
        n,
        c,
        hw: h * w,
        eps: eps as f32,
    };
    Ok(Some(x.apply_op2_no_bwd(&wb, &op)?))
}

/// `x + scale · (y + bias)` as candle's elementary ops compute it (differentiable): `x`
/// `(N, C, H, W)`, `y` `(N, H, W, C)`, `scale` and `bias` `(C)`.
pub fn scaled_residual_plain(
    x: &Tensor,
    y: &Tensor,
    bias: Option<&Tensor>,
    scale: Option<&Tensor>,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let mut y = y.reshape((n, h, w, c))?;
    if let Some(b) = bias {
        y = y.broadcast_add(b)?;
    }
    if let Some(s) = scale {
        y = y.broadcast_mul(s)?;
    }
    Ok((x + y.permute((0, 3, 1, 2))?.contiguous()?)?)
}

/// `x + scale · (y + bias)` for the NCHW block input `x (N, C, H, W)` and the channels-last
/// `y` (`(N, H, W, C)` or `(N·H·W, C)`); `bias` and `scale` `(C)`, each optional. One pass on
/// the CPU (see the module docs); [`scaled_residual_plain`] elsewhere.
pub fn scaled_residual_nchw(
    x: &Tensor,
    y: &Tensor,
    bias: Option<&Tensor>,
    scale: Option<&Tensor>,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let hw = h * w;
    if y.elem_count() != n * c * hw || y.dims().last() != Some(&c) {
        return Err(Error::shape(
            "scaled_residual",
            format!("y {:?} for x {:?}", y.dims(), x.dims()),
        ));
    }
    for (what, t) in [("bias", bias), ("scale", scale)] {
        if let Some(t) = t {
            if t.dims() != [c] {
                return Err(Error::shape(
                    "scaled_residual",
                    format!("{what} {:?} for {c} channels", t.dims()),
                ));
            }
        }
    }
    let tracked = x.track_op()
        || y.track_op()
        || bias.is_some_and(|b| b.track_op())
        || scale.is_some_and(|s| s.track_op());
    let fused = x.device().is_cpu()
        && !tracked
        && x.is_contiguous()
        && y.is_contiguous()
        && x.dtype() == y.dtype()
        && matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16)
        && n * c * hw > 0;
    if !fused {
        return scaled_residual_plain(x, y, bias, scale);
    }
    let ones = || Tensor::ones(c, DType::F32, x.device());
    let zeros = || Tensor::zeros(c, DType::F32, x.device());
    let s = match scale {
        Some(s) => s.to_dtype(DType::F32)?,
        None => ones()?,
    };
    let sb = match bias {
        Some(b) => (b.to_dtype(DType::F32)? * &s)?,
        None => zeros()?,
    };
    let sc = Tensor::cat(&[&s, &sb], 0)?;
    Ok(x.apply_op3_no_bwd(y, &sc, &ScaledResidual { n, c, hw })?)
}
