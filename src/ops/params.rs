//! Plain-number parameters of the custom ops, the form in which the op files hand them to the
//! GPU backends (`cuda`, `metal`): the backends import these and nothing from the op files,
//! so the dependency runs one way (op file → params ← backend).

use candle_core::Shape;

/// Largest head dimension (`D`, `Dv`) of the GPU kernels (`ATTN_MAX_DIM` in
/// kernels/cuda/attention.cu and kernels/metal/attention.metal).
#[cfg_attr(
    not(any(feature = "cuda", all(feature = "metal", target_os = "macos"))),
    allow(dead_code)
)]
pub(crate) const GPU_MAX_HEAD_DIM: usize = 256;

/// Sizes of one attention call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) b: usize,
    pub(crate) h: usize,
    pub(crate) hkv: usize,
    pub(crate) sq: usize,
    pub(crate) sk: usize,
    pub(crate) d: usize,
    pub(crate) dv: usize,
}

/// Which keys each query may see, without the additive mask's values (the GPU kernels take
/// none and refuse it).
#[cfg_attr(
    not(any(feature = "cuda", all(feature = "metal", target_os = "macos"))),
    allow(dead_code)
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MaskKind {
    None,
    /// Queries are the last `Sq` of `Sk` positions.
    Causal,
    Additive,
}

/// Fused attention: sizes, score scale and mask kind.
#[cfg_attr(
    not(any(feature = "cuda", all(feature = "metal", target_os = "macos"))),
    allow(dead_code)
)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionParams {
    pub(crate) dims: Dims,
    pub(crate) scale: f32,
    pub(crate) mask: MaskKind,
}

/// ROI Align's settings (the public `RoiAlign`, with the output size spelled out).
#[cfg_attr(
    not(any(feature = "cuda", all(feature = "metal", target_os = "macos"))),
    allow(dead_code)
)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RoiAlignParams {
    /// Output bins per box.
    pub(crate) pooled_h: usize,
    pub(crate) pooled_w: usize,
    pub(crate) spatial_scale: f32,
    pub(crate) sampling_ratio: i32,
    pub(crate) aligned: bool,
}

/// ROI Align's backward pass: the forward settings and the `(N, H, W)` of the features whose
/// gradient is computed.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RoiAlignBackwardParams {
    pub(crate) roi: RoiAlignParams,
    pub(crate) batch: usize,
    pub(crate) height: usize,
    pub(crate) width: usize,
}

/// What the fused kernel writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MaskOutput {
    /// `u8` masks, 1 where the upsampled logit is > 0.
    Masks,
    /// f32 probabilities (sigmoid of the upsampled logit).
    Probs,
    /// f32 upsampled logits.
    Logits,
}

/// Fused mask upsampling: the three sizes of the public `MaskResize`, each
/// `(height, width)`, and what to write.
#[cfg_attr(
    not(any(feature = "cuda", all(feature = "metal", target_os = "macos"))),
    allow(dead_code)
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UpsampleParams {
    pub(crate) padded: (usize, usize),
    pub(crate) valid: (usize, usize),
    pub(crate) orig: (usize, usize),
    pub(crate) output: MaskOutput,
}

/// `(masks, h, w, output shape)` for logits of shape `(N, h, w)` or `(B, M, h, w)` upsampled
/// to `orig`.
pub(crate) fn mask_out_shape(
    dims: &[usize],
    orig: (usize, usize),
) -> candle_core::Result<(usize, usize, usize, Shape)> {
    let rank = dims.len();
    if !(rank == 3 || rank == 4) {
        candle_core::bail!("upsample_masks: logits {dims:?}: need (N, h, w) or (B, M, h, w)")
    }
    let (h, w) = (dims[rank - 2], dims[rank - 1]);
    let n: usize = dims[..rank - 2].iter().product();
    let mut out = dims[..rank - 2].to_vec();
    out.extend([orig.0, orig.1]);
    Ok((n, h, w, Shape::from(out)))
}
