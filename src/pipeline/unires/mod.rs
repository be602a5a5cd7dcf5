//! The one path through the UniRES++ graph, shared by inference and training:
//! encode (both views, vision blocks, region tokens) → prompt → prefill → granularity and
//! `[SEG]` → head → masks → instances. Inference ([`UniRes::segment`]) prefills one query
//! and appends the answer it chose through the KV cache; training
//! (`crate::train::batch`) runs the same stages on a batch with the answers teacher-forced.

pub mod encode;
pub mod output;
pub mod prefix;
pub mod query;

use candle_core::{DType, IndexOp};
use image::RgbImage;

pub use encode::{
    cap_proposals, encode, encode_batch, whole_image_box, EncodedBatch, EncodedImage, RegionLayout,
};
pub use prefix::PromptPrefix;
pub use query::{prompt_query, Answered, QueryPrompt, QueryRegions, RegionRows};

use crate::config::Quantization;
use crate::error::Result;
use crate::model::llm::QuantReport;
use crate::model::unires::{HeadInputs, UniRes};
use crate::ops::upsample::MaskResize;
use crate::pipeline::{profile, tensor_bytes, Encoded, Family, Segmenter};
use crate::types::{Granularity, Mask, Proposals, Segmentation};

impl UniRes {
    /// Encodes an image and its proposals (original pixel coordinates) once.
    pub fn encode(&self, image: &RgbImage, proposals: &Proposals) -> Result<EncodedImage> {
        encode::encode(self, image, proposals)
    }

    /// Segments `expression` at `granularity` in an encoded image.
    pub fn segment(
        &self,
        enc: &EncodedImage,
        expression: &str,
        granularity: Granularity,
    ) -> Result<Segmentation> {
        self.segment_with_threshold(
            enc,
            expression,
            granularity,
            self.config().no_target_threshold,
        )
    }

    /// Segments several expressions at `granularity` in one encoded image (see
    /// [`Segmenter::segment_many`]): each query prefills only its own tokens after the
    /// image's cached prompt prefix.
    pub fn segment_many(
        &self,
        enc: &EncodedImage,
        expressions: &[&str],
        granularity: Granularity,
    ) -> Vec<Result<Segmentation>> {
        expressions
            .iter()
            .map(|e| self.segment(enc, e, granularity))
            .collect()
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
        let q = profile::stage("prompt", || {
            query::prompt_query(
                self,
                &enc.image_tokens,
                &enc.region_tokens,
                expression,
                (n_obj, n_part),
            )
        })?;
        let Answered {
            hidden,
            probs: granularity_probs,
            chosen,
            seg: seg_hidden,
        } = profile::stage("llm_query", || {
            query::answer_query(self, &q, granularity, enc.prefix.as_ref())
        })?;
        let g = Granularity::from_index(chosen).unwrap_or(Granularity::Object);
        let head = || -> Result<_> {
            let rows = query::region_rows(
                self,
                &hidden,
                &[QueryRegions {
                    positions: &q.region_positions,
                    boxes: &enc.region_boxes,
                    n_objects: n_obj,
                    n_parts: n_part,
                    granularity: g,
                }],
            )?;
            let valid = rows.valid.to_dtype(self.dtype())?;
            let out = self.head(&HeadInputs {
                seg_hidden: &seg_hidden,
                region_hidden: &rows.hidden,
                region_valid: &valid,
                region_boxes: &rows.boxes,
                dense: &enc.dense,
                skips: (&enc.skips.0, &enc.skips.1),
                compete: Some(&rows.compete),
                forced: None,
            })?;
            let score = candle_nn::ops::sigmoid(&out.target_logit.to_dtype(DType::F32)?)?
                .squeeze(0)?
                .to_scalar::<f32>()?;
            Ok((rows, out, score))
        };
        let (rows, out, score) = profile::stage("head", head)?;
        let (hh, ww) = (enc.height as usize, enc.width as usize);
        let regions = if rows.width()? > 0 {
            let w: Vec<f32> = out
                .select_weights
                .to_dtype(DType::F32)?
                .squeeze(0)?
                .to_vec1()?;
            output::region_weights(&enc.proposals, &w)
        } else {
            Vec::new()
        };
        if score < no_target_threshold {
            return Ok(Segmentation {
                mask: Mask::zeros(hh, ww),
                instances: Vec::new(),
                granularity: g,
                score,
                granularity_probs,
                regions,
            });
        }
        let logits = out.masks.i((.., chosen, .., ..))?.to_dtype(DType::F32)?; // (1, 4h, 4w)
        let geo = &enc.geometry;
        let resize = MaskResize {
            padded: (geo.padded_h, geo.padded_w),
            valid: (geo.resized_h, geo.resized_w),
            orig: (hh, ww),
        };
        let mask = profile::stage("upsample", || output::full_mask(&logits, &resize))?;
        let instances = profile::stage("instances", || -> Result<_> {
            let select: Vec<f32> = if rows.width()? > 0 {
                candle_nn::ops::sigmoid(&out.select_logits.to_dtype(DType::F32)?)?
                    .squeeze(0)?
                    .to_vec1()?
            } else {
                Vec::new()
            };
            Ok(output::instances(
                &mask,
                g,
                score,
                &enc.proposals,
                &select,
                self.config().instance_threshold,
            ))
        })?;
        Ok(Segmentation {
            mask,
            instances,
            granularity: g,
            score,
            granularity_probs,
            regions,
        })
    }
}

impl Segmenter for UniRes {
    fn family(&self) -> Family {
        Family::UniRes
    }

    fn limits(&self) -> &crate::config::Limits {
        &self.config().limits
    }

    fn no_target_threshold(&self) -> f32 {
        self.config().no_target_threshold
    }

    fn quantize(&mut self, format: Quantization) -> Result<QuantReport> {
        self.quantize_llm(format)
    }

    fn encode(&self, image: &RgbImage, proposals: &Proposals) -> Result<Encoded> {
        let enc = UniRes::encode(self, image, proposals)?;
        let bytes = [
            &enc.image_tokens,
            &enc.region_tokens,
            &enc.region_boxes,
            &enc.dense,
            &enc.skips.0,
            &enc.skips.1,
        ]
        .into_iter()
        .map(tensor_bytes)
        .sum::<usize>()
            + enc.prefix.as_ref().map_or(0, PromptPrefix::bytes);
        Ok(Encoded::new(
            Family::UniRes,
            enc.width,
            enc.height,
            enc.proposals.clone(),
            enc,
        )
        .with_bytes(bytes))
    }

    fn segment_with_threshold(
        &self,
        encoded: &Encoded,
        expression: &str,
        granularity: Granularity,
        no_target_threshold: f32,
    ) -> Result<Segmentation> {
        let enc = encoded.get::<EncodedImage>(Family::UniRes)?;
        UniRes::segment_with_threshold(self, enc, expression, granularity, no_target_threshold)
    }
}
