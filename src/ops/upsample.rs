//! Mask upsampling: bilinear to the padded input, crop, bilinear to the original size,
//! threshold. Interim plain candle chain.

use candle_core::Tensor;

use crate::error::Result;

/// Sizes involved in mapping decoder masks back to the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskResize {
    pub padded: (usize, usize),
    pub valid: (usize, usize),
    pub orig: (usize, usize),
}

/// `(N, h, w)` logits → N masks of `orig` size, 0/1 bytes.
pub fn upsample_masks(logits: &Tensor, r: &MaskResize) -> Result<Vec<Vec<u8>>> {
    let x = logits.unsqueeze(1)?;
    let x = x.upsample_bilinear2d(r.padded.0, r.padded.1, false)?;
    let x = x
        .narrow(2, 0, r.valid.0)?
        .narrow(3, 0, r.valid.1)?
        .contiguous()?;
    let x = x
        .upsample_bilinear2d(r.orig.0, r.orig.1, false)?
        .squeeze(1)?;
    let n = x.dim(0)?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let v: Vec<f32> = x.get(i)?.flatten_all()?.to_vec1()?;
        out.push(v.into_iter().map(|l| u8::from(l > 0.0)).collect());
    }
    Ok(out)
}
