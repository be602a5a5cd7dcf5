//! The last stage of the UniRES++ path: mask logits to a full-resolution mask, and a union
//! mask to instances.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::ops::upsample::{upsample_masks, MaskResize};
use crate::types::{
    connected_components, Granularity, Instance, Mask, Proposals, RegionKind, RegionWeight,
};

/// `(1, h, w)` f32 logits → the thresholded mask at the original image size (fused
/// upsample, crop to the valid area, resize, threshold at 0).
pub fn full_mask(logits: &Tensor, resize: &MaskResize) -> Result<Mask> {
    let mut masks = upsample_masks(logits, resize)?;
    let data = masks
        .pop()
        .ok_or_else(|| Error::shape("segment", "no mask produced"))?;
    let (h, w) = resize.orig;
    Mask::from_vec(h, w, data)
}

/// Splits a union mask into instances: for multi-object queries, the mask inside each
/// object proposal whose selection probability `select[i]` reaches `instance_threshold`
/// (connected components when none does); the whole mask otherwise.
pub fn instances(
    mask: &Mask,
    g: Granularity,
    score: f32,
    p: &Proposals,
    select: &[f32],
    instance_threshold: f32,
) -> Vec<Instance> {
    let whole = |m: &Mask, s: f32| {
        m.bbox().map(|b| Instance {
            mask: m.clone(),
            bbox: b,
            score: s,
        })
    };
    if mask.is_empty() {
        return Vec::new();
    }
    if g != Granularity::MultiObject {
        return whole(mask, score).into_iter().collect();
    }
    let mut out: Vec<Instance> = p
        .objects
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            let s = select.get(i).copied().unwrap_or(0.0);
            if s < instance_threshold {
                return None;
            }
            whole(&mask.within_box(b), s)
        })
        .collect();
    if out.is_empty() {
        out = connected_components(mask)
            .into_iter()
            .filter_map(|m| whole(&m, score))
            .collect();
    }
    out
}

/// Pairs the proposals (objects, then parts) with their selection weights `w`.
pub fn region_weights(p: &Proposals, w: &[f32]) -> Vec<RegionWeight> {
    let kinds = p
        .objects
        .iter()
        .map(|b| (b, RegionKind::Object))
        .chain(p.parts.iter().map(|b| (b, RegionKind::Part)));
    kinds
        .zip(w)
        .map(|((b, kind), &weight)| RegionWeight {
            bbox: *b,
            kind,
            weight,
        })
        .collect()
}
