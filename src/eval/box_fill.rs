//! Box-fill baselines for the synthetic evaluation: what a model would score if its mask were
//! only the union of the proposal boxes it picks. Set beside the model's own masks, they show
//! what the mask decoder adds over the boxes.
//!
//! * [`model_selection`]: the boxes the model itself weighted most (the arg-max proposal of
//!   the asked kind for part and object queries; every object proposal with weight ≥ 0.5 for
//!   multi-object queries, or the arg-max when none reaches it). No-target decisions are the
//!   model's (its score against the threshold).
//! * [`oracle_selection`]: the ground-truth choice — for each target, the proposal of its kind
//!   that overlaps it best, when that IoU is at least 0.5 (what the selection loss trains
//!   toward). No-target samples are predicted empty, and a target the proposals missed scores
//!   0: the oracle is bounded by the proposals, not by a model.

use crate::synthetic::Sample;
use crate::types::{BoxXyxy, Granularity, Mask, Proposals, RegionKind, RegionWeight};

/// Minimum IoU between a proposal and a target box for the oracle to pick it.
pub const ORACLE_IOU: f32 = 0.5;

/// Weight at which a multi-object query's proposal counts as selected.
pub const MULTI_SELECT: f32 = 0.5;

/// The kind of proposal a granularity's referent is.
fn kind_of(g: Granularity) -> RegionKind {
    match g {
        Granularity::Part => RegionKind::Part,
        _ => RegionKind::Object,
    }
}

/// The boxes the model selected for a query of granularity `g` (see the module docs).
pub fn model_selection(regions: &[RegionWeight], g: Granularity) -> Vec<BoxXyxy> {
    let kind = kind_of(g);
    let candidates: Vec<&RegionWeight> = regions.iter().filter(|r| r.kind == kind).collect();
    let best = candidates
        .iter()
        .copied()
        .max_by(|a, b| a.weight.total_cmp(&b.weight))
        .map(|r| r.bbox);
    if g == Granularity::MultiObject {
        let chosen: Vec<BoxXyxy> = candidates
            .iter()
            .filter(|r| r.weight >= MULTI_SELECT)
            .map(|r| r.bbox)
            .collect();
        if !chosen.is_empty() {
            return chosen;
        }
    }
    best.into_iter().collect()
}

/// The ground-truth selection among `proposals` for `sample` (see the module docs).
pub fn oracle_selection(proposals: &Proposals, sample: &Sample) -> Vec<BoxXyxy> {
    let list = match kind_of(sample.granularity) {
        RegionKind::Part => &proposals.parts,
        RegionKind::Object => &proposals.objects,
    };
    let mut out: Vec<BoxXyxy> = Vec::new();
    for t in &sample.targets {
        let best = list
            .iter()
            .map(|b| (b, b.iou(&t.bbox)))
            .filter(|(_, iou)| *iou >= ORACLE_IOU)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((b, _)) = best {
            if !out.contains(b) {
                out.push(*b);
            }
        }
    }
    out
}

/// A `height × width` mask of the pixels whose centres lie inside any of `boxes`.
pub fn fill_boxes(boxes: &[BoxXyxy], height: usize, width: usize) -> Mask {
    let mut data = vec![0u8; height * width];
    for b in boxes {
        // Pixel (x, y) covers [x, x + 1); its centre x + 0.5 is inside when x1 ≤ x + 0.5 < x2.
        let lo = |v: f32| (v - 0.5).ceil().max(0.0) as usize;
        let hi = |v: f32, n: usize| ((v - 0.5).ceil().max(0.0) as usize).min(n);
        let (x0, x1) = (lo(b.x1), hi(b.x2, width));
        let (y0, y1) = (lo(b.y1), hi(b.y2, height));
        for y in y0..y1 {
            let row = &mut data[y * width..(y + 1) * width];
            for v in row.iter_mut().take(x1).skip(x0) {
                *v = 1;
            }
        }
    }
    // The length is `height · width` by construction.
    Mask::from_vec(height, width, data).unwrap_or_else(|_| Mask::zeros(height, width))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(x1: f32, kind: RegionKind, weight: f32) -> RegionWeight {
        RegionWeight {
            bbox: BoxXyxy::new(x1, 0.0, x1 + 4.0, 4.0),
            kind,
            weight,
        }
    }

    #[test]
    fn fill_counts_pixel_centres() {
        let m = fill_boxes(&[BoxXyxy::new(1.0, 2.0, 4.0, 3.0)], 5, 6);
        assert_eq!(m.area(), 3);
        assert_eq!(m.get(2, 1), Some(true));
        assert_eq!(m.get(2, 4), Some(false));
        // Fractional corners: centres 0.5 and 1.5 are inside [0.4, 1.6).
        assert_eq!(
            fill_boxes(&[BoxXyxy::new(0.4, 0.4, 1.6, 1.6)], 3, 3).area(),
            4
        );
        // Out of the image: clipped, never a panic.
        assert_eq!(
            fill_boxes(&[BoxXyxy::new(4.0, 4.0, 99.0, 99.0)], 5, 6).area(),
            2
        );
    }

    #[test]
    fn model_selection_follows_the_weights_of_the_asked_kind() {
        let r = [
            rw(0.0, RegionKind::Object, 0.2),
            rw(10.0, RegionKind::Object, 0.7),
            rw(20.0, RegionKind::Object, 0.6),
            rw(30.0, RegionKind::Part, 0.9),
        ];
        let x1 = |v: Vec<BoxXyxy>| v.iter().map(|b| b.x1).collect::<Vec<_>>();
        assert_eq!(x1(model_selection(&r, Granularity::Object)), vec![10.0]);
        assert_eq!(x1(model_selection(&r, Granularity::Part)), vec![30.0]);
        assert_eq!(
            x1(model_selection(&r, Granularity::MultiObject)),
            vec![10.0, 20.0]
        );
        let low = [
            rw(0.0, RegionKind::Object, 0.1),
            rw(9.0, RegionKind::Object, 0.3),
        ];
        assert_eq!(
            x1(model_selection(&low, Granularity::MultiObject)),
            vec![9.0]
        );
        assert!(model_selection(&[], Granularity::Object).is_empty());
    }
}
