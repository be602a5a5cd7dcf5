//! The training losses and their targets: mask BCE + Dice on the decoder's grid, the
//! granularity cross-entropy, the no-target BCE, region selection (BCE against proposals
//! matching the target, and the competing-softmax cross-entropy), and the auxiliary
//! attribute and position losses on LLM states.

use candle_core::{DType, Tensor, D};

use super::batch::BatchForward;
use super::{RegionAttribute, TrainQuery, POSITION_FREQS};
use crate::error::Result;
use crate::model::nn::Linear;
use crate::model::unires::region::box_encoding;
use crate::pipeline::preprocess::HiresGeometry;
use crate::types::{BoxXyxy, Granularity, Mask, Proposals};

/// The label of the attribute box of kind `part` that overlaps `b` most, if its IoU is at
/// least `min_iou`.
pub(crate) fn best_attribute(
    attrs: &[RegionAttribute],
    b: &BoxXyxy,
    part: bool,
    min_iou: f32,
) -> Option<u32> {
    attrs
        .iter()
        .filter(|a| a.part == part)
        .map(|a| (a.bbox.iou(b), a.label))
        .filter(|(iou, _)| *iou >= min_iou)
        .max_by(|x, y| x.0.total_cmp(&y.0))
        .map(|(_, l)| l)
}

/// Attribute label of each proposal (objects, then parts): the label of the best-matching
/// attribute box of the same kind with IoU ≥ 0.5.
pub fn attribute_labels(p: &Proposals, attrs: &[RegionAttribute]) -> Vec<Option<u32>> {
    p.objects
        .iter()
        .map(|b| best_attribute(attrs, b, false, 0.5))
        .chain(p.parts.iter().map(|b| best_attribute(attrs, b, true, 0.5)))
        .collect()
}

/// `mean(max(x, 0) − x·t + log(1 + e^{−|x|}))`, numerically stable BCE with logits.
pub fn bce_with_logits(x: &Tensor, t: &Tensor) -> Result<Tensor> {
    let a = x.relu()?;
    let b = (x * t)?;
    let c = ((x.abs()?.neg()?.exp()? + 1.0)?).log()?;
    Ok(((a - b)? + c)?.mean_all()?)
}

/// Weighted BCE: `Σ w·bce / Σ w` (for masked entries).
pub(crate) fn bce_masked(x: &Tensor, t: &Tensor, w: &Tensor) -> Result<Tensor> {
    let a = x.relu()?;
    let b = (x * t)?;
    let c = ((x.abs()?.neg()?.exp()? + 1.0)?).log()?;
    let l = (((a - b)? + c)? * w)?.sum_all()?;
    let n = (w.sum_all()? + 1e-6)?;
    Ok(l.broadcast_div(&n)?)
}

/// Mean over the batch of `1 − (2 Σ p t + 1) / (Σ p + Σ t + 1)`, `p = sigmoid(x)`; inputs `(N, h, w)`.
pub fn dice_loss(x: &Tensor, t: &Tensor) -> Result<Tensor> {
    let p = candle_nn::ops::sigmoid(x)?.flatten_from(1)?;
    let t = t.flatten_from(1)?;
    let inter = (&p * &t)?.sum(D::Minus1)?;
    let denom = ((p.sum(D::Minus1)? + t.sum(D::Minus1)?)? + 1.0)?;
    let dice = ((inter * 2.0)? + 1.0)?.div(&denom)?;
    Ok((1.0 - dice)?.mean_all()?)
}

/// A ground-truth mask as soft targets on the decoder's grid: the `padded` frame at
/// `1/stride` resolution, each cell the fraction of its 4×4 sub-samples inside the mask.
pub fn mask_to_grid(mask: &Mask, g: &HiresGeometry, stride: usize) -> Vec<f32> {
    let (gh, gw) = (g.padded_h / stride, g.padded_w / stride);
    let (sx, sy) = g.scale();
    let sub = 4usize;
    let mut out = vec![0f32; gh * gw];
    for cy in 0..gh {
        for cx in 0..gw {
            let mut hit = 0u32;
            for j in 0..sub {
                let py = (cy * stride) as f32 + (j as f32 + 0.5) * stride as f32 / sub as f32;
                if py >= g.resized_h as f32 {
                    continue;
                }
                let oy = ((py / sy) as usize).min(mask.height().saturating_sub(1));
                for i in 0..sub {
                    let px = (cx * stride) as f32 + (i as f32 + 0.5) * stride as f32 / sub as f32;
                    if px >= g.resized_w as f32 {
                        continue;
                    }
                    let ox = ((px / sx) as usize).min(mask.width().saturating_sub(1));
                    if mask.get(oy, ox) == Some(true) {
                        hit += 1;
                    }
                }
            }
            out[cy * gw + cx] = hit as f32 / (sub * sub) as f32;
        }
    }
    out
}

/// Region-selection labels for one query: 1 for proposals (objects for object/multi queries,
/// parts for part queries) with IoU ≥ 0.5 to a target box.
pub fn select_labels(p: &Proposals, q: &TrainQuery) -> Vec<f32> {
    let hit = |b: &BoxXyxy| q.target_boxes.iter().any(|t| t.iou(b) >= 0.5);
    let part = q.granularity == Granularity::Part;
    let positive = q.target.is_some();
    p.objects
        .iter()
        .map(|b| f32::from(u8::from(positive && !part && hit(b))))
        .chain(
            p.parts
                .iter()
                .map(|b| f32::from(u8::from(positive && part && hit(b)))),
        )
        .collect()
}

// ------------------------------------------------------------------ the loss terms of a batch

fn zero(f: &BatchForward<'_>) -> Result<Tensor> {
    Ok(Tensor::new(0f32, f.gran_logits.device())?)
}

/// Cross-entropy over the three granularity tokens.
pub(crate) fn granularity(f: &BatchForward<'_>) -> Result<Tensor> {
    let t: Vec<u32> = f
        .queries
        .iter()
        .map(|q| q.granularity.index().unwrap_or(1) as u32)
        .collect();
    let t = Tensor::new(t.as_slice(), f.gran_logits.device())?;
    Ok(candle_nn::loss::cross_entropy(&f.gran_logits, &t)?)
}

/// BCE of the no-target head.
pub(crate) fn target(f: &BatchForward<'_>) -> Result<Tensor> {
    let has: Vec<f32> = f
        .queries
        .iter()
        .map(|q| f32::from(u8::from(q.target.is_some())))
        .collect();
    bce_with_logits(
        &f.out.target_logit.to_dtype(DType::F32)?,
        &Tensor::new(has.as_slice(), f.gran_logits.device())?,
    )
}

/// BCE of the region selection against proposals matching the target (padding excluded).
pub(crate) fn select(f: &BatchForward<'_>) -> Result<Tensor> {
    if f.rows.width()? == 0 {
        return zero(f);
    }
    bce_masked(
        &f.out.select_logits.to_dtype(DType::F32)?,
        &f.sel_labels,
        &f.rows.valid,
    )
}

/// Competing proposals (part and object queries): −log of the softmax mass on the proposals
/// that match the target, over the queries that have such a proposal.
pub(crate) fn rank(f: &BatchForward<'_>) -> Result<Tensor> {
    if f.rows.width()? == 0 {
        return zero(f);
    }
    let pos = (&f.sel_labels * &f.rows.compete)?;
    let rows: Vec<f32> = pos.max(1)?.to_vec1()?;
    if !rows.iter().any(|&x| x > 0.0) {
        return zero(f);
    }
    // On competing rows the head's selection weights are the softmax itself.
    let p = f.out.select_weights.to_dtype(DType::F32)?;
    let mass = ((p * &pos)?.sum(1)? + 1e-6)?.log()?.neg()?;
    let nq = rows.len();
    let n = rows.iter().filter(|&&x| x > 0.0).count() as f64;
    let has = Tensor::from_vec(rows, nq, f.gran_logits.device())?;
    Ok(((mass * has)?.sum_all()? / n)?)
}

/// Per-pixel BCE and Dice on the mask of the ground-truth granularity token, over the
/// queries that have a target.
pub(crate) fn mask(f: &BatchForward<'_>) -> Result<(Tensor, Tensor)> {
    let dev = f.gran_logits.device();
    let (nq, _, mh, mw) = f.out.masks.dims4()?;
    let geos = &f.enc.geometries;
    let stride = geos.first().map_or(1, |g| g.padded_h / mh.max(1));
    let mut pos_idx = Vec::new();
    let mut targets = Vec::new();
    for (i, q) in f.queries.iter().enumerate() {
        if let Some(m) = &q.target {
            let gi = q.granularity.index().unwrap_or(1);
            pos_idx.push((i * 3 + gi) as u32);
            targets.extend(mask_to_grid(m, &geos[f.query_scene[i]], stride));
        }
    }
    if pos_idx.is_empty() {
        return Ok((zero(f)?, zero(f)?));
    }
    let np = pos_idx.len();
    let logits = f
        .out
        .masks
        .reshape((nq * 3, mh, mw))?
        .index_select(&Tensor::new(pos_idx.as_slice(), dev)?, 0)?
        .to_dtype(DType::F32)?;
    let t = Tensor::from_vec(targets, (np, mh, mw), dev)?;
    Ok((bce_with_logits(&logits, &t)?, dice_loss(&logits, &t)?))
}

/// Auxiliary attribute cross-entropy: region states learn the attribute of the ground-truth
/// box they match, and the `[SEG]` state of a single-target query its target's, with the
/// same head, so that both sides of the selection share one space.
pub(crate) fn attributes(f: &BatchForward<'_>, head: &Linear) -> Result<Tensor> {
    let r_max = f.rows.width()?;
    let nq = f.queries.len();
    if r_max == 0 {
        return zero(f);
    }
    let mut lab = vec![0u32; nq * r_max];
    let mut m = vec![0f32; nq * r_max];
    // Once per scene: every query of a scene shares its proposals.
    let per_scene: Vec<Vec<Option<u32>>> = f
        .scenes
        .iter()
        .zip(&f.enc.proposals)
        .map(|(s, p)| attribute_labels(p, &s.attributes))
        .collect();
    for i in 0..nq {
        for (j, l) in per_scene[f.query_scene[i]].iter().enumerate().take(r_max) {
            if let Some(l) = *l {
                lab[i * r_max + j] = l;
                m[i * r_max + j] = 1.0;
            }
        }
    }
    let mut seg_lab = vec![0u32; nq];
    let mut seg_m = vec![0f32; nq];
    for (i, q) in f.queries.iter().enumerate() {
        if let (Some(_), [tb]) = (&q.target, q.target_boxes.as_slice()) {
            let part = q.granularity == Granularity::Part;
            let attrs = &f.scenes[f.query_scene[i]].attributes;
            if let Some(l) = best_attribute(attrs, tb, part, 0.9) {
                seg_lab[i] = l;
                seg_m[i] = 1.0;
            }
        }
    }
    lab.extend(seg_lab);
    m.extend(seg_m);
    let n_all = nq * r_max + nq;
    if !m.iter().any(|&x| x > 0.0) {
        return zero(f);
    }
    let dev = f.gran_logits.device();
    let h = f.seg_hidden.dim(1)?;
    let states = Tensor::cat(
        &[
            f.rows.hidden.reshape((nq * r_max, h))?,
            f.seg_hidden.clone(),
        ],
        0,
    )?;
    let logits = head.forward(&states)?;
    let lsm = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let picked = lsm
        .gather(&Tensor::from_vec(lab, (n_all, 1), dev)?, 1)?
        .squeeze(1)?;
    let m = Tensor::from_vec(m, n_all, dev)?;
    Ok(((picked * &m)?.sum_all()?.neg()? / (m.sum_all()?.to_scalar::<f32>()? as f64))?)
}

/// Auxiliary position loss: region states regress the box encoding of their own box; the
/// `[SEG]` state of a single-target query regresses its target's box, with the same head,
/// so that the selection can match a position that the expression resolved (left,
/// biggest, …).
pub(crate) fn position(f: &BatchForward<'_>, head: &Linear, dtype: DType) -> Result<Tensor> {
    let r_max = f.rows.width()?;
    let nq = f.queries.len();
    if r_max == 0 {
        return zero(f);
    }
    let dev = f.gran_logits.device();
    let h = f.seg_hidden.dim(1)?;
    let mut rows = Vec::new();
    let mut seg_boxes = Vec::new();
    for (i, q) in f.queries.iter().enumerate() {
        if let (Some(_), [tb]) = (&q.target, q.target_boxes.as_slice()) {
            let g = &f.enc.geometries[f.query_scene[i]];
            let (sx, sy) = g.scale();
            let (pw, ph) = (g.padded_w as f32, g.padded_h as f32);
            rows.push(i as u32);
            seg_boxes.extend_from_slice(&[
                tb.x1 * sx / pw,
                tb.y1 * sy / ph,
                tb.x2 * sx / pw,
                tb.y2 * sy / ph,
            ]);
        }
    }
    let e = 8 * POSITION_FREQS;
    let region_pred = head.forward(&f.rows.hidden.reshape((nq * r_max, h))?)?;
    let region_t = box_encoding(&f.rows.boxes.reshape((nq * r_max, 4))?, POSITION_FREQS)?;
    let valid_flat = f.rows.valid.reshape((nq * r_max, 1))?;
    let d = (region_pred - region_t)?.to_dtype(DType::F32)?.sqr()?;
    let mut num = d.broadcast_mul(&valid_flat)?.sum_all()?;
    let mut den = valid_flat.sum_all()?.to_scalar::<f32>()? as f64 * e as f64;
    if !rows.is_empty() {
        let k = rows.len();
        let sp = head.forward(
            &f.seg_hidden
                .index_select(&Tensor::new(rows.as_slice(), dev)?, 0)?,
        )?;
        let st = box_encoding(
            &Tensor::from_vec(seg_boxes, (k, 4), dev)?.to_dtype(dtype)?,
            POSITION_FREQS,
        )?;
        num = (num + (sp - st)?.to_dtype(DType::F32)?.sqr()?.sum_all()?)?;
        den += (k * e) as f64;
    }
    Ok((num / den.max(1.0))?)
}
