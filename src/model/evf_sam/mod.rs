//! EVF-SAM (arXiv 2406.20076): BEiT-3 reads the image (at 224²) and the expression together;
//! its vision CLS state, projected by `text_hidden_fcs`, is the one sparse prompt of SAM, whose
//! ViT image encoder and mask decoder make the mask.
//!
//! Tensor names are the published checkpoint's (`visual_model.*` in segment-anything's names,
//! `mm_extractor.beit3.*` in torchscale's, `text_hidden_fcs.0.{0,2}`). The mask decoder and
//! prompt encoder are the shared SAM blocks of [`crate::model::mask_decoder`], which use HF's
//! names: a renamer maps them onto segment-anything's, with the same table the UniRES++
//! importer uses ([`crate::weights::rename`]). Parts of the checkpoint EVF-SAM never runs (the
//! mask-prompt convolutions, the point embeddings, BEiT-3's mask token) are still requested
//! with their shapes, so that loading checks the file's key set exactly.

pub mod load;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::config::{Beit3Config, EvfSamConfig, SamImageEncoderConfig};
use crate::error::{Error, Result};
use crate::model::beit3::Beit3;
use crate::model::mask_decoder::{PromptEncoder, SamMaskDecoder};
use crate::model::nn::Linear;
use crate::model::sam_image_encoder::SamImageEncoder;
use crate::weights::rename::layout_by_name;

/// Prefix of SAM's tensors in an EVF-SAM checkpoint.
pub const SAM_PREFIX: &str = "visual_model";
/// Prefix of BEiT-3's tensors.
pub const BEIT3_PREFIX: &str = "mm_extractor.beit3";

/// The EVF-SAM graph.
#[derive(Debug)]
pub struct EvfSam {
    pub config: EvfSamConfig,
    pub beit3_config: Beit3Config,
    pub sam_config: SamImageEncoderConfig,
    pub image_encoder: SamImageEncoder,
    pub beit3: Beit3,
    /// `text_hidden_fcs.0.0`: BEiT width → BEiT width (then ReLU).
    fc0: Linear,
    /// `text_hidden_fcs.0.2`: BEiT width → prompt width.
    fc2: Linear,
    pub prompt_encoder: PromptEncoder,
    pub mask_decoder: SamMaskDecoder,
    dtype: DType,
    device: Device,
}

/// A `VarBuilder` that asks for the shared SAM blocks' HF names and reads segment-anything's.
fn sam_names<'a>(vb: &VarBuilder<'a>) -> Result<VarBuilder<'a>> {
    let layout = layout_by_name("segment-anything").ok_or_else(|| Error::Config {
        what: "EVF-SAM".into(),
        reason: "the segment-anything name table is missing".into(),
    })?;
    Ok(vb.clone().rename_f(move |ours: &str| {
        let published = layout
            .to_published(ours)
            .unwrap_or_else(|| ours.to_string());
        format!("{SAM_PREFIX}.{published}")
    }))
}

/// Requests checkpoint tensors EVF-SAM never runs, so that the key set is checked exactly.
fn request_unused(vb: &VarBuilder, cfg: &EvfSamConfig) -> Result<()> {
    let d = cfg.out_dim;
    let c = cfg.sam_decoder().mask_in_chans;
    let quarter = c / 4;
    let pe = vb.pp(SAM_PREFIX).pp("prompt_encoder");
    let md = pe.pp("mask_downscaling");
    let unused: Vec<(Vec<usize>, VarBuilder, &str)> = vec![
        (vec![quarter, 1, 2, 2], md.pp("0"), "weight"),
        (vec![quarter], md.pp("0"), "bias"),
        (vec![quarter], md.pp("1"), "weight"),
        (vec![quarter], md.pp("1"), "bias"),
        (vec![c, quarter, 2, 2], md.pp("3"), "weight"),
        (vec![c], md.pp("3"), "bias"),
        (vec![c], md.pp("4"), "weight"),
        (vec![c], md.pp("4"), "bias"),
        (vec![d, c, 1, 1], md.pp("6"), "weight"),
        (vec![d], md.pp("6"), "bias"),
        (vec![1, d], pe.pp("point_embeddings.0"), "weight"),
        (vec![1, d], pe.pp("point_embeddings.1"), "weight"),
        (vec![1, d], pe.pp("not_a_point_embed"), "weight"),
    ];
    for (shape, vb, name) in unused {
        vb.get(shape, name)?;
    }
    Ok(())
}

impl EvfSam {
    /// Builds the graph from a `VarBuilder` over the published tensor names.
    pub fn new(cfg: &EvfSamConfig, vb: VarBuilder<'_>) -> Result<Self> {
        let what = "EVF-SAM config";
        cfg.validate(what)?;
        let beit3_config = cfg.beit3(what)?;
        let sam_config = cfg.sam_image_encoder(what)?;
        let dec = cfg.sam_decoder();
        let image_encoder =
            SamImageEncoder::new(&sam_config, vb.pp(SAM_PREFIX).pp("image_encoder"))?;
        let beit3 = Beit3::new(&beit3_config, vb.pp(BEIT3_PREFIX))?;
        let fcs = vb.pp("text_hidden_fcs.0");
        let h = cfg.hidden_size;
        let fc0 = Linear::new(h, h, true, fcs.pp("0"))?;
        let fc2 = Linear::new(h, cfg.out_dim, true, fcs.pp("2"))?;
        let sam = sam_names(&vb)?;
        let prompt_encoder = PromptEncoder::new(dec.prompt_embed_dim, sam.pp("prompt_encoder"))?;
        let mask_decoder = SamMaskDecoder::new(&dec.mask_decoder(), sam.pp("mask_decoder"))?;
        request_unused(&vb, cfg)?;
        Ok(Self {
            config: cfg.clone(),
            beit3_config,
            sam_config,
            image_encoder,
            beit3,
            fc0,
            fc2,
            prompt_encoder,
            mask_decoder,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// SAM's image embedding of a preprocessed `(B, 3, S, S)` input: `(B, D, g, g)`.
    pub fn image_embeddings(&self, images_sam: &Tensor) -> Result<Tensor> {
        self.image_encoder
            .forward(&images_sam.to_dtype(self.dtype)?)
    }

    /// The sparse prompt: BEiT-3 over the `(B, 3, b, b)` image and the `(B, T)` token ids,
    /// the vision CLS state through `text_hidden_fcs` → `(B, 1, out_dim)`.
    pub fn text_embeds(&self, images_evf: &Tensor, input_ids: &Tensor) -> Result<Tensor> {
        let cls = self
            .beit3
            .cls(&images_evf.to_dtype(self.dtype)?, input_ids, None)?
            .unsqueeze(1)?;
        let x = self.fc0.forward(&cls)?.relu()?;
        self.fc2.forward(&x)
    }

    /// Low-resolution mask logits `(B, 1, 4g, 4g)` (mask token 0, `multimask_output=False`)
    /// from image embeddings `(B, D, g, g)` and sparse prompts `(B, 1, D)`.
    pub fn low_res_masks(&self, image_embeddings: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = image_embeddings.dims4()?;
        if text_embeds.dim(0)? != b {
            return Err(Error::shape(
                "EVF-SAM decoder",
                format!("{} prompts for {b} image embeddings", text_embeds.dim(0)?),
            ));
        }
        let dtype = image_embeddings.dtype();
        let pe = self.prompt_encoder.dense_pe(h, w, dtype)?;
        let dense = self.prompt_encoder.dense_no_mask()?.to_dtype(dtype)?;
        let out = self.mask_decoder.forward(
            image_embeddings,
            &pe,
            &text_embeds.to_dtype(dtype)?,
            &dense,
            None,
        )?;
        Ok(out.masks.narrow(1, 0, 1)?)
    }
}
