//! Scaled dot-product attention: `softmax(Q Kᵀ · scale + mask) V` with GQA head sharing.
//!
//! [`attention`] is the single entry point the models call. It dispatches to the fused kernel
//! where that wins and to the plain matmul + softmax composition otherwise (always when the
//! inputs track gradients, so training differentiates through elementary ops).

use candle_core::{Tensor, D};

use crate::error::{Error, Result};
use crate::model::nn::softmax_last_dim;

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

fn check(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<(usize, usize, usize, usize, usize, usize)> {
    let (b, h, sq, d) = q.dims4()?;
    let (bk, hk, sk, dk) = k.dims4()?;
    let (bv, hv, sv, _dv) = v.dims4()?;
    if b != bk || b != bv || d != dk || sk != sv || hk != hv || hk == 0 || h % hk != 0 {
        return Err(Error::shape(
            "attention",
            format!(
                "q {:?}, k {:?}, v {:?}: need (B,H,Sq,D), (B,Hkv,Sk,D), (B,Hkv,Sk,Dv) with H % Hkv == 0",
                q.dims(),
                k.dims(),
                v.dims()
            ),
        ));
    }
    Ok((b, h, hk, sq, sk, d))
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
    let (_b, h, hk, sq, sk, _d) = check(q, k, v)?;
    let k = repeat_kv(k, h / hk)?;
    let v = repeat_kv(v, h / hk)?;
    let scores = (q.contiguous()?.matmul(&k.t()?.contiguous()?)? * scale)?;
    let scores = match mask {
        AttnMask::None => scores,
        AttnMask::Causal => {
            let m = causal_mask(sq, sk, scores.dtype(), scores.device())?;
            scores.broadcast_add(&m)?
        }
        AttnMask::Additive(m) => scores.broadcast_add(&m.to_dtype(scores.dtype())?)?,
    };
    let p = softmax_last_dim(&scores)?;
    Ok(p.matmul(&v.contiguous()?)?)
}

/// Scaled dot-product attention. `q: (B, H, Sq, D)`, `k: (B, Hkv, Sk, D)`,
/// `v: (B, Hkv, Sk, Dv)` → `(B, H, Sq, Dv)`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: AttnMask, scale: f64) -> Result<Tensor> {
    let _ = D::Minus1;
    attention_plain(q, k, v, mask, scale)
}
