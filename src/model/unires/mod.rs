//! `UniRes`: the whole UniRES++ graph tied together — encode an image once, segment many
//! expressions.
//!
//! ```text
//! I_l ─ CLIP ViT (layer −2, CLS dropped) ─ mm_projector ───────────────┐
//! I_h ─ ConvNeXt ─┬─ region encoder (ROI Align on proposals) ─ <obj>/<part> tokens
//!                 ├─ neck (stride 16) ─ dense embedding ──────────┐    │
//!                 └─ skip_proj (strides 8, 4) ─ upscaling skips ─┤    ▼
//!                                                                │  LLaMA prefill
//!   granularity: forced, or argmax of <g_part>/<g_obj>/<g_multi> │    │  + <g_*> [SEG] (KV cache)
//!   [SEG] hidden ─ text_hidden_fcs ─ sparse prompt ──────────────┤    │
//!   [SEG] × region hiddens ─ region_select ─ weighted box prompts┤    │
//!   SAM mask decoder (mask token = granularity) ◄────────────────┘
//!   target_head([SEG]) + max region score < threshold → "no target"
//! ```
//!
//! "Dynamic feature exploitation" (our reading of the paper): the `[SEG]` state scores every
//! region token (`region_select`, a bilinear form; for part and object queries a softmax over
//! the proposals of that kind, so that they compete, for multi-object queries a sigmoid
//! each — `region.single_target_softmax`), and each region's box enters
//! the mask decoder as SAM box-corner prompts scaled by its score, and as a dense prompt
//! (`region_select.mask_embed` times the score-weighted box coverage of each grid cell,
//! added to `no_mask_embed`, as SAM adds a mask prompt). Multi-object results are
//! split into instances by the selected object proposals.
//!
//! This file is the graph: its blocks and one method per stage. The walk through the stages
//! (preprocessing, the ROI layout, prompts, prefill, the answer tokens, masks and
//! instances) is [`crate::pipeline::unires`], which inference and training share.

pub mod assemble;
mod assemble_plan;
pub mod check;
pub mod heads;
pub mod load;
pub mod prompt;
pub mod region;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::config::{Activation, Quantization, UniResConfig};
use crate::error::{Error, Result};
use crate::model::hires::ConvNextModel;
use crate::model::init::SeededVarMap;
use crate::model::llm::{span_mask, KvCache, Llama, QuantReport};
use crate::model::mask_decoder::{PromptEncoder, SamMaskDecoder};
use crate::model::vision::ClipVisionModel;
use crate::types::Granularity;
use heads::{Mlp2, Neck, RegionSelect, SkipProj};
use prompt::{Prompt, PromptBuilder};
use region::RegionEncoder;

/// Outputs of the prompt → mask head, for a batch of queries.
#[derive(Debug, Clone)]
pub struct HeadOutput {
    /// `(B, 3, 4h, 4w)` mask logits, one per granularity token.
    pub masks: Tensor,
    /// `(B)` target logit (sigmoid → probability that something matches).
    pub target_logit: Tensor,
    /// `(B, R)` region-selection logits.
    pub select_logits: Tensor,
    /// `(B, R)` the weights the box prompts were scaled by: sigmoids of the logits, or a
    /// softmax over the competing regions (before any teacher forcing; padding is 0).
    pub select_weights: Tensor,
}

/// Inputs of the `[SEG]`-driven head for a batch of `B` queries over at most `R` regions.
#[derive(Debug, Clone, Copy)]
pub struct HeadInputs<'a> {
    /// `(B, H)` last-layer states at `[SEG]`.
    pub seg_hidden: &'a Tensor,
    /// `(B, R, H)` last-layer states at the region tokens (padding rows are ignored).
    pub region_hidden: &'a Tensor,
    /// `(B, R)` 1 for a region, 0 for padding.
    pub region_valid: &'a Tensor,
    /// `(B, R, 4)` region boxes normalised by the padded high-res size.
    pub region_boxes: &'a Tensor,
    /// `(B, D, h, w)` dense (stride-16) image embedding.
    pub dense: &'a Tensor,
    /// Upscaling skips `(B, D/4, 2h, 2w)` and `(B, D/8, 4h, 4w)`.
    pub skips: (&'a Tensor, &'a Tensor),
    /// `(B, R)`: 1 for the regions whose selection weights are a softmax over each other
    /// (see [`RegionConfig::single_target_softmax`](crate::config::RegionConfig)); a row of
    /// zeros (or `None`) keeps independent sigmoids.
    pub compete: Option<&'a Tensor>,
    /// Training only: selection weights `(B, R)` mixed into the predicted ones as
    /// `α·forced + (1 − α)·predicted` (teacher forcing of the box prompts).
    pub forced: Option<(&'a Tensor, f64)>,
}

/// The UniRES++ model.
#[derive(Debug)]
pub struct UniRes {
    cfg: UniResConfig,
    device: Device,
    dtype: DType,
    vision: ClipVisionModel,
    mm_projector: Mlp2,
    hires: ConvNextModel,
    region: RegionEncoder,
    llm: Llama,
    text_hidden_fcs: Mlp2,
    region_select: RegionSelect,
    prompt_encoder: PromptEncoder,
    neck: Neck,
    skip_proj: SkipProj,
    decoder: SamMaskDecoder,
    target_head: Mlp2,
    prompt: PromptBuilder,
    /// Whether `encode` prefills the prompt prefix for the queries (on by default).
    prefix_cache: bool,
}

impl UniRes {
    /// Builds the graph from a VarBuilder at the checkpoint root.
    pub fn new(cfg: &UniResConfig, prompt: PromptBuilder, vb: VarBuilder) -> Result<Self> {
        cfg.validate("config")?;
        let h = cfg.llm.hidden_size;
        let v = cfg.vision.clip.hidden_size;
        let d = cfg.decoder.sam.hidden_size;
        let dims = &cfg.hires.convnext.hidden_sizes;
        let level = |l: usize| {
            dims.get(l).copied().ok_or_else(|| Error::Config {
                what: "decoder".into(),
                reason: format!("level {l} is not a ConvNeXt stage ({} stages)", dims.len()),
            })
        };
        let (s1, s2) = match cfg.decoder.skip_levels.as_slice() {
            [a, b] => (*a, *b),
            _ => {
                return Err(Error::Config {
                    what: "decoder".into(),
                    reason: "skip_levels must name two levels (stride 8, stride 4)".into(),
                })
            }
        };
        Ok(Self {
            cfg: cfg.clone(),
            device: vb.device().clone(),
            dtype: vb.dtype(),
            vision: ClipVisionModel::new(
                &cfg.vision.clip,
                vb.pp("vision_tower").pp("vision_model"),
            )?,
            mm_projector: Mlp2::new((v, h, h), Activation::Gelu, vb.pp("mm_projector"))?,
            hires: ConvNextModel::new(&cfg.hires.convnext, vb.pp("hires"))?,
            region: RegionEncoder::new(
                &cfg.region,
                dims,
                cfg.hires.convnext.patch_size,
                h,
                vb.pp("region_encoder"),
            )?,
            llm: Llama::new(&cfg.llm, vb.pp("llm"))?,
            text_hidden_fcs: Mlp2::new((h, h, d), Activation::Relu, vb.pp("text_hidden_fcs.0"))?,
            region_select: RegionSelect::new(h, cfg.region.select_dim, d, vb.pp("region_select"))?,
            prompt_encoder: PromptEncoder::new(d, vb.pp("prompt_encoder"))?,
            neck: Neck::new(level(cfg.decoder.dense_level)?, d, vb.pp("neck"))?,
            skip_proj: SkipProj::new(level(s1)?, level(s2)?, d, vb.pp("skip_proj"))?,
            decoder: SamMaskDecoder::new(&cfg.decoder.sam, vb.pp("mask_decoder"))?,
            target_head: Mlp2::new((d, d, 1), Activation::Relu, vb.pp("target_head"))?,
            prompt,
            prefix_cache: true,
        })
    }

    /// A fresh model of `cfg` whose variables are initialised from `seed`
    /// ([`SeededVarMap`]), and its variables.
    pub fn fresh(
        cfg: &UniResConfig,
        prompt: PromptBuilder,
        seed: u64,
        dtype: DType,
    ) -> Result<(Self, VarMap)> {
        let varmap = VarMap::new();
        let backend = SeededVarMap::new(varmap.clone(), seed);
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, Device::Cpu);
        let model = Self::new(cfg, prompt, vb)?;
        Ok((model, varmap))
    }

    /// A model of `cfg` with the weights [`UniRes::fresh`] draws from `seed`, for inference:
    /// its tensors are plain (not training variables), so a forward pass records no
    /// gradient graph and keeps no activations alive (benchmarks, tests at paper width).
    pub fn seeded(
        cfg: &UniResConfig,
        prompt: PromptBuilder,
        seed: u64,
        dtype: DType,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        let backend = SeededVarMap::new(varmap.clone(), seed);
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, Device::Cpu);
        // Build once to draw every variable, then again from detached copies of them.
        drop(Self::new(cfg, prompt.clone(), vb)?);
        let tensors: std::collections::HashMap<String, Tensor> = {
            let data = varmap
                .data()
                .lock()
                .map_err(|_| Error::shape("seeded model", "poisoned variable map"))?;
            data.iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
                .collect()
        };
        drop(varmap);
        Self::new(
            cfg,
            prompt,
            VarBuilder::from_tensors(tensors, dtype, &Device::Cpu),
        )
    }

    pub fn config(&self) -> &UniResConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn prompt_builder(&self) -> &PromptBuilder {
        &self.prompt
    }

    /// Whether encoding an image also prefills the prompt up to its last region token, so
    /// that each query prefills only its own tokens (`pipeline::unires::prefix`).
    pub fn prefix_cache(&self) -> bool {
        self.prefix_cache
    }

    /// Turns the prompt-prefix cache on (the default) or off. Off, an encoded image holds no
    /// LLM state (for a 7B LLM in f32 the cache is ~1 MiB per prefix position) and every
    /// query prefills its whole prompt; results are the same either way.
    pub fn set_prefix_cache(&mut self, on: bool) {
        self.prefix_cache = on;
    }

    /// Quantises the LLM's decoder-layer linear weights to `format` (see
    /// [`Llama::quantize`]); the image side, the heads and the LLM's embeddings stay in the
    /// model's dtype. Inference only.
    pub fn quantize_llm(&mut self, format: Quantization) -> Result<QuantReport> {
        self.llm.quantize(format)
    }

    /// The LLM (token embeddings, the causal stack and the answer-token logits).
    pub fn llm(&self) -> &Llama {
        &self.llm
    }

    /// The LLM over prompt embeddings `x (B, S, H)` after the positions in `cache`: causal,
    /// or, with `region.bidirectional_regions`, with each sequence's region tokens attending
    /// to each other. `spans[b]` is the first and last region-token position (absolute) of
    /// sequence `b`, `None` when it has none (or none in these positions).
    pub fn llm_prefill(
        &self,
        x: &Tensor,
        cache: &mut KvCache,
        spans: &[Option<(usize, usize)>],
    ) -> Result<Tensor> {
        if !self.cfg.region.bidirectional_regions || spans.iter().all(Option::is_none) {
            return self.llm.forward(x, cache);
        }
        let (b, s, _) = x.dims3()?;
        if spans.len() != b {
            return Err(Error::shape(
                "llm prefill",
                format!("{} region spans for {b} sequences", spans.len()),
            ));
        }
        let mask = span_mask(spans, cache.len(), s, x.device())?;
        self.llm.forward_masked(x, cache, &mask)
    }

    // ------------------------------------------------------------------ image side

    /// Low-res path: `(B, 3, s, s)` → projected image tokens `(B, N, H)`.
    pub fn image_tokens(&self, lowres: &Tensor) -> Result<Tensor> {
        let f = self.vision.forward_select(
            &lowres.to_dtype(self.dtype)?,
            self.cfg.vision.select_layer,
            self.cfg.vision.select_feature,
        )?;
        self.mm_projector.forward(&f)
    }

    /// High-res path: ConvNeXt stage outputs for `(B, 3, H, W)`.
    pub fn hires_features(&self, hires: &Tensor) -> Result<Vec<Tensor>> {
        self.hires.forward(&hires.to_dtype(self.dtype)?)
    }

    /// Dense embedding and upscaling skips from the stage outputs.
    pub fn dense_features(&self, feats: &[Tensor]) -> Result<(Tensor, (Tensor, Tensor))> {
        let get = |l: usize| {
            feats
                .get(l)
                .ok_or_else(|| Error::shape("dense features", format!("no level {l}")))
        };
        let dense = self.neck.forward(get(self.cfg.decoder.dense_level)?)?;
        let s = &self.cfg.decoder.skip_levels;
        let skips = self.skip_proj.forward(get(s[0])?, get(s[1])?)?;
        Ok((dense, skips))
    }

    /// Region tokens for `rois (K, 5)` (batch index + high-res pixel box), `kinds (K)`
    /// ([`RegionKind`](crate::types::RegionKind) indices), `boxes_norm (K, 4)`.
    pub fn region_tokens(
        &self,
        feats: &[Tensor],
        rois: &Tensor,
        kinds: &Tensor,
        boxes_norm: &Tensor,
    ) -> Result<Tensor> {
        let projected = self.region.project_levels(feats)?;
        self.region.forward(&projected, rois, kinds, boxes_norm)
    }

    // ------------------------------------------------------------------ language side

    /// Input embeddings `(S, H)` for a prompt: text embeddings with `<image>` expanded to the
    /// image tokens and each region placeholder replaced by its region token.
    pub fn prompt_embeddings(
        &self,
        prompt: &Prompt,
        image_tokens: &Tensor,
        region_tokens: &Tensor,
    ) -> Result<Tensor> {
        let n = prompt.ids.len();
        let ids = Tensor::new(prompt.ids.as_slice(), &self.device)?.unsqueeze(0)?;
        let text = self.llm.embed(&ids)?.squeeze(0)?;
        let mut region_at: Vec<(usize, usize)> = prompt
            .objects_at
            .iter()
            .chain(prompt.parts_at.iter())
            .enumerate()
            .map(|(r, &i)| (i, r))
            .collect();
        region_at.sort_unstable();
        let mut pieces: Vec<Tensor> = Vec::new();
        let mut start = 0usize;
        let push_text = |pieces: &mut Vec<Tensor>, from: usize, to: usize| -> Result<()> {
            if to > from {
                pieces.push(text.narrow(0, from, to - from)?);
            }
            Ok(())
        };
        let mut specials: Vec<(usize, Option<usize>)> =
            region_at.iter().map(|&(i, r)| (i, Some(r))).collect();
        specials.push((prompt.image_at, None));
        specials.sort_unstable();
        for (i, which) in specials {
            push_text(&mut pieces, start, i)?;
            match which {
                None => pieces.push(image_tokens.clone()),
                Some(r) => pieces.push(region_tokens.narrow(0, r, 1)?),
            }
            start = i + 1;
        }
        push_text(&mut pieces, start, n)?;
        Ok(Tensor::cat(&pieces, 0)?)
    }

    /// The `[SEG]`-driven head for a batch of queries (see [`HeadInputs`]).
    pub fn head(&self, x: &HeadInputs<'_>) -> Result<HeadOutput> {
        let (b, r, _) = x.region_hidden.dims3()?;
        let seg = self.text_hidden_fcs.forward(x.seg_hidden)?; // (B, D)
        let d = seg.dim(1)?;
        let mut target_logit = self.target_head.forward(&seg)?.squeeze(1)?;
        let mut sparse = vec![seg.unsqueeze(1)?];
        let (_, _, gh, gw) = x.dense.dims4()?;
        let mut coverage_map = None;
        let mut select_weights = None;
        let select_logits = if r > 0 {
            let logits = self.region_select.logits(x.seg_hidden, x.region_hidden)?; // (B, R)
            let mut w = candle_nn::ops::sigmoid(&logits)?;
            if let Some(c) = x.compete {
                let c = c.to_dtype(w.dtype())?;
                let masked = (&logits + ((&c - 1.0)? * 1e4)?)?;
                let soft = (candle_nn::ops::softmax_last_dim(&masked)? * &c)?;
                let f = c.max_keepdim(1)?; // (B, 1): 1 where the row competes
                w = (soft.broadcast_mul(&f)? + w.broadcast_mul(&(1.0 - &f)?)?)?;
            }
            let mut w = (w * x.region_valid)?;
            select_weights = Some(w.clone());
            if let Some((f, alpha)) = x.forced {
                w = ((f.to_dtype(w.dtype())? * alpha)? + (w * (1.0 - alpha))?)?;
            }
            let w = (w * x.region_valid)?;
            // Dense prompt: Σ_r w_r · (fraction of each grid cell inside box r).
            let cov = box_coverage(x.region_boxes, gh, gw)?; // (B, R, gh·gw)
            coverage_map = Some(
                w.unsqueeze(1)?
                    .matmul(&cov.to_dtype(w.dtype())?)?
                    .reshape((b, 1, gh, gw))?,
            );
            let corners = self
                .prompt_encoder
                .embed_boxes(&x.region_boxes.reshape((b * r, 4))?)?
                .reshape((b, r, 2, d))?;
            let corners =
                corners
                    .broadcast_mul(&w.reshape((b, r, 1, 1))?)?
                    .reshape((b, 2 * r, d))?;
            sparse.push(corners);
            // "Is there a target" also reads the best region score: an expression that
            // selects no proposal refers to nothing (padding excluded).
            let masked = (&logits + ((x.region_valid - 1.0)? * 1e4)?)?;
            target_logit = (target_logit + masked.max(1)?)?;
            logits
        } else {
            Tensor::zeros((b, 0), self.dtype, &self.device)?
        };
        let sparse = Tensor::cat(&sparse, 1)?;
        let pe = self.prompt_encoder.dense_pe(gh, gw, self.dtype)?;
        let no_mask = self.prompt_encoder.dense_no_mask()?;
        let dense_prompt = match coverage_map {
            Some(m) => {
                let e = self.region_select.mask_embed.reshape((1, d, 1, 1))?;
                m.broadcast_mul(&e)?.broadcast_add(&no_mask)?
            }
            None => no_mask,
        };
        let out = self
            .decoder
            .forward(x.dense, &pe, &sparse, &dense_prompt, Some(x.skips))?;
        Ok(HeadOutput {
            masks: out.masks,
            target_logit,
            select_weights: match select_weights {
                Some(w) => w,
                None => select_logits.clone(),
            },
            select_logits,
        })
    }

    /// Which of `n_objects` object and `n_parts` part regions (in that order) compete in a
    /// softmax for a query of granularity `g`: the regions of its kind for part and object
    /// queries when `region.single_target_softmax` is on, none otherwise.
    pub fn compete_row(&self, g: Granularity, n_objects: usize, n_parts: usize) -> Vec<f32> {
        let on = self.cfg.region.single_target_softmax;
        let (objects, parts) = match g {
            Granularity::Object if on => (1.0, 0.0),
            Granularity::Part if on => (0.0, 1.0),
            _ => (0.0, 0.0),
        };
        std::iter::repeat_n(objects, n_objects)
            .chain(std::iter::repeat_n(parts, n_parts))
            .collect()
    }

    /// Ids of the granularity tokens (part, object, multi) and `[SEG]`.
    pub fn answer_ids(&self) -> ([u32; 3], u32) {
        let ids = self.prompt.ids();
        (ids.granularity, ids.seg)
    }
}

/// `(B, R, gh·gw)`: for boxes `(B, R, 4)` normalised to the padded frame, the fraction of each
/// cell of a `gh × gw` grid that each box covers (a constant: no gradient flows to the boxes).
pub fn box_coverage(boxes: &Tensor, gh: usize, gw: usize) -> Result<Tensor> {
    let (b, r, _) = boxes.dims3()?;
    let v = boxes
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let overlap = |lo: f32, hi: f32, cell: usize, n: usize| -> f32 {
        let (c0, c1) = (cell as f32 / n as f32, (cell + 1) as f32 / n as f32);
        (hi.min(c1) - lo.max(c0)).max(0.0) * n as f32
    };
    let mut out = vec![0f32; b * r * gh * gw];
    for (k, bx) in v.chunks_exact(4).enumerate() {
        let ox: Vec<f32> = (0..gw).map(|x| overlap(bx[0], bx[2], x, gw)).collect();
        let base = k * gh * gw;
        for y in 0..gh {
            let oy = overlap(bx[1], bx[3], y, gh);
            if oy == 0.0 {
                continue;
            }
            for (x, &fx) in ox.iter().enumerate() {
                out[base + y * gw + x] = oy * fx;
            }
        }
    }
    Ok(Tensor::from_vec(out, (b, r, gh * gw), boxes.device())?)
}
