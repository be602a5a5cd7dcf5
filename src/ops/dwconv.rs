//! Depthwise 2-D convolution (`groups == channels`, stride 1, zero padding), as ConvNeXt's
//! 7×7 `dwconv` (`nn.Conv2d(C, C, 7, padding=3, groups=C)`), with its backward pass.
//!
//! candle runs grouped convolutions as one convolution per group, several times slower than
//! even a shifted multiply-add. On the CPU this module runs a direct convolution: rayon over
//! the B·C planes, each plane copied once into a zero-padded f32 buffer, then register tiles
//! of outputs accumulated over the kernel taps (contiguous row loads the compiler vectorises;
//! AVX2+FMA picked at run time). Other devices use candle's grouped `conv2d`, in f32.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{f32_values, simd_dispatch, Elem, FloatSlice, Fma};
use crate::error::{Error, Result};

/// `x: (B, C, H, W)`, `weight: (C, 1, K, K')`, optional `bias: (C)`, zero padding `pad`,
/// stride 1 → `(B, C, H + 2·pad − K + 1, W + 2·pad − K' + 1)`, in `x`'s dtype.
///
/// Differentiable with respect to all three inputs.
pub fn depthwise_conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    pad: usize,
) -> Result<Tensor> {
    let (c, _kh, _kw, ho, wo) = check(x, weight, bias, pad)?;
    if !x.device().is_cpu() {
        if x.elem_count() == 0 || weight.elem_count() == 0 {
            // candle's grouped conv2d divides by the group count (C = 0) and launches no
            // kernel on an empty batch. Nothing to compute: the CPU op on the (empty or
            // tiny) copies gives the shapes and, through the copies, the gradients.
            let cpu = candle_core::Device::Cpu;
            let b = bias.map(|b| b.to_device(&cpu)).transpose()?;
            let y = depthwise_conv2d(
                &x.to_device(&cpu)?,
                &weight.to_device(&cpu)?,
                b.as_ref(),
                pad,
            )?;
            return Ok(y.to_device(x.device())?);
        }
        // In f32 with one rounding to x's dtype at the end, as the CPU kernel.
        let f32 = candle_core::DType::F32;
        let y = x
            .to_dtype(f32)?
            .conv2d(&weight.to_dtype(f32)?, pad, 1, 1, c)?;
        let y = match bias {
            Some(b) => y.broadcast_add(&b.to_dtype(f32)?.reshape((1, c, 1, 1))?)?,
            None => y,
        };
        return Ok(y.to_dtype(x.dtype())?);
    }
    let zeros;
    let bias = match bias {
        Some(b) => b,
        None => {
            zeros = Tensor::zeros(c, weight.dtype(), weight.device())?;
            &zeros
        }
    };
    let op = DwConvOp {
        pad: (pad as isize, pad as isize),
        out: (ho, wo),
        flip: false,
    };
    Ok(x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?)
}

/// The gradients `(∂x, ∂weight, ∂bias)` of `depthwise_conv2d(x, weight, bias, pad)` for the
/// output gradient `grad_y` — what the backward pass computes, for callers that drive their
/// own training loop. ∂bias has the weight's dtype.
pub fn depthwise_conv2d_backward(
    x: &Tensor,
    weight: &Tensor,
    grad_y: &Tensor,
    pad: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (c, _kh, _kw, ho, wo) = check(x, weight, None, pad)?;
    let b = x.dim(0)?;
    if grad_y.dims() != [b, c, ho, wo] {
        return Err(Error::shape(
            "depthwise_conv2d_backward",
            format!("grad_y {:?}: need {:?}", grad_y.dims(), [b, c, ho, wo]),
        ));
    }
    super::require_same_device(x, grad_y, "depthwise_conv2d_backward")?;
    if x.device().is_cpu() {
        let pad = (pad as isize, pad as isize);
        let (x, w, g) = (
            x.detach(),
            weight.detach(),
            grad_y.detach().to_dtype(x.dtype())?,
        );
        return Ok(gradients(&x, &w, &g, pad, false)?);
    }
    // Other devices: differentiate the elementary-op composition.
    let (xv, wv) = (
        candle_core::Var::from_tensor(&x.detach())?,
        candle_core::Var::from_tensor(&weight.detach())?,
    );
    let bv = candle_core::Var::from_tensor(&Tensor::zeros(c, weight.dtype(), weight.device())?)?;
    let y = depthwise_conv2d_shifted(&xv, &wv, Some(&bv), pad)?;
    let grads = (y * grad_y.detach())?.sum_all()?.backward()?;
    let get = |v: &candle_core::Var| -> Result<Tensor> {
        match grads.get(v) {
            Some(g) => Ok(g.clone()),
            None => Ok(v.zeros_like()?),
        }
    };
    Ok((get(&xv)?, get(&wv)?, get(&bv)?))
}

/// Shapes check; returns `(C, K, K', H_out, W_out)`.
fn check(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    pad: usize,
) -> Result<(usize, usize, usize, usize, usize)> {
    const OP: &str = "depthwise_conv2d";
    let (_b, c, h, w) = x
        .dims4()
        .map_err(|_| Error::shape(OP, format!("x {:?}: need (B, C, H, W)", x.dims())))?;
    let bad_weight = || {
        Error::shape(
            OP,
            format!(
                "weight {:?} for input {:?}: need (C, 1, K, K')",
                weight.dims(),
                x.dims()
            ),
        )
    };
    let (wc, one, kh, kw) = weight.dims4().map_err(|_| bad_weight())?;
    if wc != c || one != 1 || kh == 0 || kw == 0 {
        return Err(bad_weight());
    }
    if let Some(b) = bias {
        if b.dims() != [c] {
            return Err(Error::shape(OP, format!("bias {:?}: need ({c})", b.dims())));
        }
        super::require_float(b, OP, "bias")?;
        super::require_same_device(x, b, OP)?;
    }
    super::require_float(x, OP, "x")?;
    super::require_float(weight, OP, "weight")?;
    super::require_same_device(x, weight, OP)?;
    let (hp, wp) = (h + 2 * pad, w + 2 * pad);
    if hp < kh || wp < kw {
        return Err(Error::shape(
            OP,
            format!("kernel {kh}x{kw} larger than the padded input {hp}x{wp}"),
        ));
    }
    Ok((c, kh, kw, hp - kh + 1, wp - kw + 1))
}

/// The elementary-op composition (one broadcast multiply-add per tap over a padded copy):
/// the reference the kernel is tested against, differentiable through candle's ops.
pub fn depthwise_conv2d_shifted(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    pad: usize,
) -> Result<Tensor> {
    let (c, kh, kw, ho, wo) = check(x, weight, bias, pad)?;
    let xp = if pad > 0 {
        x.pad_with_zeros(2, pad, pad)?.pad_with_zeros(3, pad, pad)?
    } else {
        x.clone()
    };
    let wt = weight.reshape((c, kh * kw))?;
    let mut acc: Option<Tensor> = None;
    for dy in 0..kh {
        let rows = xp.narrow(2, dy, ho)?;
        for dx in 0..kw {
            let tap = wt.narrow(1, dy * kw + dx, 1)?.reshape((1, c, 1, 1))?;
            let term = rows.narrow(3, dx, wo)?.broadcast_mul(&tap)?;
            acc = Some(match acc {
                None => term,
                Some(a) => (a + term)?,
            });
        }
    }
    let mut y = acc.ok_or_else(|| Error::shape("depthwise_conv2d", "empty kernel"))?;
    if let Some(b) = bias {
        y = y.broadcast_add(&b.reshape((1, c, 1, 1))?)?;
    }
    Ok(y)
}

/// Copies one `h × w` plane into an `hp × wp` f32 buffer so that
/// `buf[r][c] = src[r − pad.0][c − pad.1]`, zero outside the source. The buffer is zeroed
/// when it is (re)sized; after that only the cells covered by the source are written, which
/// are the same for every plane of one call, so the border stays zero.
fn pad_plane<T: Elem>(
    src: &[T],
    (h, w): (usize, usize),
    pad: (isize, isize),
    (hp, wp): (usize, usize),
    buf: &mut Vec<f32>,
) {
    if buf.len() != hp * wp {
        buf.clear();
        buf.resize(hp * wp, 0.0);
    }
    // Source columns [c0, c1) land in buffer columns [c0 + pad.1, c1 + pad.1).
    let c0 = (-pad.1).max(0) as usize;
    let c1 = (wp as isize - pad.1).clamp(0, w as isize) as usize;
    if c0 >= c1 {
        return;
    }
    let dc = (c0 as isize + pad.1) as usize;
    for (r, dst) in buf.chunks_exact_mut(wp).enumerate() {
        let sr = r as isize - pad.0;
        if sr < 0 || sr >= h as isize {
            continue;
        }
        let row = &src[sr as usize * w..][..w];
        for (d, s) in dst[dc..dc + (c1 - c0)].iter_mut().zip(&row[c0..c1]) {
            *d = s.to_f32();
        }
    }
}

/// One zero-padded input plane and what to convolve it with.
#[derive(Clone, Copy)]
struct Plane<'a> {
    /// The padded plane, rows of `wp` values.
    xp: &'a [f32],
    wp: usize,
    /// The `kh × kw` taps of this channel.
    taps: &'a [f32],
    k: (usize, usize),
    bias: f32,
    /// Output rows and columns, rounded up to whole tiles.
    out_r: (usize, usize),
}

/// `R` output rows × `CW` output columns per register tile.
#[inline(always)]
fn tiles<F: Fma, const R: usize, const CW: usize>(p: &Plane<'_>, out: &mut [f32]) {
    let Plane {
        xp,
        wp,
        taps,
        k: (kh, kw),
        bias,
        out_r: (ho_r, wo_r),
    } = *p;
    let span = CW + kw - 1;
    for oy in (0..ho_r).step_by(R) {
        for ox in (0..wo_r).step_by(CW) {
            let mut acc = [[bias; CW]; R];
            for (ky, wrow) in taps.chunks_exact(kw).take(kh).enumerate() {
                // The R input rows this kernel row reads, each `CW + K' - 1` long, so that
                // the windows below need no further bounds checks.
                let rows: [&[f32]; R] =
                    std::array::from_fn(|r| &xp[(oy + r + ky) * wp + ox..][..span]);
                for (kx, &wv) in wrow.iter().enumerate() {
                    for (a, row) in acc.iter_mut().zip(&rows) {
                        let src = &row[kx..kx + CW];
                        for j in 0..CW {
                            a[j] = F::fma(wv, src[j], a[j]);
                        }
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                out[(oy + r) * wo_r + ox..][..CW].copy_from_slice(a);
            }
        }
    }
}

/// Tile widths: wide planes use 2×32 tiles, narrow ones 4×16 (8 vector accumulators each).
const WIDE: (usize, usize) = (2, 32);
const NARROW: (usize, usize) = (4, 16);

fn tile_shape(wo: usize) -> (usize, usize) {
    if wo > NARROW.1 + NARROW.1 / 2 {
        WIDE
    } else {
        NARROW
    }
}

#[inline(always)]
fn conv_plane_generic<F: Fma>(p: &Plane<'_>, out: &mut [f32]) {
    if tile_shape(p.out_r.1) == WIDE {
        tiles::<F, { WIDE.0 }, { WIDE.1 }>(p, out)
    } else {
        tiles::<F, { NARROW.0 }, { NARROW.1 }>(p, out)
    }
}

simd_dispatch! {
    fn conv_plane(p: &Plane<'_>, out: &mut [f32]) = conv_plane_generic;
}

/// The geometry of a depthwise convolution.
#[derive(Clone, Copy)]
struct ConvShape {
    /// Input `(B, C, H, W)`.
    input: (usize, usize, usize, usize),
    /// Kernel `(kh, kw)`.
    k: (usize, usize),
    /// Zero padding `(top/bottom, left/right)`; negative crops.
    pad: (isize, isize),
    /// Output `(ho, wo)`.
    out: (usize, usize),
    /// Convolve with the kernel rotated by 180° (the input gradient).
    flip: bool,
}

/// The whole convolution on the CPU for one element type.
fn conv_cpu<T: Elem>(x: &[T], shape: &ConvShape, weight: &[f32], bias: &[f32]) -> Vec<T> {
    let ConvShape {
        input: (b, c, h, w),
        k: (kh, kw),
        pad,
        out: (ho, wo),
        flip,
    } = *shape;
    let (tr, tc) = tile_shape(wo);
    let (ho_r, wo_r) = (ho.div_ceil(tr) * tr, wo.div_ceil(tc) * tc);
    let (hp, wp) = (ho_r + kh - 1, wo_r + kw - 1);
    let mut y = vec![T::from_f32(0.0); b * c * ho * wo];
    if y.is_empty() {
        return y;
    }
    y.par_chunks_mut(ho * wo)
        .with_min_len(8)
        .enumerate()
        .for_each_init(
            || (Vec::new(), vec![0f32; ho_r * wo_r], vec![0f32; kh * kw]),
            |(xp, tile, taps), (plane, dst)| {
                let ch = plane % c;
                let wk = &weight[ch * kh * kw..][..kh * kw];
                if flip {
                    for (t, v) in taps.iter_mut().zip(wk.iter().rev()) {
                        *t = *v;
                    }
                } else {
                    taps.copy_from_slice(wk);
                }
                pad_plane(&x[plane * h * w..][..h * w], (h, w), pad, (hp, wp), xp);
                let p = Plane {
                    xp,
                    wp,
                    taps,
                    k: (kh, kw),
                    bias: bias[ch],
                    out_r: (ho_r, wo_r),
                };
                if (ho_r, wo_r) == (ho, wo) {
                    if let Some(d) = T::as_f32_mut(dst) {
                        // f32 output with whole tiles: no staging copy.
                        conv_plane(&p, d);
                        return;
                    }
                }
                conv_plane(&p, tile);
                for (d, s) in dst.chunks_exact_mut(wo).zip(tile.chunks_exact(wo_r)) {
                    for (o, v) in d.iter_mut().zip(s) {
                        *o = T::from_f32(*v);
                    }
                }
            },
        );
    y
}

/// The convolution op: `(x, weight, bias)` → `y`. `pad` may be negative and `flip` reverses
/// the kernel (both used by the input gradient).
#[derive(Debug, Clone, Copy)]
struct DwConvOp {
    pad: (isize, isize),
    out: (usize, usize),
    flip: bool,
}

impl CustomOp3 for DwConvOp {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
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
        let dims = l1.shape().dims4()?;
        let (_, _, kh, kw) = l2.shape().dims4()?;
        let weight = f32_values(s2, l2, "depthwise_conv2d")?;
        let bias = f32_values(s3, l3, "depthwise_conv2d")?;
        if weight.len() != dims.1 * kh * kw || bias.len() != dims.1 {
            candle_core::bail!("depthwise_conv2d: weight/bias do not match {dims:?}")
        }
        let (ho, wo) = self.out;
        let shape = ConvShape {
            input: dims,
            k: (kh, kw),
            pad: self.pad,
            out: self.out,
            flip: self.flip,
        };
        let storage = match FloatSlice::new(s1, l1, "depthwise_conv2d")? {
            FloatSlice::F32(x) => CpuStorage::F32(conv_cpu(x, &shape, &weight, &bias)),
            FloatSlice::F16(x) => CpuStorage::F16(conv_cpu(x, &shape, &weight, &bias)),
            FloatSlice::BF16(x) => CpuStorage::BF16(conv_cpu(x, &shape, &weight, &bias)),
        };
        Ok((storage, Shape::from((dims.0, dims.1, ho, wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gx, gw, gb) = gradients(x, weight, grad, self.pad, self.flip)?;
        Ok((Some(gx), Some(gw), Some(gb.to_dtype(bias.dtype())?)))
    }
}

/// `(∂x, ∂weight, ∂bias)` of the CPU op for the output gradient `grad` (∂bias in the
/// weight's dtype).
fn gradients(
    x: &Tensor,
    weight: &Tensor,
    grad: &Tensor,
    pad: (isize, isize),
    flip: bool,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let (_b, c, h, w) = x.dims4()?;
    let (_, _, kh, kw) = weight.dims4()?;
    let grad = grad.contiguous()?;
    // ∂x: full correlation of the output gradient with the flipped kernel.
    let gx_op = DwConvOp {
        pad: (kh as isize - 1 - pad.0, kw as isize - 1 - pad.1),
        out: (h, w),
        flip: !flip,
    };
    let zeros = Tensor::zeros(c, weight.dtype(), weight.device())?;
    let gx = grad.apply_op3_no_bwd(&weight.contiguous()?, &zeros, &gx_op)?;
    let gw_op = WeightGradOp {
        pad,
        kernel: (kh, kw),
        flip,
    };
    // (C, K·K' + 1): the weight gradient, then the bias gradient.
    let g = x.contiguous()?.apply_op2_no_bwd(&grad, &gw_op)?;
    let gw = g
        .narrow(1, 0, kh * kw)?
        .reshape((c, 1, kh, kw))?
        .to_dtype(weight.dtype())?;
    let gb = g
        .narrow(1, kh * kw, 1)?
        .reshape(c)?
        .to_dtype(weight.dtype())?;
    Ok((gx, gw, gb))
}

/// `∂weight` and `∂bias`: the correlation of the padded input with the output gradient and
/// the sum of the output gradient, over the batch. `(x, grad_y)` → `(C, K·K' + 1)` f32.
#[derive(Debug, Clone, Copy)]
struct WeightGradOp {
    pad: (isize, isize),
    kernel: (usize, usize),
    flip: bool,
}

/// Lanes of the partial sums kept per tap (reduced once per plane).
const LANES: usize = 16;

#[inline(always)]
fn weight_grad_plane_generic<F: Fma>(
    xp: &[f32],
    wp: usize,
    gy: &[f32],
    (ho, wo): (usize, usize),
    (kh, kw): (usize, usize),
    lanes: &mut [f32],
) {
    lanes.iter_mut().for_each(|v| *v = 0.0);
    let body = wo / LANES * LANES;
    for oy in 0..ho {
        let g = &gy[oy * wo..][..wo];
        for ky in 0..kh {
            let row = &xp[(oy + ky) * wp..][..wp];
            for kx in 0..kw {
                let xs = &row[kx..kx + wo];
                let Some(acc) = lanes[(ky * kw + kx) * LANES..].first_chunk_mut::<LANES>() else {
                    return;
                };
                for (gc, xc) in g[..body]
                    .chunks_exact(LANES)
                    .zip(xs[..body].chunks_exact(LANES))
                {
                    for j in 0..LANES {
                        acc[j] = F::fma(gc[j], xc[j], acc[j]);
                    }
                }
                for (j, (gv, xv)) in g[body..].iter().zip(&xs[body..]).enumerate() {
                    acc[j] = F::fma(*gv, *xv, acc[j]);
                }
            }
        }
    }
}

simd_dispatch! {
    fn weight_grad_plane(
        xp: &[f32],
        wp: usize,
        gy: &[f32],
        out: (usize, usize),
        k: (usize, usize),
        lanes: &mut [f32],
    ) = weight_grad_plane_generic;
}

impl CustomOp2 for WeightGradOp {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = l1.shape().dims4()?;
        let (_, _, ho, wo) = l2.shape().dims4()?;
        let (kh, kw) = self.kernel;
        let x = f32_values(s1, l1, "depthwise_conv2d backward")?;
        let gy = f32_values(s2, l2, "depthwise_conv2d backward")?;
        let (hp, wp) = (ho + kh - 1, wo + kw - 1);
        let taps = kh * kw;
        // Per plane: the K·K' weight taps, then the bias.
        let row = taps + 1;
        let mut per_plane = vec![0f32; b * c * row];
        per_plane
            .par_chunks_mut(row)
            .with_min_len(8)
            .enumerate()
            .for_each_init(
                || (Vec::new(), vec![0f32; taps * LANES]),
                |(xp, lanes), (plane, dst)| {
                    pad_plane(&x[plane * h * w..][..h * w], (h, w), self.pad, (hp, wp), xp);
                    let g = &gy[plane * ho * wo..][..ho * wo];
                    weight_grad_plane(xp, wp, g, (ho, wo), (kh, kw), lanes);
                    for (d, l) in dst.iter_mut().zip(lanes.chunks_exact(LANES)) {
                        *d = l.iter().sum();
                    }
                    dst[taps] = g.iter().sum();
                    if self.flip {
                        dst[..taps].reverse();
                    }
                },
            );
        let mut sums = vec![0f32; c * row];
        for plane in per_plane.chunks_exact((c * row).max(1)) {
            for (g, p) in sums.iter_mut().zip(plane) {
                *g += p;
            }
        }
        Ok((CpuStorage::F32(sums), Shape::from((c, row))))
    }
}
