//! The language side of the UniRES++ path: an expression's prompt against an encoded image,
//! the LLM prefill, the granularity logits at the answer position, the `<g_*>` `[SEG]`
//! answer, and the region rows of the `[SEG]` head. Inference prefills one query and appends
//! the answer it chose through the KV cache; training prefills a batch with the answers
//! teacher-forced. Both gather the head's inputs with [`region_rows`].

use candle_core::{DType, IndexOp, Tensor};

use crate::error::{Error, Result};
use crate::model::llm::KvCache;
use crate::model::unires::prompt::Prompt;
use crate::model::unires::UniRes;
use crate::pipeline::unires::prefix::PromptPrefix;
use crate::types::{argmax, Granularity};

/// One expression laid out for the LLM against one encoded image.
#[derive(Debug, Clone)]
pub struct QueryPrompt {
    pub prompt: Prompt,
    /// `(S, H)` input embeddings: text, image tokens and region tokens.
    pub embeds: Tensor,
    /// Position of each region token (objects, then parts) in the expanded sequence.
    pub region_positions: Vec<usize>,
}

impl QueryPrompt {
    /// Length `S` of the prompt sequence.
    pub fn seq_len(&self) -> Result<usize> {
        Ok(self.embeds.dim(0)?)
    }

    /// First and last region-token positions (`None` without regions).
    pub fn region_span(&self) -> Option<(usize, usize)> {
        region_span(&self.region_positions)
    }
}

/// The first and last of `positions` (`None` when empty).
pub fn region_span(positions: &[usize]) -> Option<(usize, usize)> {
    Some((*positions.iter().min()?, *positions.iter().max()?))
}

/// Builds the prompt of `expression` for an image with `image_tokens (N, H)` and
/// `region_tokens (n_objects + n_parts, H)`, and checks that it and the two answer tokens fit
/// the LLM's positions.
pub fn prompt_query(
    model: &UniRes,
    image_tokens: &Tensor,
    region_tokens: &Tensor,
    expression: &str,
    (n_objects, n_parts): (usize, usize),
) -> Result<QueryPrompt> {
    let prompt = model
        .prompt_builder()
        .build(expression, n_objects, n_parts)?;
    let n_img = image_tokens.dim(0)?;
    let seq = prompt.expanded_len(n_img);
    let max = model.config().llm.max_position_embeddings;
    if seq + 2 > max {
        return Err(Error::PromptTooLong {
            tokens: seq + 2,
            max,
        });
    }
    let embeds = model.prompt_embeddings(&prompt, image_tokens, region_tokens)?;
    let region_positions = prompt
        .objects_at
        .iter()
        .chain(prompt.parts_at.iter())
        .map(|&i| prompt.expanded_pos(i, n_img))
        .collect();
    Ok(QueryPrompt {
        prompt,
        embeds,
        region_positions,
    })
}

/// `(Q, 3)` f32 logits of the granularity tokens (part, object, multi) for states `(Q, H)`
/// at the answer position.
pub fn granularity_logits(model: &UniRes, last: &Tensor) -> Result<Tensor> {
    let (gran_ids, _) = model.answer_ids();
    Ok(model
        .llm()
        .logits_for(last, &gran_ids)?
        .to_dtype(DType::F32)?)
}

/// Embeddings `(1, 2, H)` of the answer `<g_*> [SEG]` for granularity index `g`.
fn answer_embeddings(model: &UniRes, g: usize) -> Result<Tensor> {
    let (gran_ids, seg_id) = model.answer_ids();
    let id = *gran_ids
        .get(g)
        .ok_or_else(|| Error::shape("answer", format!("granularity index {g}")))?;
    let ans = Tensor::new(&[id, seg_id], model.device())?.unsqueeze(0)?;
    model.llm().embed(&ans)
}

/// Inference: prefills one prompt; returns the hidden states `(1, S, H)` and the KV cache to
/// append the answer to.
pub fn prefill(model: &UniRes, q: &QueryPrompt) -> Result<(Tensor, KvCache)> {
    prefill_embeds(model, &q.embeds, q.region_span(), None)
}

/// Prefills `embeds (S, H)` whose region tokens span `span`, on a copy of `prefix`'s cache
/// when given (it must match the prompt: see [`PromptPrefix::matches`]; the regions are then
/// all inside the cached part).
fn prefill_embeds(
    model: &UniRes,
    embeds: &Tensor,
    span: Option<(usize, usize)>,
    prefix: Option<&PromptPrefix>,
) -> Result<(Tensor, KvCache)> {
    match prefix {
        Some(p) => p.prefill(model, embeds),
        None => {
            let mut cache = model.llm().new_cache();
            let hidden = model.llm_prefill(&embeds.unsqueeze(0)?, &mut cache, &[span])?;
            Ok((hidden, cache))
        }
    }
}

/// Inference: appends `<g_*> [SEG]` for granularity index `g` through the cache and returns
/// the `[SEG]` state `(1, H)`.
pub fn answer(model: &UniRes, cache: &mut KvCache, g: usize) -> Result<Tensor> {
    let h2 = model.llm().forward(&answer_embeddings(model, g)?, cache)?; // (1, 2, H)
    Ok(h2.i((.., 1, ..))?)
}

/// The language side of one query at inference.
#[derive(Debug, Clone)]
pub struct Answered {
    /// `(1, S, H)` last-layer states of the prompt.
    pub hidden: Tensor,
    /// Softmax over the granularity tokens (part, object, multi) at the answer position.
    pub probs: [f32; 3],
    /// The granularity index answered (the requested one, or the most probable for `Auto`).
    pub chosen: usize,
    /// `(1, H)` state at `[SEG]`.
    pub seg: Tensor,
}

/// Prefills `q` (only its own tokens after `prefix`, when the prompt starts with it), reads
/// the granularity, and runs the answer `<g_*> [SEG]`. A requested granularity is known
/// before the prefill, so its answer goes in the same pass; `Auto` reads the granularity
/// first and appends the answer through the cache.
pub fn answer_query(
    model: &UniRes,
    q: &QueryPrompt,
    granularity: Granularity,
    prefix: Option<&PromptPrefix>,
) -> Result<Answered> {
    let s = q.seq_len()?;
    let prefix = prefix.filter(|p| p.matches(&q.prompt, s));
    let probs = |last: &Tensor| -> Result<[f32; 3]> {
        let p = candle_nn::ops::softmax_last_dim(&granularity_logits(model, last)?)?
            .squeeze(0)?
            .to_vec1::<f32>()?;
        match p.as_slice() {
            &[a, b, c] => Ok([a, b, c]),
            _ => Err(Error::shape("granularity", format!("{} logits", p.len()))),
        }
    };
    match granularity.index() {
        Some(g) => {
            let ans = answer_embeddings(model, g)?.squeeze(0)?;
            let x = Tensor::cat(&[&q.embeds, &ans], 0)?;
            let (h, _) = prefill_embeds(model, &x, q.region_span(), prefix)?;
            Ok(Answered {
                probs: probs(&h.i((.., s - 1, ..))?)?,
                seg: h.i((.., s + 1, ..))?,
                hidden: h.narrow(1, 0, s)?,
                chosen: g,
            })
        }
        None => {
            let (hidden, mut cache) = prefill_embeds(model, &q.embeds, q.region_span(), prefix)?;
            let probs = probs(&hidden.i((.., s - 1, ..))?)?;
            let chosen = argmax(&probs);
            Ok(Answered {
                seg: answer(model, &mut cache, chosen)?,
                hidden,
                probs,
                chosen,
            })
        }
    }
}

/// A teacher-forced batch: every prompt followed by its answer, right-padded.
#[derive(Debug, Clone)]
pub struct Prefilled {
    /// `(Q, S_max, H)` last-layer states.
    pub hidden: Tensor,
    /// States at each prompt's last position `(Q, H)`, where the granularity is read.
    pub last: Tensor,
    /// States at each `[SEG]` `(Q, H)`.
    pub seg: Tensor,
}

/// Training: prefills each prompt with its answer (granularity index) appended, in one pass.
pub fn prefill_answered(model: &UniRes, queries: &[(&QueryPrompt, usize)]) -> Result<Prefilled> {
    let dev = model.device();
    let h = model.config().llm.hidden_size;
    let mut seqs = Vec::with_capacity(queries.len());
    let mut lens = Vec::with_capacity(queries.len());
    for (q, g) in queries {
        let ans = answer_embeddings(model, *g)?.squeeze(0)?;
        lens.push(q.seq_len()?);
        seqs.push(Tensor::cat(&[&q.embeds, &ans], 0)?);
    }
    let nq = seqs.len();
    if nq == 0 {
        return Err(Error::shape("prefill", "no queries"));
    }
    let s_max = lens.iter().max().map_or(0, |l| l + 2);
    let padded = seqs
        .iter()
        .map(|t| {
            let n = t.dim(0)?;
            if n < s_max {
                let pad = Tensor::zeros((s_max - n, h), model.dtype(), dev)?;
                Ok(Tensor::cat(&[t, &pad], 0)?)
            } else {
                Ok(t.clone())
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let x = Tensor::stack(&padded, 0)?; // (Q, S, H)
    let spans: Vec<_> = queries.iter().map(|(q, _)| q.region_span()).collect();
    let mut cache = model.llm().new_cache();
    let hidden = model.llm_prefill(&x, &mut cache, &spans)?;
    let flat = hidden.reshape((nq * s_max, h))?;
    let pick = |pos: Vec<u32>| -> Result<Tensor> {
        Ok(flat.index_select(&Tensor::new(pos.as_slice(), dev)?, 0)?)
    };
    let last = pick((0..nq).map(|i| (i * s_max + lens[i] - 1) as u32).collect())?;
    let seg = pick((0..nq).map(|i| (i * s_max + lens[i] + 1) as u32).collect())?;
    Ok(Prefilled { hidden, last, seg })
}

/// What the head needs to know of one query's regions.
#[derive(Debug, Clone, Copy)]
pub struct QueryRegions<'a> {
    /// Positions of the region tokens in the query's sequence.
    pub positions: &'a [usize],
    /// `(k, 4)` normalised boxes of those regions, in the model's dtype.
    pub boxes: &'a Tensor,
    pub n_objects: usize,
    pub n_parts: usize,
    /// The granularity answered (decides which regions compete).
    pub granularity: Granularity,
}

/// The region side of the head for a batch of `Q` queries, padded to `R` regions.
#[derive(Debug, Clone)]
pub struct RegionRows {
    /// `(Q, R, H)` last-layer states at the region tokens.
    pub hidden: Tensor,
    /// `(Q, R)` f32: 1 for a region, 0 for padding.
    pub valid: Tensor,
    /// `(Q, R, 4)` normalised boxes (padding: zeros), model dtype.
    pub boxes: Tensor,
    /// `(Q, R)` f32 rows of [`UniRes::compete_row`].
    pub compete: Tensor,
}

impl RegionRows {
    /// `R`.
    pub fn width(&self) -> Result<usize> {
        Ok(self.valid.dim(1)?)
    }
}

/// Gathers the region rows of each query from `hidden (Q, S, H)`.
pub fn region_rows(
    model: &UniRes,
    hidden: &Tensor,
    queries: &[QueryRegions<'_>],
) -> Result<RegionRows> {
    let (nq, s, h) = hidden.dims3()?;
    if nq != queries.len() {
        return Err(Error::shape(
            "region rows",
            format!("{nq} sequences for {} queries", queries.len()),
        ));
    }
    let dev = model.device();
    let dtype = model.dtype();
    let r_max = queries.iter().map(|q| q.positions.len()).max().unwrap_or(0);
    let mut rows = Vec::with_capacity(nq * r_max);
    let mut valid = Vec::with_capacity(nq * r_max);
    let mut compete = Vec::with_capacity(nq * r_max);
    let mut boxes = Vec::with_capacity(nq);
    for (i, q) in queries.iter().enumerate() {
        let row = model.compete_row(q.granularity, q.n_objects, q.n_parts);
        for j in 0..r_max {
            compete.push(row.get(j).copied().unwrap_or(0.0));
            match q.positions.get(j) {
                Some(&p) => {
                    rows.push((i * s + p) as u32);
                    valid.push(1f32);
                }
                None => {
                    // Padding reads position 0 of its own sequence; `valid` masks it.
                    rows.push((i * s) as u32);
                    valid.push(0f32);
                }
            }
        }
        let k = q.positions.len();
        boxes.push(if k < r_max {
            let pad = Tensor::zeros((r_max - k, 4), dtype, dev)?;
            Tensor::cat(&[q.boxes, &pad], 0)?
        } else {
            q.boxes.clone()
        });
    }
    let (hidden, boxes) = if r_max > 0 {
        let flat = hidden.reshape((nq * s, h))?;
        let idx = Tensor::new(rows.as_slice(), dev)?;
        (
            flat.index_select(&idx, 0)?.reshape((nq, r_max, h))?,
            Tensor::stack(&boxes, 0)?,
        )
    } else {
        (
            Tensor::zeros((nq, 0, h), dtype, dev)?,
            Tensor::zeros((nq, 0, 4), dtype, dev)?,
        )
    };
    Ok(RegionRows {
        hidden,
        valid: Tensor::from_vec(valid, (nq, r_max), dev)?,
        boxes,
        compete: Tensor::from_vec(compete, (nq, r_max), dev)?,
    })
}
