//! The EVF-SAM path: encode an image once (SAM's image embedding and BEiT-3's 224² input),
//! then per expression BEiT-3 over image and text → one prompt token → SAM's mask decoder →
//! mask logits at the original size → mask and instances.
//!
//! Granularity. EVF-SAM has no granularity head, so the granularity picks the query text:
//! * object, and `Auto` (always object): the plain expression;
//! * part and multi, on the multitask checkpoint: `"[semantic] " + expression`, the prefix of
//!   its part and semantic training data; multi splits the mask into connected components;
//! * on the plain checkpoint, part is [`Error::UnsupportedGranularity`] (it never saw parts)
//!   and multi falls back to the plain expression, split into connected components.
//!
//! Score. EVF-SAM has no no-target signal (trained without negatives, IoU head untrained):
//! `score` is the mean mask probability over the pixels of the mask (0 when the mask is
//! empty), a confidence in the mask's pixels, not a probability that the target exists. A
//! result is empty when the mask is empty, or when the caller passes a threshold above the
//! score. `granularity_probs` is the one-hot of the granularity used.

pub mod preprocess;

use candle_core::{DType, Tensor};
use image::RgbImage;

use crate::config::Limits;
use crate::error::{Error, Result};
use crate::io::image::check_size;
use crate::model::evf_sam::load::{EvfSamModel, SEMANTIC_TOKEN};
use crate::ops::upsample::{upsample_mask_logits, upsample_masks_and_probs, MaskResize};
use crate::pipeline::{tensor_bytes, Encoded, Family, Segmenter};
use crate::types::{connected_components, Granularity, Instance, Mask, Proposals, Segmentation};

pub use preprocess::{preprocess_beit3, preprocess_sam, SamInput};

/// An image encoded by EVF-SAM.
#[derive(Debug, Clone)]
pub struct EvfEncoded {
    /// SAM's image embedding `(1, D, g, g)`.
    pub image_embeddings: Tensor,
    /// BEiT-3's image input `(1, 3, b, b)`.
    pub images_evf: Tensor,
    /// From the decoder's output back to the original image.
    pub resize: MaskResize,
}

/// The text EVF-SAM is given for an expression, and the granularity it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvfQuery {
    pub text: String,
    pub granularity: Granularity,
}

impl EvfSamModel {
    /// Encodes an image: both branches' preprocessing and SAM's image encoder (the costly
    /// part, done once per image).
    pub fn encode_image(&self, image: &RgbImage) -> Result<EvfEncoded> {
        check_size(image.width(), image.height(), &self.limits)?;
        let dev = self.graph.device();
        let sam = preprocess_sam(image, self.graph.sam_config.img_size, dev)?;
        let image_embeddings = self.graph.image_embeddings(&sam.pixels)?;
        let images_evf = preprocess_beit3(image, self.graph.beit3_config.img_size, dev)?;
        Ok(EvfEncoded {
            image_embeddings,
            images_evf,
            resize: sam.mask_resize(),
        })
    }

    /// Which text is sent for `expression` at `granularity` (see the module docs).
    pub fn query(&self, expression: &str, granularity: Granularity) -> Result<EvfQuery> {
        let e = expression.trim();
        if e.is_empty() {
            return Err(Error::EmptyExpression);
        }
        let chars = e.chars().count();
        if chars > self.limits.max_expression_chars {
            return Err(Error::ExpressionTooLong {
                chars,
                max: self.limits.max_expression_chars,
            });
        }
        if let Some((t, _)) = self.tokenizer.split_tokens().find(|(t, _)| e.contains(t)) {
            return Err(Error::ExpressionHasSpecialToken {
                token: t.to_string(),
            });
        }
        let semantic = |g| EvfQuery {
            text: format!("{SEMANTIC_TOKEN} {e}"),
            granularity: g,
        };
        let plain = |g| EvfQuery {
            text: e.to_string(),
            granularity: g,
        };
        Ok(match (granularity, self.multitask) {
            (Granularity::Object | Granularity::Auto, _) => plain(Granularity::Object),
            (Granularity::Part, true) => semantic(Granularity::Part),
            (Granularity::MultiObject, true) => semantic(Granularity::MultiObject),
            (Granularity::MultiObject, false) => plain(Granularity::MultiObject),
            (Granularity::Part, false) => {
                return Err(Error::UnsupportedGranularity {
                    family: Family::EvfSam.as_str(),
                    granularity: "part",
                    reason: "only the multitask checkpoint (YxZhang/evf-sam-multitask) segments \
                             parts",
                })
            }
        })
    }

    /// Token ids of `text` (`<s> … </s>`), checked against BEiT-3's text positions.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        let ids = self.tokenizer.encode(text, true)?;
        let max = self.graph.beit3_config.max_text_tokens();
        if ids.len() > max {
            return Err(Error::PromptTooLong {
                tokens: ids.len(),
                max,
            });
        }
        Ok(ids)
    }

    /// Low-resolution mask logits `(1, 1, 4g, 4g)` for token ids in an encoded image.
    pub fn low_res_logits(&self, enc: &EvfEncoded, ids: &[u32]) -> Result<Tensor> {
        let dev = self.graph.device();
        let ids = Tensor::from_slice(ids, (1, ids.len()), dev)?;
        let text = self.graph.text_embeds(&enc.images_evf, &ids)?;
        self.graph.low_res_masks(&enc.image_embeddings, &text)
    }

    /// Mask logits at the original image size `(1, H, W)`, f32 (the reference's `pred_mask`).
    pub fn mask_logits(&self, enc: &EvfEncoded, ids: &[u32]) -> Result<Tensor> {
        let low = self.low_res_logits(enc, ids)?;
        upsample_mask_logits(&low.squeeze(1)?.to_dtype(DType::F32)?, &enc.resize)
    }

    /// Segments an encoded image (see the module docs for granularity and score).
    pub fn segment_encoded(
        &self,
        enc: &EvfEncoded,
        expression: &str,
        granularity: Granularity,
        threshold: f32,
    ) -> Result<Segmentation> {
        let q = self.query(expression, granularity)?;
        let ids = self.token_ids(&q.text)?;
        let low = self.low_res_logits(enc, &ids)?;
        let low = low.squeeze(1)?.to_dtype(DType::F32)?;
        let (mut masks, probs) = upsample_masks_and_probs(&low, &enc.resize)?;
        let data = masks
            .pop()
            .ok_or_else(|| Error::shape("EVF-SAM", "no mask produced"))?;
        let (h, w) = enc.resize.orig;
        let probs = probs.flatten_all()?.to_vec1::<f32>()?;
        let (sum, n) = data
            .iter()
            .zip(&probs)
            .filter(|(m, _)| **m != 0)
            .fold((0f64, 0usize), |(s, n), (_, p)| (s + *p as f64, n + 1));
        let score = if n == 0 { 0.0 } else { (sum / n as f64) as f32 };
        let mut mask = Mask::from_vec(h, w, data)?;
        if score < threshold {
            mask = Mask::zeros(h, w);
        }
        let instances = instances(&mask, q.granularity, score);
        let mut granularity_probs = [0f32; 3];
        if let Some(i) = q.granularity.index() {
            granularity_probs[i] = 1.0;
        }
        Ok(Segmentation {
            mask,
            instances,
            granularity: q.granularity,
            score,
            granularity_probs,
            regions: Vec::new(),
        })
    }
}

/// One instance for part and object, connected components for multi.
fn instances(mask: &Mask, g: Granularity, score: f32) -> Vec<Instance> {
    let whole = |m: Mask| {
        m.bbox().map(|bbox| Instance {
            mask: m,
            bbox,
            score,
        })
    };
    if mask.is_empty() {
        return Vec::new();
    }
    if g == Granularity::MultiObject {
        return connected_components(mask)
            .into_iter()
            .filter_map(whole)
            .collect();
    }
    whole(mask.clone()).into_iter().collect()
}

impl Segmenter for EvfSamModel {
    fn family(&self) -> Family {
        Family::EvfSam
    }

    fn limits(&self) -> &Limits {
        &self.limits
    }

    /// EVF-SAM has no no-target score: a result is empty only when its mask is.
    fn no_target_threshold(&self) -> f32 {
        f32::NEG_INFINITY
    }

    fn uses_proposals(&self) -> bool {
        false
    }

    /// Proposals are not used by EVF-SAM; the encoding keeps none.
    fn encode(&self, image: &RgbImage, _proposals: &Proposals) -> Result<Encoded> {
        let enc = self.encode_image(image)?;
        let bytes = tensor_bytes(&enc.image_embeddings) + tensor_bytes(&enc.images_evf);
        Ok(Encoded::new(
            Family::EvfSam,
            image.width(),
            image.height(),
            Proposals::default(),
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
        let enc = encoded.get::<EvfEncoded>(Family::EvfSam)?;
        self.segment_encoded(enc, expression, granularity, no_target_threshold)
    }
}
