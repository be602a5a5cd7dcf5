//! Scaled dot-product attention: `softmax(Q Kᵀ · scale + mask) V` with GQA head sharing.
//!
//! [`attention`] is the single entry point the models call. It dispatches to the fused kernel
//! ([`attention_fused`]: online softmax, no score matrix; CPU always, CUDA/Metal with their
//! features) where that wins and to the plain matmul + softmax composition
//! ([`attention_plain`]) otherwise — always when an input tracks gradients, so training
//! differentiates through elementary ops.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, D};

use super::attention_cpu::{attention_cpu, AdditiveMask, FusedMask};
use super::cpu::{storage_from_f32, FloatSlice};
use super::params::{AttentionParams, Dims, MaskKind, GPU_MAX_HEAD_DIM};
use crate::error::{Error, Result};

/// Which positions a query may attend to.
#[derive(Debug, Clone, Copy)]
pub enum AttnMask<'a> {
    /// Every query sees every key.
    None,
    /// Query `i` (of `Sq`, the last `Sq` of `Sk` positions) sees keys `j <= Sk - Sq + i`.
    Causal,
    /// An additive mask broadcastable to `(B, H, Sq, Sk)` (0 = keep, −inf = drop).
    Additive(&'a Tensor),
}

/// Softmax over the last dimension (fused at inference, differentiable when training).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        let max = x.max_keepdim(D::Minus1)?.detach();
        let e = x.broadcast_sub(&max)?.exp()?;
        Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
    } else {
        Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?)
    }
}

/// Shapes of one call: `(B, H, Hkv, Sq, Sk, D, Dv)`.
fn check(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Dims> {
    let bad = || {
        Error::shape(
            "attention",
            format!(
                "q {:?}, k {:?}, v {:?}: need (B,H,Sq,D), (B,Hkv,Sk,D), (B,Hkv,Sk,Dv) with H % Hkv == 0",
                q.dims(),
                k.dims(),
                v.dims()
            ),
        )
    };
    let (b, h, sq, d) = q.dims4().map_err(|_| bad())?;
    let (bk, hk, sk, dk) = k.dims4().map_err(|_| bad())?;
    let (bv, hv, sv, dv) = v.dims4().map_err(|_| bad())?;
    if b != bk || b != bv || d != dk || sk != sv || hk != hv || hk == 0 || h % hk != 0 {
        return Err(bad());
    }
    if sk == 0 {
        return Err(Error::shape(
            "attention",
            "no keys (Sk = 0): the softmax is undefined",
        ));
    }
    Ok(Dims {
        b,
        h,
        hkv: hk,
        sq,
        sk,
        d,
        dv,
    })
}

/// Repeats each of `Hkv` heads `n_rep` times along dim 1: `(B, Hkv, S, D) → (B, Hkv·n_rep, S, D)`.
pub fn repeat_kv(x: &Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x.clone());
    }
    let (b, hk, s, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((b, hk, n_rep, s, d))?
        .reshape((b, hk * n_rep, s, d))?)
}

/// A `(Sq, Sk)` additive causal mask for queries that are the last `Sq` of `Sk` positions.
pub fn causal_mask(
    sq: usize,
    sk: usize,
    dtype: candle_core::DType,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let offset = sk.saturating_sub(sq);
    let data: Vec<f32> = (0..sq)
        .flat_map(|i| {
            (0..sk).map(move |j| {
                if j <= offset + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(data, (sq, sk), device)?.to_dtype(dtype)?)
}

/// The plain composition: repeat KV heads, `matmul`, mask, softmax, `matmul`.
pub fn attention_plain(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: AttnMask,
    scale: f64,
) -> Result<Tensor> {
    let dims = check(q, k, v)?;
    let k = repeat_kv(k, dims.h / dims.hkv)?;
    let v = repeat_kv(v, dims.h / dims.hkv)?;
    let scores = (q.contiguous()?.matmul(&k.t()?.contiguous()?)? * scale)?;
    let scores = match mask {
        AttnMask::None => scores,
        AttnMask::Causal => {
            let m = causal_mask(dims.sq, dims.sk, scores.dtype(), scores.device())?;
            scores.broadcast_add(&m)?
        }
        AttnMask::Additive(m) => scores.broadcast_add(&m.to_dtype(scores.dtype())?)?,
    };
    let p = softmax_last_dim(&scores)?;
    Ok(p.matmul(&v.contiguous()?)?)
}

/// Fewest keys for which the fused CPU kernel beats the plain composition. With fewer keys
/// than one register tile (16) the kernel mostly pads (BENCHMARKS.md, "attention dispatch":
/// SAM's image→token attention, 7 keys, runs faster plain; every shape with ≥ 16 keys,
/// from 16×16 up, runs faster fused).
const CPU_FUSED_MIN_KEYS: usize = 16;

/// Scaled dot-product attention. `q: (B, H, Sq, D)`, `k: (B, Hkv, Sk, D)`,
/// `v: (B, Hkv, Sk, Dv)` → `(B, H, Sq, Dv)`.
///
/// Uses [`attention_plain`] when any input tracks gradients, with fewer than 16 keys on the
/// CPU, and on GPUs without the matching feature (or with an additive mask or head dims above
/// 256 there); [`attention_fused`] otherwise.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: AttnMask, scale: f64) -> Result<Tensor> {
    let dims = check(q, k, v)?;
    let tracks = q.track_op()
        || k.track_op()
        || v.track_op()
        || matches!(mask, AttnMask::Additive(m) if m.track_op());
    let same_dtype = q.dtype() == k.dtype() && q.dtype() == v.dtype();
    let float = matches!(q.dtype(), DType::F32 | DType::F16 | DType::BF16);
    if tracks || !same_dtype || !float || !super::has_kernel_for(q.device()) {
        return attention_plain(q, k, v, mask, scale);
    }
    let fused = if q.device().is_cpu() {
        dims.sk >= CPU_FUSED_MIN_KEYS
    } else {
        !matches!(mask, AttnMask::Additive(_))
            && dims.d <= GPU_MAX_HEAD_DIM
            && dims.dv <= GPU_MAX_HEAD_DIM
    };
    if fused {
        attention_fused(q, k, v, mask, scale)
    } else {
        attention_plain(q, k, v, mask, scale)
    }
}

/// The fused kernel (online softmax, no `Sq × Sk` matrix, f32 accumulation), whatever the
/// sizes. Same shapes and result as [`attention_plain`]; no backward pass. f32, f16 or bf16
/// (all three inputs alike); the output has the inputs' dtype. On GPUs the additive mask is
/// not supported by the kernels (use [`attention_plain`]).
pub fn attention_fused(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: AttnMask,
    scale: f64,
) -> Result<Tensor> {
    const OP: &str = "attention";
    let dims = check(q, k, v)?;
    super::require_float(q, OP, "q")?;
    if k.dtype() != q.dtype() || v.dtype() != q.dtype() {
        return Err(Error::DTypeMismatch {
            name: "attention: k, v".into(),
            expected: format!("{:?} (the dtype of q)", q.dtype()),
            got: format!("{:?}, {:?}", k.dtype(), v.dtype()),
        });
    }
    super::require_same_device(q, k, OP)?;
    super::require_same_device(q, v, OP)?;
    super::require_kernel(q, "fused attention on a GPU tensor")?;
    if dims.d == 0 {
        // Empty head vectors: every score is 0, nothing to fuse.
        return attention_plain(q, k, v, mask, scale);
    }
    if !q.device().is_cpu() && (dims.d > GPU_MAX_HEAD_DIM || dims.dv > GPU_MAX_HEAD_DIM) {
        return Err(Error::shape(
            OP,
            format!(
                "head dims {}/{}: the GPU kernels support up to {GPU_MAX_HEAD_DIM}",
                dims.d, dims.dv
            ),
        ));
    }
    let fmask = match mask {
        AttnMask::None => FusedMask::None,
        AttnMask::Causal => FusedMask::Causal,
        AttnMask::Additive(m) => {
            if !q.device().is_cpu() {
                return Err(Error::shape(
                    OP,
                    "the GPU kernels take no additive mask; use attention_plain",
                ));
            }
            FusedMask::Additive(Arc::new(additive(m, &dims)?))
        }
    };
    let op = FusedAttention {
        dims,
        scale: scale as f32,
        mask: fmask,
    };
    Ok(q.detach().contiguous()?.apply_op3_no_bwd(
        &k.detach().contiguous()?,
        &v.detach().contiguous()?,
        &op,
    )?)
}

/// The additive mask as f32 values with broadcast strides over `(B, H, Sq, Sk)`.
fn additive(m: &Tensor, d: &Dims) -> Result<AdditiveMask> {
    let full = [d.b, d.h, d.sq, d.sk];
    let dims = m.dims();
    let bad = || {
        Error::shape(
            "attention",
            format!("mask {dims:?} does not broadcast to {full:?}"),
        )
    };
    if dims.len() > 4 {
        return Err(bad());
    }
    let mut shape = [1usize; 4];
    shape[4 - dims.len()..].copy_from_slice(dims);
    let mut strides = [0usize; 4];
    let mut stride = 1;
    for i in (0..4).rev() {
        if shape[i] == full[i] && full[i] != 1 {
            strides[i] = stride;
        } else if shape[i] != 1 {
            return Err(bad());
        }
        stride *= shape[i];
    }
    let values = m
        .detach()
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(AdditiveMask { values, strides })
}

/// The fused op: `(q, k, v)` → attention output.
#[derive(Debug, Clone)]
pub(crate) struct FusedAttention {
    pub(crate) dims: Dims,
    pub(crate) scale: f32,
    pub(crate) mask: FusedMask,
}

impl FusedAttention {
    /// The plain-number form the GPU backends take.
    #[cfg_attr(
        not(any(feature = "cuda", all(feature = "metal", target_os = "macos"))),
        allow(dead_code)
    )]
    fn params(&self) -> AttentionParams {
        AttentionParams {
            dims: self.dims,
            scale: self.scale,
            mask: match self.mask {
                FusedMask::None => MaskKind::None,
                FusedMask::Causal => MaskKind::Causal,
                FusedMask::Additive(_) => MaskKind::Additive,
            },
        }
    }
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "fused-attention"
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
        let d = &self.dims;
        let q = FloatSlice::new(s1, l1, "attention")?;
        let k = FloatSlice::new(s2, l2, "attention")?;
        let v = FloatSlice::new(s3, l3, "attention")?;
        let sizes = [
            (q.len(), d.b * d.h * d.sq * d.d),
            (k.len(), d.b * d.hkv * d.sk * d.d),
            (v.len(), d.b * d.hkv * d.sk * d.dv),
        ];
        if sizes.iter().any(|(got, want)| got != want) || q.dtype() != k.dtype() {
            candle_core::bail!("attention: inputs do not match {d:?}")
        }
        let dtype = q.dtype();
        let out = attention_cpu(q, k, v, d, self.scale, &self.mask);
        Ok((
            storage_from_f32(out, dtype)?,
            Shape::from((d.b, d.h, d.sq, d.dv)),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::attention_fwd(&self.params(), s1, l1, s2, l2, s3, l3)
    }

    #[cfg(all(feature = "metal", target_os = "macos"))]
    fn metal_fwd(
        &self,
        s1: &candle_core::MetalStorage,
        l1: &Layout,
        s2: &candle_core::MetalStorage,
        l2: &Layout,
        s3: &candle_core::MetalStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::MetalStorage, Shape)> {
        super::metal::attention_fwd(&self.params(), s1, l1, s2, l2, s3, l3)
    }
}
