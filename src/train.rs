//! Training the graph with candle autograd (AdamW): batching of scenes and queries, the
//! losses, and the optimisation loop used by `examples/train_synthetic.rs`.
//!
//! One step takes `B` scenes with `Q` queries each. Images are encoded once per scene; the
//! LLM sees `B·Q` right-padded sequences (prompt + granularity token + `[SEG]`, teacher
//! forcing — causal attention makes right padding harmless); the head runs on all queries.
//! Losses: per-pixel BCE + Dice on the mask of the ground-truth granularity token (positive
//! queries), cross-entropy over the three granularity tokens, BCE of the no-target head,
//! BCE of region selection against proposals matching the target (IoU ≥ 0.5), and for part
//! and object queries the cross-entropy of the competing (softmax) selection; optional
//! auxiliary attribute and position losses on the LLM states ([`AuxHeads`]).

use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use image::RgbImage;

use crate::config::UniResConfig;
use crate::error::{Error, Result};
use crate::model::llm::KvCache;
use crate::model::prompt::PromptBuilder;
use crate::model::unires::UniRes;
use crate::preprocess::{preprocess_hires, preprocess_lowres, HiresGeometry};
use crate::types::{BoxXyxy, Granularity, Mask, Proposals};

/// One training query.
#[derive(Debug, Clone)]
pub struct TrainQuery {
    pub expression: String,
    /// The concrete granularity the expression asks for (also for no-target queries).
    pub granularity: Granularity,
    /// Ground-truth union mask at the image's resolution; `None` = no target.
    pub target: Option<Mask>,
    /// Boxes of the target instances (objects, or the part), original coordinates.
    pub target_boxes: Vec<BoxXyxy>,
}

/// A ground-truth box with an attribute class (e.g. class and colour of an object), for the
/// auxiliary region-attribute loss: proposals matching it (IoU ≥ 0.5, same kind) learn to
/// predict `label` from their last-layer LLM state.
#[derive(Debug, Clone)]
pub struct RegionAttribute {
    pub bbox: BoxXyxy,
    /// A part box (matched against part proposals) rather than an object box.
    pub part: bool,
    pub label: u32,
}

impl From<crate::eval::synthetic::Sample> for TrainQuery {
    fn from(s: crate::eval::synthetic::Sample) -> Self {
        Self {
            target_boxes: s.targets.iter().map(|t| t.bbox).collect(),
            expression: s.expression,
            granularity: s.granularity,
            target: s.mask,
        }
    }
}

/// One training scene.
#[derive(Debug, Clone)]
pub struct TrainScene {
    pub image: RgbImage,
    pub proposals: Proposals,
    pub queries: Vec<TrainQuery>,
    /// Ground-truth attributes for the auxiliary loss (empty: none).
    pub attributes: Vec<RegionAttribute>,
}

/// The label of the attribute box of kind `part` that overlaps `b` most, if its IoU is at
/// least `min_iou`.
fn best_attribute(attrs: &[RegionAttribute], b: &BoxXyxy, part: bool, min_iou: f32) -> Option<u32> {
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

fn one() -> f64 {
    1.0
}

/// Loss weights.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct LossWeights {
    pub mask_bce: f64,
    pub mask_dice: f64,
    pub granularity: f64,
    pub target: f64,
    pub select: f64,
    /// Auxiliary region-attribute cross-entropy (needs an attribute head and
    /// [`TrainScene::attributes`]).
    #[serde(default)]
    pub attributes: f64,
    /// Auxiliary position loss (needs a position head): the sin/cos encoding of each
    /// region's box, and of the target box of single-target queries from the `[SEG]` state,
    /// regressed by one shared head (squared error).
    #[serde(default)]
    pub position: f64,
    /// Cross-entropy of the competing selection (part and object queries, when the model
    /// has `region.single_target_softmax`): the softmax mass on the matching proposals.
    #[serde(default = "one")]
    pub rank: f64,
    /// Teacher forcing of the box prompts: weight α of the ground-truth selection in the
    /// selection weights the mask decoder sees (0 = the model's own, as at inference).
    #[serde(default)]
    pub teacher_forcing: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self {
            mask_bce: 1.0,
            mask_dice: 1.0,
            granularity: 0.5,
            target: 0.5,
            select: 1.0,
            attributes: 0.0,
            position: 0.0,
            rank: 1.0,
            teacher_forcing: 0.0,
        }
    }
}

/// Scalar loss values of one step.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LossParts {
    pub total: f32,
    pub mask_bce: f32,
    pub mask_dice: f32,
    pub granularity: f32,
    pub target: f32,
    pub select: f32,
    pub attributes: f32,
    pub position: f32,
    pub rank: f32,
}

/// `mean(max(x, 0) − x·t + log(1 + e^{−|x|}))`, numerically stable BCE with logits.
pub fn bce_with_logits(x: &Tensor, t: &Tensor) -> Result<Tensor> {
    let a = x.relu()?;
    let b = (x * t)?;
    let c = ((x.abs()?.neg()?.exp()? + 1.0)?).log()?;
    Ok(((a - b)? + c)?.mean_all()?)
}

/// Weighted BCE: `Σ w·bce / Σ w` (for masked entries).
fn bce_masked(x: &Tensor, t: &Tensor, w: &Tensor) -> Result<Tensor> {
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
                    if mask.get(oy, ox) {
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

/// Frequencies of the box encoding that the position loss regresses (π, 2π, 4π: coarse
/// enough to be read from a state, fine enough to tell the boxes of one scene apart).
pub const POSITION_FREQS: usize = 3;

/// Training-only heads on last-layer LLM states (variables under `aux.`: not part of the
/// checkpoint; [`Trainer::save_aux`] writes them separately).
#[derive(Debug, Clone, Default)]
pub struct AuxHeads {
    /// Region and `[SEG]` states → attribute logits (see [`RegionAttribute`]).
    pub attributes: Option<crate::model::nn::Linear>,
    /// Region and `[SEG]` states → the box encoding of their box (the target's for `[SEG]`).
    pub position: Option<crate::model::nn::Linear>,
}

/// Computes the training loss of one batch, with the auxiliary losses of the `aux` heads
/// that are present and weighted.
pub fn batch_loss(
    model: &UniRes,
    scenes: &[TrainScene],
    w: &LossWeights,
    aux: &AuxHeads,
) -> Result<(Tensor, LossParts)> {
    let attribute_head = aux.attributes.as_ref();
    let cfg = model.config().clone();
    let dev = model.device().clone();
    let dtype = model.dtype();
    if scenes.is_empty() {
        return Err(Error::shape("batch_loss", "empty batch"));
    }
    // ---------------------------------------------------------------- images
    let mut lows = Vec::new();
    let mut highs = Vec::new();
    let mut geos = Vec::new();
    let mut props = Vec::new();
    for s in scenes {
        let (iw, ih) = s.image.dimensions();
        lows.push(preprocess_lowres(
            &s.image,
            cfg.vision.clip.image_size,
            cfg.image_mean,
            cfg.image_std,
            &dev,
        )?);
        let (h, g) = preprocess_hires(
            &s.image,
            cfg.hires.image_size,
            cfg.hires.pad,
            cfg.image_mean,
            cfg.image_std,
            &dev,
        )?;
        highs.push(h);
        geos.push(g);
        props.push(model.cap_proposals(&s.proposals, iw, ih)?);
    }
    let image_tokens = model.image_tokens(&Tensor::cat(&lows, 0)?)?; // (B, N, H)
    let feats = model.hires_features(&Tensor::cat(&highs, 0)?)?;
    let (dense, skips) = model.dense_features(&feats)?;

    let mut rois = Vec::new();
    let mut kinds = Vec::new();
    let mut norm = Vec::new();
    let mut offsets = Vec::new();
    for (b, (p, g)) in props.iter().zip(&geos).enumerate() {
        offsets.push(kinds.len());
        let (sx, sy) = g.scale();
        let (pw, ph) = (g.padded_w as f32, g.padded_h as f32);
        for (kind, boxes) in [(0u32, &p.objects), (1u32, &p.parts)] {
            for bx in boxes {
                let (x1, y1, x2, y2) = (bx.x1 * sx, bx.y1 * sy, bx.x2 * sx, bx.y2 * sy);
                rois.extend_from_slice(&[b as f32, x1, y1, x2, y2]);
                kinds.push(kind);
                norm.extend_from_slice(&[x1 / pw, y1 / ph, x2 / pw, y2 / ph]);
            }
        }
    }
    let k_total = kinds.len();
    let region_boxes_all = Tensor::from_vec(norm.clone(), (k_total, 4), &dev)?.to_dtype(dtype)?;
    let region_tokens = if k_total > 0 {
        model.region_tokens(
            &feats,
            &Tensor::from_vec(rois, (k_total, 5), &dev)?,
            &Tensor::from_vec(kinds, k_total, &dev)?,
            &region_boxes_all,
        )?
    } else {
        Tensor::zeros((0, cfg.llm.hidden_size), dtype, &dev)?
    };

    // ---------------------------------------------------------------- sequences
    let (gran_ids, seg_id) = model.answer_ids();
    let n_img = image_tokens.dim(1)?;
    let mut seqs = Vec::new();
    let mut lens = Vec::new();
    let mut region_pos: Vec<Vec<usize>> = Vec::new();
    let mut query_scene = Vec::new();
    let mut queries: Vec<&TrainQuery> = Vec::new();
    for (b, s) in scenes.iter().enumerate() {
        let p = &props[b];
        let kb = p.objects.len() + p.parts.len();
        let regions = region_tokens.narrow(0, offsets[b], kb)?;
        let img = image_tokens.i(b)?;
        for q in &s.queries {
            let gi = q
                .granularity
                .index()
                .ok_or_else(|| Error::shape("batch_loss", "query granularity must be concrete"))?;
            let prompt =
                model
                    .prompt_builder()
                    .build(&q.expression, p.objects.len(), p.parts.len())?;
            let emb = model.prompt_embeddings(&prompt, &img, &regions)?;
            let ans = Tensor::new(&[gran_ids[gi], seg_id], &dev)?.unsqueeze(0)?;
            let ans = model.llm.embed(&ans)?.squeeze(0)?;
            let len = emb.dim(0)?;
            seqs.push(Tensor::cat(&[emb, ans], 0)?);
            lens.push(len);
            region_pos.push(
                prompt
                    .objects_at
                    .iter()
                    .chain(prompt.parts_at.iter())
                    .map(|&i| prompt.expanded_pos(i, n_img))
                    .collect(),
            );
            query_scene.push(b);
            queries.push(q);
        }
    }
    let nq = seqs.len();
    if nq == 0 {
        return Err(Error::shape("batch_loss", "no queries"));
    }
    let s_max = seqs
        .iter()
        .map(|t| t.dim(0))
        .collect::<candle_core::Result<Vec<_>>>()?
        .into_iter()
        .max()
        .unwrap_or(0);
    let h = cfg.llm.hidden_size;
    let padded = seqs
        .iter()
        .map(|t| {
            let n = t.dim(0)?;
            if n < s_max {
                Ok(Tensor::cat(
                    &[t.clone(), Tensor::zeros((s_max - n, h), dtype, &dev)?],
                    0,
                )?)
            } else {
                Ok(t.clone())
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let x = Tensor::stack(&padded, 0)?; // (Q, S, H)
    let mut cache = KvCache::new(cfg.llm.num_hidden_layers);
    let hidden = model.llm.forward(&x, &mut cache)?;
    let flat = hidden.reshape((nq * s_max, h))?;
    let pick = |pos: Vec<u32>| -> Result<Tensor> {
        Ok(flat.index_select(&Tensor::new(pos.as_slice(), &dev)?, 0)?)
    };
    let last = pick((0..nq).map(|i| (i * s_max + lens[i] - 1) as u32).collect())?;
    let seg_hidden = pick((0..nq).map(|i| (i * s_max + lens[i] + 1) as u32).collect())?;
    let gran_logits = model
        .llm
        .logits_for(&last, &gran_ids)?
        .to_dtype(DType::F32)?; // (Q, 3)

    let r_max = region_pos.iter().map(|v| v.len()).max().unwrap_or(0);
    let mut rp = Vec::with_capacity(nq * r_max);
    let mut valid = Vec::with_capacity(nq * r_max);
    let mut rboxes = Vec::with_capacity(nq * r_max * 4);
    let mut sel_t = Vec::with_capacity(nq * r_max);
    let mut compete = Vec::with_capacity(nq * r_max);
    for (i, pos) in region_pos.iter().enumerate() {
        let b = query_scene[i];
        let labels = select_labels(&props[b], queries[i]);
        let row = model.compete_row(
            queries[i].granularity,
            props[b].objects.len(),
            props[b].parts.len(),
        );
        for j in 0..r_max {
            compete.push(row.get(j).copied().unwrap_or(0.0));
            if j < pos.len() {
                rp.push((i * s_max + pos[j]) as u32);
                valid.push(1f32);
                let o = (offsets[b] + j) * 4;
                rboxes.extend_from_slice(&norm[o..o + 4]);
                sel_t.push(labels[j]);
            } else {
                rp.push((i * s_max) as u32);
                valid.push(0f32);
                rboxes.extend_from_slice(&[0.0, 0.0, 0.0, 0.0]);
                sel_t.push(0.0);
            }
        }
    }
    let region_hidden = if r_max > 0 {
        pick(rp)?.reshape((nq, r_max, h))?
    } else {
        Tensor::zeros((nq, 0, h), dtype, &dev)?
    };
    let valid_t = Tensor::from_vec(valid, (nq, r_max), &dev)?;
    let rboxes_t = Tensor::from_vec(rboxes, (nq, r_max, 4), &dev)?.to_dtype(dtype)?;
    let qidx = Tensor::new(
        query_scene
            .iter()
            .map(|&b| b as u32)
            .collect::<Vec<_>>()
            .as_slice(),
        &dev,
    )?;
    let dense_q = dense.index_select(&qidx, 0)?;
    let s1 = skips.0.index_select(&qidx, 0)?;
    let s2 = skips.1.index_select(&qidx, 0)?;
    let sel_labels = Tensor::from_vec(sel_t, (nq, r_max), &dev)?;
    let compete_t = Tensor::from_vec(compete, (nq, r_max), &dev)?;
    let forced = if w.teacher_forcing > 0.0 && r_max > 0 {
        Some((&sel_labels, w.teacher_forcing))
    } else {
        None
    };
    let out = model.head(
        &seg_hidden,
        &region_hidden,
        &valid_t.to_dtype(dtype)?,
        &rboxes_t,
        &dense_q,
        (&s1, &s2),
        Some(&compete_t),
        forced,
    )?;

    // ---------------------------------------------------------------- losses
    let gran_t: Vec<u32> = queries
        .iter()
        .map(|q| q.granularity.index().unwrap_or(1) as u32)
        .collect();
    let l_gran =
        candle_nn::loss::cross_entropy(&gran_logits, &Tensor::new(gran_t.as_slice(), &dev)?)?;
    let has: Vec<f32> = queries
        .iter()
        .map(|q| f32::from(u8::from(q.target.is_some())))
        .collect();
    let l_target = bce_with_logits(
        &out.target_logit.to_dtype(DType::F32)?,
        &Tensor::new(has.as_slice(), &dev)?,
    )?;
    let l_select = if r_max > 0 {
        bce_masked(
            &out.select_logits.to_dtype(DType::F32)?,
            &sel_labels,
            &valid_t,
        )?
    } else {
        Tensor::new(0f32, &dev)?
    };
    // Competing proposals (part and object queries): −log of the softmax mass on the
    // proposals that match the target, over the queries that have such a proposal.
    let l_rank = if r_max > 0 && w.rank > 0.0 {
        let pos = (&sel_labels * &compete_t)?;
        let rows: Vec<f32> = pos.max(1)?.to_vec1()?;
        if rows.iter().any(|&x| x > 0.0) {
            // On competing rows the head's selection weights are the softmax itself.
            let p = out.select_weights.to_dtype(DType::F32)?;
            let mass = ((p * &pos)?.sum(1)? + 1e-6)?.log()?.neg()?;
            let has = Tensor::from_vec(rows.clone(), nq, &dev)?;
            let n = rows.iter().filter(|&&x| x > 0.0).count() as f64;
            ((mass * has)?.sum_all()? / n)?
        } else {
            Tensor::new(0f32, &dev)?
        }
    } else {
        Tensor::new(0f32, &dev)?
    };
    let (_, _, mh, mw) = out.masks.dims4()?;
    let stride = geos[0].padded_h / mh.max(1);
    let mut pos_idx = Vec::new();
    let mut targets = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        if let Some(m) = &q.target {
            let gi = q.granularity.index().unwrap_or(1);
            pos_idx.push((i * 3 + gi) as u32);
            targets.extend(mask_to_grid(m, &geos[query_scene[i]], stride));
        }
    }
    let (l_bce, l_dice) = if pos_idx.is_empty() {
        (Tensor::new(0f32, &dev)?, Tensor::new(0f32, &dev)?)
    } else {
        let np = pos_idx.len();
        let logits = out
            .masks
            .reshape((nq * 3, mh, mw))?
            .index_select(&Tensor::new(pos_idx.as_slice(), &dev)?, 0)?
            .to_dtype(DType::F32)?;
        let t = Tensor::from_vec(targets, (np, mh, mw), &dev)?;
        (bce_with_logits(&logits, &t)?, dice_loss(&logits, &t)?)
    };
    let l_attr = match attribute_head {
        Some(head) if w.attributes > 0.0 && r_max > 0 => {
            let mut lab = vec![0u32; nq * r_max];
            let mut m = vec![0f32; nq * r_max];
            // Once per scene: every query of a scene shares its proposals.
            let per_scene: Vec<Vec<Option<u32>>> = scenes
                .iter()
                .zip(&props)
                .map(|(s, p)| attribute_labels(p, &s.attributes))
                .collect();
            for i in 0..nq {
                for (j, l) in per_scene[query_scene[i]].iter().enumerate().take(r_max) {
                    if let Some(l) = *l {
                        lab[i * r_max + j] = l;
                        m[i * r_max + j] = 1.0;
                    }
                }
            }
            // The [SEG] state of a single-target query learns its target's attribute with
            // the same head, so that both sides of the selection share one space.
            let mut seg_lab = vec![0u32; nq];
            let mut seg_m = vec![0f32; nq];
            for (i, q) in queries.iter().enumerate() {
                if let (Some(_), [tb]) = (&q.target, q.target_boxes.as_slice()) {
                    let part = q.granularity == Granularity::Part;
                    let attrs = &scenes[query_scene[i]].attributes;
                    if let Some(l) = best_attribute(attrs, tb, part, 0.9) {
                        seg_lab[i] = l;
                        seg_m[i] = 1.0;
                    }
                }
            }
            lab.extend(seg_lab);
            m.extend(seg_m);
            let n_all = nq * r_max + nq;
            if m.iter().any(|&x| x > 0.0) {
                let states = Tensor::cat(
                    &[region_hidden.reshape((nq * r_max, h))?, seg_hidden.clone()],
                    0,
                )?;
                let logits = head.forward(&states)?;
                let lsm = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
                let picked = lsm
                    .gather(&Tensor::from_vec(lab, (n_all, 1), &dev)?, 1)?
                    .squeeze(1)?;
                let m = Tensor::from_vec(m, n_all, &dev)?;
                ((picked * &m)?.sum_all()?.neg()? / (m.sum_all()?.to_scalar::<f32>()? as f64))?
            } else {
                Tensor::new(0f32, &dev)?
            }
        }
        _ => Tensor::new(0f32, &dev)?,
    };
    let l_pos = match &aux.position {
        Some(head) if w.position > 0.0 && r_max > 0 => {
            // Region states regress their own box; the [SEG] state of a single-target query
            // regresses its target's box, with the same head, so that the selection can
            // match a position that the expression resolved (left, biggest, …).
            let mut rows = Vec::new();
            let mut seg_boxes = Vec::new();
            for (i, q) in queries.iter().enumerate() {
                if let (Some(_), [tb]) = (&q.target, q.target_boxes.as_slice()) {
                    let g = &geos[query_scene[i]];
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
            let region_pred = head.forward(&region_hidden.reshape((nq * r_max, h))?)?;
            let region_t = crate::model::region::box_encoding(
                &rboxes_t.reshape((nq * r_max, 4))?,
                POSITION_FREQS,
            )?;
            let valid_flat = valid_t.reshape((nq * r_max, 1))?;
            let d = (region_pred - region_t)?.to_dtype(DType::F32)?.sqr()?;
            let mut num = d.broadcast_mul(&valid_flat)?.sum_all()?;
            let mut den = valid_flat.sum_all()?.to_scalar::<f32>()? as f64 * e as f64;
            if !rows.is_empty() {
                let k = rows.len();
                let sp = head
                    .forward(&seg_hidden.index_select(&Tensor::new(rows.as_slice(), &dev)?, 0)?)?;
                let st = crate::model::region::box_encoding(
                    &Tensor::from_vec(seg_boxes, (k, 4), &dev)?.to_dtype(dtype)?,
                    POSITION_FREQS,
                )?;
                num = (num + (sp - st)?.to_dtype(DType::F32)?.sqr()?.sum_all()?)?;
                den += (k * e) as f64;
            }
            (num / den.max(1.0))?
        }
        _ => Tensor::new(0f32, &dev)?,
    };
    let total = ((((l_bce.clone() * w.mask_bce)? + (l_dice.clone() * w.mask_dice)?)?
        + (l_gran.clone() * w.granularity)?)?
        + ((l_target.clone() * w.target)? + (l_select.clone() * w.select)?)?)?;
    let total = ((total + (l_attr.clone() * w.attributes)?)? + (l_pos.clone() * w.position)?)?;
    let total = (total + (l_rank.clone() * w.rank)?)?;
    let s = |t: &Tensor| -> Result<f32> { Ok(t.to_dtype(DType::F32)?.to_scalar::<f32>()?) };
    let parts = LossParts {
        total: s(&total)?,
        mask_bce: s(&l_bce)?,
        mask_dice: s(&l_dice)?,
        granularity: s(&l_gran)?,
        target: s(&l_target)?,
        select: s(&l_select)?,
        attributes: s(&l_attr)?,
        position: s(&l_pos)?,
        rank: s(&l_rank)?,
    };
    Ok((total, parts))
}

/// SplitMix64: a tiny, portable PRNG (the same numbers on every platform and build).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn name_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a over the name, mixed with the seed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A `VarBuilder` backend that creates variables in a [`VarMap`] from the init hints with a
/// PRNG seeded by `(seed, name)`, so a fresh model is identical for a seed whatever the
/// creation order (candle's CPU RNG cannot be seeded).
///
/// Hints asking for all zeros on a matrix (`VarBuilder::get` without a hint) become
/// N(0, 0.02²); ConvNeXt layer scales start at 0.1.
pub struct SeededVarMap {
    pub varmap: VarMap,
    seed: u64,
}

impl SeededVarMap {
    pub fn new(varmap: VarMap, seed: u64) -> Self {
        Self { varmap, seed }
    }

    fn values(&self, shape: &candle_core::Shape, name: &str, init: candle_nn::Init) -> Vec<f32> {
        use candle_nn::init::{FanInOut, NormalOrUniform};
        let n = shape.elem_count();
        let mut rng = SplitMix64::new(name_seed(self.seed, name));
        let normal = |rng: &mut SplitMix64, m: f64, s: f64| -> Vec<f32> {
            (0..n).map(|_| (m + s * rng.normal()) as f32).collect()
        };
        let uniform = |rng: &mut SplitMix64, lo: f64, up: f64| -> Vec<f32> {
            (0..n)
                .map(|_| (lo + (up - lo) * rng.uniform()) as f32)
                .collect()
        };
        match init {
            _ if name.ends_with("layer_scale_parameter") => vec![0.1; n],
            candle_nn::Init::Const(c) if c == 0.0 && shape.rank() >= 2 => {
                normal(&mut rng, 0.0, 0.02)
            }
            candle_nn::Init::Const(c) => vec![c as f32; n],
            candle_nn::Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev),
            candle_nn::Init::Uniform { lo, up } => uniform(&mut rng, lo, up),
            candle_nn::Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let fan = match fan {
                    FanInOut::FanIn => fan.for_shape(shape),
                    FanInOut::FanOut => fan.for_shape(shape),
                };
                let std = non_linearity.gain() / (fan.max(1) as f64).sqrt();
                match dist {
                    NormalOrUniform::Uniform => {
                        let b = 3f64.sqrt() * std;
                        uniform(&mut rng, -b, b)
                    }
                    NormalOrUniform::Normal => normal(&mut rng, 0.0, std),
                }
            }
        }
    }
}

impl candle_nn::var_builder::SimpleBackend for SeededVarMap {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned var map".into()))?;
        if let Some(v) = data.get(name) {
            let t = v.as_tensor();
            if t.shape() != &s {
                return Err(candle_core::Error::Msg(format!(
                    "{name}: shape {:?} requested, {:?} exists",
                    s,
                    t.shape()
                )));
            }
            return Ok(t.clone());
        }
        let vals = self.values(&s, name, h);
        let t = Tensor::from_vec(vals, s, dev)?.to_dtype(dtype)?;
        let v = Var::from_tensor(&t)?;
        let t = v.as_tensor().clone();
        data.insert(name.to_string(), v);
        Ok(t)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        Err(candle_core::Error::Msg(format!(
            "{name}: a fresh model has no tensor to read unchecked"
        )))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}

/// A fresh model of `cfg` whose variables are initialised from `seed`, and its variables.
pub fn fresh_model(
    cfg: &UniResConfig,
    prompt: PromptBuilder,
    seed: u64,
    dtype: DType,
) -> Result<(UniRes, VarMap)> {
    let varmap = VarMap::new();
    let backend = SeededVarMap::new(varmap.clone(), seed);
    let vb = VarBuilder::from_backend(Box::new(backend), dtype, Device::Cpu);
    let model = UniRes::new(cfg, prompt, vb)?;
    Ok((model, varmap))
}

/// Scales gradients so that their global L2 norm is at most `max_norm`; returns the norm.
pub fn clip_grad_norm(
    vars: &[Var],
    grads: &mut candle_core::backprop::GradStore,
    max_norm: f64,
) -> Result<f64> {
    let mut sq = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    let norm = sq.sqrt();
    if norm > max_norm && norm.is_finite() {
        let s = max_norm / norm;
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let g = (g * s)?;
                grads.insert(v.as_tensor(), g);
            }
        }
    }
    Ok(norm)
}

/// Optimisation settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainOptions {
    pub seed: u64,
    pub steps: usize,
    pub lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    pub clip_norm: f64,
    pub weights: LossWeights,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            steps: 3000,
            lr: 1e-3,
            warmup: 150,
            weight_decay: 0.01,
            clip_norm: 1.0,
            weights: LossWeights::default(),
        }
    }
}

/// Learning rate at `step`: linear warm-up, then cosine decay to 5% of the peak.
pub fn lr_at(o: &TrainOptions, step: usize) -> f64 {
    if step < o.warmup {
        return o.lr * (step + 1) as f64 / o.warmup as f64;
    }
    let t = (step - o.warmup) as f64 / (o.steps.saturating_sub(o.warmup)).max(1) as f64;
    o.lr * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos()))
}

/// A model being trained: the variables and the graph built on them.
pub struct Trainer {
    pub varmap: VarMap,
    pub model: UniRes,
    opt: AdamW,
    vars: Vec<Var>,
    pub opts: TrainOptions,
    step: usize,
    aux: AuxHeads,
}

impl Trainer {
    /// A fresh model of `cfg` with variables initialised from `opts.seed`.
    pub fn new(cfg: &UniResConfig, prompt: PromptBuilder, opts: TrainOptions) -> Result<Self> {
        Self::with_attribute_classes(cfg, prompt, opts, 0)
    }

    /// [`Trainer::new`] with a training-only attribute head of `classes` outputs (0: none)
    /// for the auxiliary loss, and a position head when `opts.weights.position > 0`; their
    /// variables live under `aux.`, outside the checkpoint that [`Trainer::save`] writes.
    pub fn with_attribute_classes(
        cfg: &UniResConfig,
        prompt: PromptBuilder,
        opts: TrainOptions,
        classes: usize,
    ) -> Result<Self> {
        let (model, varmap) = fresh_model(cfg, prompt, opts.seed, DType::F32)?;
        let aux_vb = || {
            let backend = SeededVarMap::new(varmap.clone(), opts.seed ^ 0xa77);
            VarBuilder::from_backend(Box::new(backend), DType::F32, Device::Cpu)
        };
        let h = cfg.llm.hidden_size;
        let attributes = if classes > 0 {
            Some(crate::model::nn::Linear::new(
                h,
                classes,
                true,
                aux_vb().pp("aux.attributes"),
            )?)
        } else {
            None
        };
        let position = if opts.weights.position > 0.0 {
            Some(crate::model::nn::Linear::new(
                h,
                8 * POSITION_FREQS,
                true,
                aux_vb().pp("aux.position"),
            )?)
        } else {
            None
        };
        let aux = AuxHeads {
            attributes,
            position,
        };
        let vars = varmap.all_vars();
        let opt = AdamW::new(
            vars.clone(),
            ParamsAdamW {
                lr: opts.lr,
                weight_decay: opts.weight_decay,
                ..Default::default()
            },
        )?;
        Ok(Self {
            varmap,
            model,
            opt,
            vars,
            opts,
            step: 0,
            aux,
        })
    }

    /// One optimisation step on a batch; returns the losses and the gradient norm.
    pub fn step(&mut self, batch: &[TrainScene]) -> Result<(LossParts, f64)> {
        let (loss, parts) = batch_loss(&self.model, batch, &self.opts.weights, &self.aux)?;
        let mut grads = loss.backward()?;
        let norm = clip_grad_norm(&self.vars, &mut grads, self.opts.clip_norm)?;
        self.opt.set_learning_rate(lr_at(&self.opts, self.step));
        self.opt.step(&grads)?;
        self.step += 1;
        Ok((parts, norm))
    }

    /// Saves the model's variables (not the training-only `aux.` ones) as safetensors in
    /// `dtype` (keys = checkpoint names).
    pub fn save(&self, path: &Path, dtype: DType) -> Result<()> {
        self.save_where(path, dtype, |n| !n.starts_with("aux."))
    }

    /// Saves the training-only `aux.` heads (f32), so that a run started from this one
    /// (`--init`) keeps them instead of starting them afresh.
    pub fn save_aux(&self, path: &Path) -> Result<()> {
        self.save_where(path, DType::F32, |n| n.starts_with("aux."))
    }

    fn save_where(&self, path: &Path, dtype: DType, keep: impl Fn(&str) -> bool) -> Result<()> {
        let vars = self
            .varmap
            .data()
            .lock()
            .map_err(|_| Error::shape("save", "variable map lock poisoned"))?;
        let mut tensors = std::collections::HashMap::new();
        for (name, var) in vars.iter().filter(|(n, _)| keep(n)) {
            tensors.insert(name.clone(), var.as_tensor().to_dtype(dtype)?);
        }
        candle_core::safetensors::save(&tensors, path)?;
        Ok(())
    }
}
