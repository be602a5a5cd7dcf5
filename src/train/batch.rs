//! One training batch through the shared UniRES++ path ([`crate::pipeline::unires`]):
//! `B` scenes encoded at once, `B·Q` teacher-forced sequences (prompt, granularity token,
//! `[SEG]`) in one LLM pass, the head on every query, then the losses ([`super::loss`]).

use candle_core::{DType, Tensor};

use super::loss::{self, select_labels};
use super::{AuxHeads, LossParts, LossWeights, TrainQuery, TrainScene};
use crate::error::{Error, Result};
use crate::model::unires::{HeadInputs, HeadOutput, UniRes};
use crate::pipeline::unires::query::{prefill_answered, region_rows, QueryRegions, RegionRows};
use crate::pipeline::unires::{encode_batch, prompt_query, EncodedBatch, QueryPrompt};

/// Everything the losses read from one forward pass of a batch.
pub(crate) struct BatchForward<'a> {
    pub scenes: &'a [TrainScene],
    pub enc: EncodedBatch,
    /// Queries in order, with the index of their scene.
    pub queries: Vec<&'a TrainQuery>,
    pub query_scene: Vec<usize>,
    /// `(Q, 3)` f32 granularity logits at the answer position.
    pub gran_logits: Tensor,
    /// `(Q, H)` `[SEG]` states.
    pub seg_hidden: Tensor,
    pub rows: RegionRows,
    /// `(Q, R)` f32 region-selection labels ([`select_labels`], padding 0).
    pub sel_labels: Tensor,
    pub out: HeadOutput,
}

/// The forward pass of a batch: encode, prompts, teacher-forced prefill, region rows, head.
pub(crate) fn forward<'a>(
    model: &UniRes,
    scenes: &'a [TrainScene],
    w: &LossWeights,
) -> Result<BatchForward<'a>> {
    if scenes.is_empty() {
        return Err(Error::shape("batch_loss", "empty batch"));
    }
    let dev = model.device();
    let images: Vec<_> = scenes.iter().map(|s| (&s.image, &s.proposals)).collect();
    let enc = encode_batch(model, &images)?;

    let mut prompts: Vec<QueryPrompt> = Vec::new();
    let mut answers = Vec::new();
    let mut query_scene = Vec::new();
    let mut queries: Vec<&TrainQuery> = Vec::new();
    let mut region_boxes = Vec::with_capacity(scenes.len());
    for (b, s) in scenes.iter().enumerate() {
        let p = &enc.proposals[b];
        let (regions, boxes) = enc.regions(b)?;
        region_boxes.push(boxes);
        let img = enc.image_tokens.get(b)?;
        for q in &s.queries {
            let gi = q
                .granularity
                .index()
                .ok_or_else(|| Error::shape("batch_loss", "query granularity must be concrete"))?;
            let counts = (p.objects.len(), p.parts.len());
            prompts.push(prompt_query(model, &img, &regions, &q.expression, counts)?);
            answers.push(gi);
            query_scene.push(b);
            queries.push(q);
        }
    }
    let nq = prompts.len();
    if nq == 0 {
        return Err(Error::shape("batch_loss", "no queries"));
    }
    let answered: Vec<_> = prompts.iter().zip(answers).collect();
    let pre = prefill_answered(model, &answered)?;
    let gran_logits = crate::pipeline::unires::query::granularity_logits(model, &pre.last)?;

    let specs: Vec<QueryRegions<'_>> = prompts
        .iter()
        .zip(&query_scene)
        .zip(&queries)
        .map(|((qp, &b), q)| QueryRegions {
            positions: &qp.region_positions,
            boxes: &region_boxes[b],
            n_objects: enc.proposals[b].objects.len(),
            n_parts: enc.proposals[b].parts.len(),
            granularity: q.granularity,
        })
        .collect();
    let rows = region_rows(model, &pre.hidden, &specs)?;
    let r_max = rows.width()?;
    let mut sel = Vec::with_capacity(nq * r_max);
    for (q, &b) in queries.iter().zip(&query_scene) {
        let labels = select_labels(&enc.proposals[b], q);
        sel.extend((0..r_max).map(|j| labels.get(j).copied().unwrap_or(0.0)));
    }
    let sel_labels = Tensor::from_vec(sel, (nq, r_max), dev)?;

    let qidx: Vec<u32> = query_scene.iter().map(|&b| b as u32).collect();
    let qidx = Tensor::new(qidx.as_slice(), dev)?;
    let dense = enc.dense.index_select(&qidx, 0)?;
    let s1 = enc.skips.0.index_select(&qidx, 0)?;
    let s2 = enc.skips.1.index_select(&qidx, 0)?;
    let forced = if w.teacher_forcing > 0.0 && r_max > 0 {
        Some((&sel_labels, w.teacher_forcing))
    } else {
        None
    };
    let valid = rows.valid.to_dtype(model.dtype())?;
    let out = model.head(&HeadInputs {
        seg_hidden: &pre.seg,
        region_hidden: &rows.hidden,
        region_valid: &valid,
        region_boxes: &rows.boxes,
        dense: &dense,
        skips: (&s1, &s2),
        compete: Some(&rows.compete),
        forced,
    })?;
    Ok(BatchForward {
        scenes,
        enc,
        queries,
        query_scene,
        gran_logits,
        seg_hidden: pre.seg,
        rows,
        sel_labels,
        out,
    })
}

/// Computes the training loss of one batch, with the auxiliary losses of the `aux` heads
/// that are present and weighted.
pub fn batch_loss(
    model: &UniRes,
    scenes: &[TrainScene],
    w: &LossWeights,
    aux: &AuxHeads,
) -> Result<(Tensor, LossParts)> {
    let f = forward(model, scenes, w)?;
    let zero = || Tensor::new(0f32, model.device());
    let l_gran = loss::granularity(&f)?;
    let l_target = loss::target(&f)?;
    let l_select = loss::select(&f)?;
    let l_rank = if w.rank > 0.0 {
        loss::rank(&f)?
    } else {
        zero()?
    };
    let (l_bce, l_dice) = loss::mask(&f)?;
    let l_attr = match &aux.attributes {
        Some(head) if w.attributes > 0.0 => loss::attributes(&f, head)?,
        _ => zero()?,
    };
    let l_pos = match &aux.position {
        Some(head) if w.position > 0.0 => loss::position(&f, head, model.dtype())?,
        _ => zero()?,
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
