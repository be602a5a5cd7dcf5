//! Depthwise 2-D convolution (`groups == channels`), as ConvNeXt's 7×7 `dwconv`.
//!
//! candle runs grouped convolutions as one convolution per group (measured 5–9× slower than
//! a shifted multiply-add), so this module never goes through `conv2d(groups = C)`.

use candle_core::Tensor;

use crate::error::{Error, Result};

/// `x: (B, C, H, W)`, `weight: (C, 1, K, K)`, optional `bias: (C)`, zero padding `pad`,
/// stride 1 → `(B, C, H + 2·pad − K + 1, W + 2·pad − K + 1)`.
///
/// Shifted multiply-add: one broadcast multiply-accumulate per kernel tap over a padded
/// copy of the input. Differentiable through candle's elementary ops.
pub fn depthwise_conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    pad: usize,
) -> Result<Tensor> {
    let (_b, c, h, w) = x.dims4()?;
    let (wc, one, kh, kw) = weight.dims4()?;
    if wc != c || one != 1 {
        return Err(Error::shape(
            "depthwise_conv2d",
            format!(
                "weight {:?} for input {:?}: need (C, 1, K, K)",
                weight.dims(),
                x.dims()
            ),
        ));
    }
    let (hp, wp) = (h + 2 * pad, w + 2 * pad);
    if hp < kh || wp < kw {
        return Err(Error::shape(
            "depthwise_conv2d",
            "kernel larger than padded input",
        ));
    }
    let (ho, wo) = (hp - kh + 1, wp - kw + 1);
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
