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

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Module, VarBuilder};
use image::RgbImage;

use crate::config::UniResConfig;
use crate::error::{Error, Result};
use crate::model::hires::ConvNextModel;
use crate::model::llm::{KvCache, Llama};
use crate::model::mask_decoder::{PromptEncoder, SamMaskDecoder};
use crate::model::nn::{LayerNorm2d, Linear};
use crate::model::prompt::{Prompt, PromptBuilder};
use crate::model::region::RegionEncoder;
use crate::model::vision::ClipVisionModel;
use crate::ops::upsample::{upsample_masks, MaskResize};
use crate::preprocess::{preprocess_hires, preprocess_lowres, HiresGeometry};
use crate::types::{BoxXyxy, Granularity, Instance, Mask, Proposals, Segmentation};

/// SAM-style neck: 1×1 conv, LayerNorm2d, 3×3 conv, LayerNorm2d (no conv biases).
#[derive(Debug, Clone)]
pub struct Neck {
    conv1: Conv2d,
    layer_norm1: LayerNorm2d,
    conv2: Conv2d,
    layer_norm2: LayerNorm2d,
}

impl Neck {
    pub fn new(c_in: usize, d: usize, vb: VarBuilder) -> Result<Self> {
        let nb = Conv2dConfig::default();
        let conv1 = candle_nn::conv2d_no_bias(c_in, d, 1, nb, vb.pp("conv1"))?;
        let conv2 =
            candle_nn::conv2d_no_bias(d, d, 3, Conv2dConfig { padding: 1, ..nb }, vb.pp("conv2"))?;
        Ok(Self {
            conv1,
            layer_norm1: LayerNorm2d::new(d, 1e-6, vb.pp("layer_norm1"))?,
            conv2,
            layer_norm2: LayerNorm2d::new(d, 1e-6, vb.pp("layer_norm2"))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.layer_norm1.forward(&self.conv1.forward(x)?)?;
        self.layer_norm2.forward(&self.conv2.forward(&x)?)
    }
}

/// Features of one image, reusable across expressions.
#[derive(Debug, Clone)]
pub struct EncodedImage {
    /// Original image width and height.
    pub width: u32,
    pub height: u32,
    /// High-res input geometry (resize and padding).
    pub geometry: HiresGeometry,
    /// The proposals used (validated, clipped to the model's maxima), original coordinates.
    pub proposals: Proposals,
    /// `(N, H)` projected image tokens.
    pub image_tokens: Tensor,
    /// `(K, H)` region tokens, objects first then parts.
    pub region_tokens: Tensor,
    /// `(K, 4)` region boxes normalised by the padded high-res size.
    pub region_boxes: Tensor,
    /// `(1, D, h, w)` dense (stride-16) embedding.
    pub dense: Tensor,
    /// Upscaling skips `(1, D/4, 2h, 2w)` and `(1, D/8, 4h, 4w)`.
    pub skips: (Tensor, Tensor),
}

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

/// The UniRES++ model.
#[derive(Debug)]
pub struct UniRes {
    cfg: UniResConfig,
    device: Device,
    dtype: DType,
    pub(crate) vision: ClipVisionModel,
    mm_projector: (Linear, Linear),
    pub(crate) hires: ConvNextModel,
    pub(crate) region: RegionEncoder,
    pub(crate) llm: Llama,
    text_hidden_fcs: (Linear, Linear),
    region_select: (Linear, Linear),
    /// `(1, D)`: the dense prompt added where the weighted selected boxes cover the grid.
    region_mask_embed: Tensor,
    prompt_encoder: PromptEncoder,
    neck: Neck,
    skip_proj: (Conv2d, Conv2d),
    decoder: SamMaskDecoder,
    target_head: (Linear, Linear),
    pub(crate) prompt: PromptBuilder,
}

impl UniRes {
    /// Builds the graph from a VarBuilder at the checkpoint root.
    pub fn new(cfg: &UniResConfig, prompt: PromptBuilder, vb: VarBuilder) -> Result<Self> {
        cfg.validate("config")?;
        let h = cfg.llm.hidden_size;
        let v = cfg.vision.clip.hidden_size;
        let d = cfg.decoder.sam.hidden_size;
        let dims = &cfg.hires.convnext.hidden_sizes;
        let vision =
            ClipVisionModel::new(&cfg.vision.clip, vb.pp("vision_tower").pp("vision_model"))?;
        let mm_projector = (
            Linear::new(v, h, true, vb.pp("mm_projector.0"))?,
            Linear::new(h, h, true, vb.pp("mm_projector.2"))?,
        );
        let hires = ConvNextModel::new(&cfg.hires.convnext, vb.pp("hires"))?;
        let region = RegionEncoder::new(
            &cfg.region,
            dims,
            cfg.hires.convnext.patch_size,
            h,
            vb.pp("region_encoder"),
        )?;
        let llm = Llama::new(&cfg.llm, vb.pp("llm"))?;
        let text_hidden_fcs = (
            Linear::new(h, h, true, vb.pp("text_hidden_fcs.0.0"))?,
            Linear::new(h, d, true, vb.pp("text_hidden_fcs.0.2"))?,
        );
        let s = cfg.region.select_dim;
        let region_select = (
            Linear::new(h, s, true, vb.pp("region_select.q"))?,
            Linear::new(h, s, true, vb.pp("region_select.k"))?,
        );
        let region_mask_embed = vb.get_with_hints(
            (1, d),
            "region_select.mask_embed.weight",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )?;
        let prompt_encoder = PromptEncoder::new(d, vb.pp("prompt_encoder"))?;
        let neck = Neck::new(dims[cfg.decoder.dense_level], d, vb.pp("neck"))?;
        let (s1, s2) = match cfg.decoder.skip_levels.as_slice() {
            [a, b] => (*a, *b),
            _ => {
                return Err(Error::Config {
                    what: "decoder".into(),
                    reason: "skip_levels must name two levels (stride 8, stride 4)".into(),
                })
            }
        };
        let c = Conv2dConfig::default();
        let skip_proj = (
            candle_nn::conv2d(dims[s1], d / 4, 1, c, vb.pp("skip_proj.0"))?,
            candle_nn::conv2d(dims[s2], d / 8, 1, c, vb.pp("skip_proj.1"))?,
        );
        let decoder = SamMaskDecoder::new(&cfg.decoder.sam, vb.pp("mask_decoder"))?;
        let target_head = (
            Linear::new(d, d, true, vb.pp("target_head.0"))?,
            Linear::new(d, 1, true, vb.pp("target_head.2"))?,
        );
        Ok(Self {
            cfg: cfg.clone(),
            device: vb.device().clone(),
            dtype: vb.dtype(),
            vision,
            mm_projector,
            hires,
            region,
            llm,
            text_hidden_fcs,
            region_select,
            region_mask_embed,
            prompt_encoder,
            neck,
            skip_proj,
            decoder,
            target_head,
            prompt,
        })
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

    // ------------------------------------------------------------------ image side

    /// Low-res path: `(B, 3, s, s)` → projected image tokens `(B, N, H)`.
    pub fn image_tokens(&self, lowres: &Tensor) -> Result<Tensor> {
        let f = self.vision.forward_select(
            &lowres.to_dtype(self.dtype)?,
            self.cfg.vision.select_layer,
            self.cfg.vision.select_feature,
        )?;
        let x = self.mm_projector.0.forward(&f)?.gelu_erf()?;
        self.mm_projector.1.forward(&x)
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
        let s1 = self.skip_proj.0.forward(get(s[0])?)?;
        let s2 = self.skip_proj.1.forward(get(s[1])?)?;
        Ok((dense, (s1, s2)))
    }

    /// Region tokens for `rois (K, 5)` (batch index + high-res pixel box), `kinds (K)`,
    /// `boxes_norm (K, 4)`.
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

    /// Validates and caps proposals, and lays them out as ROI rows for image `batch_index`.
    fn region_inputs(
        &self,
        p: &Proposals,
        g: &HiresGeometry,
        batch_index: f32,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (sx, sy) = g.scale();
        let (pw, ph) = (g.padded_w as f32, g.padded_h as f32);
        let mut rois = Vec::new();
        let mut kinds = Vec::new();
        let mut norm = Vec::new();
        for (kind, boxes) in [(0u32, &p.objects), (1u32, &p.parts)] {
            for b in boxes.iter() {
                let (x1, y1, x2, y2) = (b.x1 * sx, b.y1 * sy, b.x2 * sx, b.y2 * sy);
                rois.extend_from_slice(&[batch_index, x1, y1, x2, y2]);
                kinds.push(kind);
                norm.extend_from_slice(&[x1 / pw, y1 / ph, x2 / pw, y2 / ph]);
            }
        }
        let k = kinds.len();
        Ok((
            Tensor::from_vec(rois, (k, 5), &self.device)?,
            Tensor::from_vec(kinds, k, &self.device)?,
            Tensor::from_vec(norm, (k, 4), &self.device)?.to_dtype(self.dtype)?,
        ))
    }

    /// Keeps at most the configured number of proposals, after validating them.
    pub fn cap_proposals(&self, p: &Proposals, width: u32, height: u32) -> Result<Proposals> {
        p.validate(width, height)?;
        let r = &self.cfg.region;
        let clip = |b: &BoxXyxy| {
            BoxXyxy::new(
                b.x1.clamp(0.0, width as f32),
                b.y1.clamp(0.0, height as f32),
                b.x2.clamp(0.0, width as f32),
                b.y2.clamp(0.0, height as f32),
            )
        };
        Ok(Proposals::new(
            p.objects.iter().take(r.max_objects).map(clip).collect(),
            p.parts.iter().take(r.max_parts).map(clip).collect(),
        ))
    }

    /// Encodes an image and its proposals (original pixel coordinates) once.
    pub fn encode(&self, image: &RgbImage, proposals: &Proposals) -> Result<EncodedImage> {
        let (w, h) = image.dimensions();
        crate::io::image::check_size(w, h, &self.cfg.limits)?;
        let proposals = self.cap_proposals(proposals, w, h)?;
        let c = &self.cfg;
        let low = preprocess_lowres(
            image,
            c.vision.clip.image_size,
            c.image_mean,
            c.image_std,
            &self.device,
        )?;
        let (high, geometry) = preprocess_hires(
            image,
            c.hires.image_size,
            c.hires.pad,
            c.image_mean,
            c.image_std,
            &self.device,
        )?;
        let image_tokens = self.image_tokens(&low)?.squeeze(0)?;
        let feats = self.hires_features(&high)?;
        let (dense, skips) = self.dense_features(&feats)?;
        let (rois, kinds, boxes) = self.region_inputs(&proposals, &geometry, 0.0)?;
        let region_tokens = if kinds.dim(0)? > 0 {
            self.region_tokens(&feats, &rois, &kinds, &boxes)?
        } else {
            Tensor::zeros((0, c.llm.hidden_size), self.dtype, &self.device)?
        };
        Ok(EncodedImage {
            width: w,
            height: h,
            geometry,
            proposals,
            image_tokens,
            region_tokens,
            region_boxes: boxes,
            dense,
            skips,
        })
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

    /// The `[SEG]`-driven head for a batch of queries.
    ///
    /// * `seg_hidden (B, H)`; `region_hidden (B, R, H)` last-layer states at region tokens;
    /// * `region_valid (B, R)` 1/0 (padding); `region_boxes (B, R, 4)` normalised;
    /// * `dense (B, D, h, w)`, `skips` matching;
    /// * `compete (B, R)`: 1 for the regions whose selection weights are a softmax over each
    ///   other (see [`RegionConfig::single_target_softmax`](crate::config::RegionConfig));
    ///   a row of zeros (or `None`) keeps independent sigmoids;
    /// * `forced (B, R)`, training only: selection weights mixed into the predicted ones as
    ///   `α·forced + (1 − α)·predicted` (teacher forcing of the box prompts).
    #[allow(clippy::too_many_arguments)]
    pub fn head(
        &self,
        seg_hidden: &Tensor,
        region_hidden: &Tensor,
        region_valid: &Tensor,
        region_boxes: &Tensor,
        dense: &Tensor,
        skips: (&Tensor, &Tensor),
        compete: Option<&Tensor>,
        forced: Option<(&Tensor, f64)>,
    ) -> Result<HeadOutput> {
        let (b, r, _) = region_hidden.dims3()?;
        let seg = self
            .text_hidden_fcs
            .1
            .forward(&self.text_hidden_fcs.0.forward(seg_hidden)?.relu()?)?; // (B, D)
        let d = seg.dim(1)?;
        let mut target_logit = self
            .target_head
            .1
            .forward(&self.target_head.0.forward(&seg)?.relu()?)?
            .squeeze(1)?;
        let mut sparse = vec![seg.unsqueeze(1)?];
        let (_, _, gh, gw) = dense.dims4()?;
        let mut coverage_map = None;
        let mut select_weights = None;
        let select_logits = if r > 0 {
            let q = self.region_select.0.forward(seg_hidden)?.unsqueeze(2)?; // (B, S, 1)
            let k = self.region_select.1.forward(region_hidden)?; // (B, R, S)
            let scale = 1.0 / (q.dim(1)? as f64).sqrt();
            let logits = (k.matmul(&q)?.squeeze(2)? * scale)?; // (B, R)
            let mut w = candle_nn::ops::sigmoid(&logits)?;
            if let Some(c) = compete {
                let c = c.to_dtype(w.dtype())?;
                let masked = (&logits + ((&c - 1.0)? * 1e4)?)?;
                let soft = (candle_nn::ops::softmax_last_dim(&masked)? * &c)?;
                let f = c.max_keepdim(1)?; // (B, 1): 1 where the row competes
                w = (soft.broadcast_mul(&f)? + w.broadcast_mul(&(1.0 - &f)?)?)?;
            }
            let mut w = (w * region_valid)?;
            select_weights = Some(w.clone());
            if let Some((f, alpha)) = forced {
                w = ((f.to_dtype(w.dtype())? * alpha)? + (w * (1.0 - alpha))?)?;
            }
            let w = (w * region_valid)?;
            // Dense prompt: Σ_r w_r · (fraction of each grid cell inside box r).
            let cov = box_coverage(region_boxes, gh, gw)?; // (B, R, gh·gw)
            coverage_map = Some(
                w.unsqueeze(1)?
                    .matmul(&cov.to_dtype(w.dtype())?)?
                    .reshape((b, 1, gh, gw))?,
            );
            let corners = self
                .prompt_encoder
                .embed_boxes(&region_boxes.reshape((b * r, 4))?)?
                .reshape((b, r, 2, d))?;
            let corners =
                corners
                    .broadcast_mul(&w.reshape((b, r, 1, 1))?)?
                    .reshape((b, 2 * r, d))?;
            sparse.push(corners);
            // "Is there a target" also reads the best region score: an expression that
            // selects no proposal refers to nothing (padding excluded).
            let masked = (&logits + ((region_valid - 1.0)? * 1e4)?)?;
            target_logit = (target_logit + masked.max(1)?)?;
            logits
        } else {
            Tensor::zeros((b, 0), self.dtype, &self.device)?
        };
        let sparse = Tensor::cat(&sparse, 1)?;
        let pe = self
            .prompt_encoder
            .shared_embedding
            .grid(gh, gw, &self.device)?
            .to_dtype(self.dtype)?;
        let no_mask = self.prompt_encoder.dense_no_mask()?;
        let dense_prompt = match coverage_map {
            Some(m) => {
                let e = self.region_mask_embed.reshape((1, d, 1, 1))?;
                m.broadcast_mul(&e)?.broadcast_add(&no_mask)?
            }
            None => no_mask,
        };
        let out = self
            .decoder
            .forward(dense, &pe, &sparse, &dense_prompt, Some(skips))?;
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

    /// Segments `expression` at `granularity` in an encoded image.
    pub fn segment(
        &self,
        enc: &EncodedImage,
        expression: &str,
        granularity: Granularity,
    ) -> Result<Segmentation> {
        self.segment_with_threshold(enc, expression, granularity, self.cfg.no_target_threshold)
    }

    /// [`UniRes::segment`] with `no_target_threshold` in place of the configured one: the
    /// result is empty when its score is below it (`f32::NEG_INFINITY`: never empty by the
    /// score, e.g. to calibrate the threshold on held-out data).
    pub fn segment_with_threshold(
        &self,
        enc: &EncodedImage,
        expression: &str,
        granularity: Granularity,
        no_target_threshold: f32,
    ) -> Result<Segmentation> {
        let n_obj = enc.proposals.objects.len();
        let n_part = enc.proposals.parts.len();
        let prompt = self.prompt.build(expression, n_obj, n_part)?;
        let n_img = enc.image_tokens.dim(0)?;
        let seq = prompt.expanded_len(n_img);
        if seq + 2 > self.cfg.llm.max_position_embeddings {
            return Err(Error::PromptTooLong {
                tokens: seq + 2,
                max: self.cfg.llm.max_position_embeddings,
            });
        }
        let embeds = self
            .prompt_embeddings(&prompt, &enc.image_tokens, &enc.region_tokens)?
            .unsqueeze(0)?;
        let mut cache = KvCache::new(self.cfg.llm.num_hidden_layers);
        let hidden = self.llm.forward(&embeds, &mut cache)?; // (1, S, H)
        let last = hidden.i((.., seq - 1, ..))?;
        let (gran_ids, seg_id) = self.answer_ids();
        let gl = self
            .llm
            .logits_for(&last, &gran_ids)?
            .to_dtype(DType::F32)?; // (1, 3)
        let probs = candle_nn::ops::softmax_last_dim(&gl)?
            .squeeze(0)?
            .to_vec1::<f32>()?;
        let chosen = granularity.index().unwrap_or_else(|| Self::argmax(&probs));
        let answer = Tensor::new(&[gran_ids[chosen], seg_id], &self.device)?.unsqueeze(0)?;
        let answer = self.llm.embed(&answer)?;
        let h2 = self.llm.forward(&answer, &mut cache)?; // (1, 2, H)
        let seg_hidden = h2.i((.., 1, ..))?;

        let positions: Vec<u32> = prompt
            .objects_at
            .iter()
            .chain(prompt.parts_at.iter())
            .map(|&i| prompt.expanded_pos(i, n_img) as u32)
            .collect();
        let r = positions.len();
        let region_hidden = if r > 0 {
            let idx = Tensor::new(positions.as_slice(), &self.device)?;
            hidden.squeeze(0)?.index_select(&idx, 0)?.unsqueeze(0)?
        } else {
            Tensor::zeros((1, 0, self.cfg.llm.hidden_size), self.dtype, &self.device)?
        };
        let valid = Tensor::ones((1, r), self.dtype, &self.device)?;
        let g = Granularity::from_index(chosen).unwrap_or(Granularity::Object);
        let compete = Tensor::from_vec(self.compete_row(g, n_obj, n_part), (1, r), &self.device)?;
        let out = self.head(
            &seg_hidden,
            &region_hidden,
            &valid,
            &enc.region_boxes.unsqueeze(0)?,
            &enc.dense,
            (&enc.skips.0, &enc.skips.1),
            Some(&compete),
            None,
        )?;
        let target = candle_nn::ops::sigmoid(&out.target_logit.to_dtype(DType::F32)?)?
            .squeeze(0)?
            .to_scalar::<f32>()?;
        let probs3 = [probs[0], probs[1], probs[2]];
        let (hh, ww) = (enc.height as usize, enc.width as usize);
        if target < no_target_threshold {
            return Ok(Segmentation {
                mask: Mask::zeros(hh, ww),
                instances: Vec::new(),
                granularity: g,
                score: target,
                granularity_probs: probs3,
            });
        }
        let logits = out.masks.i((.., chosen, .., ..))?.to_dtype(DType::F32)?; // (1, 4h, 4w)
        let geo = &enc.geometry;
        let resize = MaskResize {
            padded: (geo.padded_h, geo.padded_w),
            valid: (geo.resized_h, geo.resized_w),
            orig: (hh, ww),
        };
        let mut masks = upsample_masks(&logits, &resize)?;
        let data = masks
            .pop()
            .ok_or_else(|| Error::shape("segment", "no mask produced"))?;
        let mask = Mask::from_vec(hh, ww, data)?;
        let select: Vec<f32> = if r > 0 {
            candle_nn::ops::sigmoid(&out.select_logits.to_dtype(DType::F32)?)?
                .squeeze(0)?
                .to_vec1()?
        } else {
            Vec::new()
        };
        let instances = self.instances(&mask, g, target, &enc.proposals, &select);
        Ok(Segmentation {
            mask,
            instances,
            granularity: g,
            score: target,
            granularity_probs: probs3,
        })
    }

    /// Splits a union mask into instances: selected object proposals for multi-object
    /// queries (connected components when none is selected), the whole mask otherwise.
    fn instances(
        &self,
        mask: &Mask,
        g: Granularity,
        score: f32,
        p: &Proposals,
        select: &[f32],
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
        let mut out = Vec::new();
        for (i, b) in p.objects.iter().enumerate() {
            let s = select.get(i).copied().unwrap_or(0.0);
            if s < self.cfg.instance_threshold {
                continue;
            }
            let mut m = Mask::zeros(mask.height(), mask.width());
            let (x1, y1) = (
                b.x1.floor().max(0.0) as usize,
                b.y1.floor().max(0.0) as usize,
            );
            let x2 = (b.x2.ceil() as usize).min(mask.width());
            let y2 = (b.y2.ceil() as usize).min(mask.height());
            for y in y1..y2 {
                for x in x1..x2 {
                    if mask.get(y, x) {
                        m.set(y, x, true);
                    }
                }
            }
            if let Some(inst) = whole(&m, s) {
                out.push(inst);
            }
        }
        if out.is_empty() {
            out = crate::types::connected_components(mask)
                .into_iter()
                .filter_map(|m| whole(&m, score))
                .collect();
        }
        out
    }

    /// Index of the largest value (ties → first).
    pub fn argmax(v: &[f32]) -> usize {
        v.iter()
            .enumerate()
            .fold(
                (0usize, f32::MIN),
                |acc, (i, &p)| if p > acc.1 { (i, p) } else { acc },
            )
            .0
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
