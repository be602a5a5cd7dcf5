//! The path from an image and a phrase to masks, and the seam between model families.
//!
//! A family (a graph with its checkpoints) implements [`Segmenter`]: `encode` an image and
//! its proposals once, then `segment` as many expressions as wanted. The CLI and the
//! evaluation only speak to this trait, and [`load_segmenter`] picks the family from the
//! checkpoint's `config.json` ([`Family::detect`]), so a second family plugs in beside
//! [`unires`] without touching it.

pub mod evf_sam;
pub mod preprocess;
pub mod profile;
pub mod unires;

use std::any::Any;

use candle_core::{DType, Device};
use image::RgbImage;

use crate::config::{Limits, Quantization};
use crate::error::{Error, Result};
use crate::model::llm::QuantReport;
use crate::types::{Granularity, Proposals, Segmentation};
use crate::weights::hub::HubOptions;
use crate::weights::source::{read_config, Source};

/// The model families the crate knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// The UniRES++ graph (the embedded `tiny` model, `base` assembled from public parts).
    UniRes,
    /// EVF-SAM (BEiT-3 + SAM ViT-H), from its published checkpoints.
    EvfSam,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::UniRes => "unires",
            Family::EvfSam => "evf-sam",
        }
    }

    /// Which family a checkpoint's `config.json` describes: an explicit `"family"` field
    /// (`"unires"`, `"evf-sam"`) wins; otherwise EVF-SAM's published config is recognised by
    /// its `mm_extractor_scale` and `sam_scale` fields, and a unires config by its `version`.
    pub fn detect(what: &str, config_json: &str) -> Result<Family> {
        let bad = |reason: String| Error::Config {
            what: what.into(),
            reason,
        };
        let v: serde_json::Value =
            serde_json::from_str(config_json).map_err(|e| bad(e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("config.json is not a JSON object".into()))?;
        if let Some(f) = obj.get("family") {
            return match f.as_str() {
                Some("unires") => Ok(Family::UniRes),
                Some("evf-sam") => Ok(Family::EvfSam),
                _ => Err(bad(format!(
                    "unknown model family {f} (known: \"unires\", \"evf-sam\")"
                ))),
            };
        }
        if obj.contains_key("mm_extractor_scale") && obj.contains_key("sam_scale") {
            return Ok(Family::EvfSam);
        }
        if obj.contains_key("version") {
            return Ok(Family::UniRes);
        }
        Err(bad(
            "cannot tell the model family: no \"family\" field, no unires \"version\", and not \
             an EVF-SAM config (mm_extractor_scale, sam_scale)"
                .into(),
        ))
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An image encoded by a [`Segmenter`]: its size and proposals, and the family's own
/// features (opaque here; the family that made it reads them back).
pub struct Encoded {
    family: Family,
    /// Original image width and height.
    pub width: u32,
    pub height: u32,
    /// The proposals used (validated, clipped, capped), original coordinates.
    pub proposals: Proposals,
    features: Box<dyn Any + Send + Sync>,
    /// Approximate memory held by the features (for caches).
    bytes: usize,
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoded")
            .field("family", &self.family)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("proposals", &self.proposals)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl Encoded {
    pub fn new<T: Any + Send + Sync>(
        family: Family,
        width: u32,
        height: u32,
        proposals: Proposals,
        features: T,
    ) -> Self {
        Self {
            family,
            width,
            height,
            proposals,
            features: Box::new(features),
            bytes: 0,
        }
    }

    /// The same, stating the memory its features hold (what a frame cache counts).
    pub fn with_bytes(mut self, bytes: usize) -> Self {
        self.bytes = bytes;
        self
    }

    /// Approximate memory held by the features, as the family stated it.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The family that encoded the image.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The family's features; an error when `family` did not make them.
    pub fn get<T: Any>(&self, family: Family) -> Result<&T> {
        let wrong = || Error::WrongFamily {
            expected: family.as_str(),
            got: self.family.as_str(),
        };
        if self.family != family {
            return Err(wrong());
        }
        self.features.downcast_ref::<T>().ok_or_else(wrong)
    }
}

/// Bytes held by a tensor's elements.
pub fn tensor_bytes(t: &candle_core::Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

/// A referring segmentation model: encode an image once, segment many expressions.
pub trait Segmenter: Send + Sync {
    /// The family this model belongs to.
    fn family(&self) -> Family;

    /// Input limits (image size, expression length).
    fn limits(&self) -> &Limits;

    /// The score below which a result is empty ("nothing matches").
    fn no_target_threshold(&self) -> f32;

    /// Whether [`Segmenter::encode`] uses the proposals (a family that does not, such as
    /// EVF-SAM, takes an empty set and callers can skip computing them).
    fn uses_proposals(&self) -> bool {
        true
    }

    /// Quantises the model's large linear weights to `format` for inference (UniRES++: the
    /// LLM's decoder layers). A family without a quantised path says so with
    /// [`Error::UnsupportedQuantization`].
    fn quantize(&mut self, format: Quantization) -> Result<QuantReport> {
        let _ = format;
        Err(Error::UnsupportedQuantization {
            family: self.family().as_str(),
            reason: "this family has no quantised path",
        })
    }

    /// Encodes an image and its proposals (original pixel coordinates).
    fn encode(&self, image: &RgbImage, proposals: &Proposals) -> Result<Encoded>;

    /// Segments `expression` at `granularity` in an image this model encoded, with
    /// `no_target_threshold` in place of the configured threshold (`f32::NEG_INFINITY`: never
    /// empty by the score).
    fn segment_with_threshold(
        &self,
        encoded: &Encoded,
        expression: &str,
        granularity: Granularity,
        no_target_threshold: f32,
    ) -> Result<Segmentation>;

    /// Segments `expression` at `granularity` with the configured no-target threshold.
    fn segment(
        &self,
        encoded: &Encoded,
        expression: &str,
        granularity: Granularity,
    ) -> Result<Segmentation> {
        let t = self.no_target_threshold();
        self.segment_with_threshold(encoded, expression, granularity, t)
    }

    /// Segments several expressions at `granularity` in one encoded image: one result per
    /// expression, in order, each as [`Segmenter::segment`] gives it (a bad expression fails
    /// alone). The image's features, and for UniRES++ the prompt prefix, are computed once.
    fn segment_many(
        &self,
        encoded: &Encoded,
        expressions: &[&str],
        granularity: Granularity,
    ) -> Vec<Result<Segmentation>> {
        expressions
            .iter()
            .map(|e| self.segment(encoded, e, granularity))
            .collect()
    }
}

/// Loads the model in `source`, of the family its `config.json` names, onto `device` in
/// `dtype`; the hub is reached with the options the environment gives.
pub fn load_segmenter(
    source: &Source,
    device: &Device,
    dtype: DType,
) -> Result<Box<dyn Segmenter>> {
    load_segmenter_with(source, &HubOptions::from_env(), device, dtype)
}

/// [`load_segmenter`] with explicit hub options.
pub fn load_segmenter_with(
    source: &Source,
    hub: &HubOptions,
    device: &Device,
    dtype: DType,
) -> Result<Box<dyn Segmenter>> {
    let (what, text) = read_config(source, hub)?;
    match Family::detect(&what, &text)? {
        Family::UniRes => Ok(Box::new(crate::model::unires::load::load_with(
            source, hub, device, dtype,
        )?)),
        Family::EvfSam => Ok(Box::new(crate::model::evf_sam::load::load_with(
            source, hub, device, dtype,
        )?)),
    }
}
