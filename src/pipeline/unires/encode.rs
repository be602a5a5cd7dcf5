//! The image side of the UniRES++ path: preprocessing of both views, the vision blocks, and
//! the ROI layout of the proposals (objects first, then parts, per image), for one image at
//! inference or a batch of images in training.

use candle_core::Tensor;
use image::RgbImage;

use crate::config::UniResConfig;
use crate::error::{Error, Result};
use crate::io::image::check_size;
use crate::model::unires::UniRes;
use crate::pipeline::preprocess::{preprocess_hires, preprocess_lowres, HiresGeometry};
use crate::pipeline::profile;
use crate::pipeline::unires::prefix::PromptPrefix;
use crate::types::{BoxXyxy, Proposals};

/// Features of one image, reusable across expressions.
#[derive(Debug, Clone)]
pub struct EncodedImage {
    /// Original image width and height.
    pub width: u32,
    pub height: u32,
    /// High-res input geometry (resize and padding).
    pub geometry: HiresGeometry,
    /// The proposals used (validated, clipped to the image, capped at the model's maxima,
    /// the whole image as the object proposal when there was none: see [`cap_proposals`]),
    /// original coordinates.
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
    /// The prompt up to the last region token, prefilled once for every query on this image
    /// (`None` when the model's prefix cache is off: each query prefills its whole prompt).
    pub prefix: Option<PromptPrefix>,
}

/// Clips proposals to a `width × height` image, keeps at most the configured number of each
/// kind, and makes sure there is an object proposal.
///
/// * Non-finite and inverted boxes are errors ([`Error::BadBox`]); boxes reaching outside the
///   image are cut to it, and those left empty dropped ([`Proposals::clip_to`]; call it first
///   to see the report).
/// * **No object proposals** (none given, or all dropped): the whole image becomes the one
///   object proposal ([`whole_image_box`]). The model was trained with at least one object
///   proposal per image (the simulated detector always adds a false box), and without region
///   tokens its target score loses the best-region term it was trained with; the built-in
///   generator answers an image it cannot segment the same way. Part proposals are used as
///   given, also when there are none.
pub fn cap_proposals(
    cfg: &UniResConfig,
    p: &Proposals,
    width: u32,
    height: u32,
) -> Result<Proposals> {
    let (clipped, _report) = p.clip_to(width, height)?;
    let r = &cfg.region;
    let mut objects: Vec<BoxXyxy> = clipped.objects.into_iter().take(r.max_objects).collect();
    if objects.is_empty() {
        objects.push(whole_image_box(width, height));
    }
    Ok(Proposals::new(
        objects,
        clipped.parts.into_iter().take(r.max_parts).collect(),
    ))
}

/// The object proposal used when an image has none: `[0, 0, width, height]`.
pub fn whole_image_box(width: u32, height: u32) -> BoxXyxy {
    BoxXyxy::new(0.0, 0.0, width as f32, height as f32)
}

/// The ROI rows of a batch: for each region of each image, `[batch index, x1, y1, x2, y2]`
/// in high-res pixels, its kind, and its box normalised by the padded high-res size.
#[derive(Debug, Clone, Default)]
pub struct RegionLayout {
    /// `K × 5` values.
    pub rois: Vec<f32>,
    /// `K` [`RegionKind`](crate::types::RegionKind) indices.
    pub kinds: Vec<u32>,
    /// `K × 4` normalised boxes.
    pub boxes: Vec<f32>,
    /// Index of each image's first region.
    pub offsets: Vec<usize>,
}

impl RegionLayout {
    /// Lays out `proposals[b]` (original coordinates) of images with geometries `geos[b]`.
    pub fn new(proposals: &[Proposals], geos: &[HiresGeometry]) -> Self {
        let mut l = Self::default();
        for (b, (p, g)) in proposals.iter().zip(geos).enumerate() {
            l.offsets.push(l.kinds.len());
            let (sx, sy) = g.scale();
            let (pw, ph) = (g.padded_w as f32, g.padded_h as f32);
            for (kind, bx) in p.iter_with_kind() {
                let (x1, y1, x2, y2) = (bx.x1 * sx, bx.y1 * sy, bx.x2 * sx, bx.y2 * sy);
                l.rois.extend_from_slice(&[b as f32, x1, y1, x2, y2]);
                l.kinds.push(kind.index());
                l.boxes
                    .extend_from_slice(&[x1 / pw, y1 / ph, x2 / pw, y2 / ph]);
            }
        }
        l
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}

/// Features of a batch of images (training encodes a batch at once).
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    /// Original `(width, height)` of each image.
    pub sizes: Vec<(u32, u32)>,
    pub geometries: Vec<HiresGeometry>,
    /// The proposals used per image (see [`EncodedImage::proposals`]).
    pub proposals: Vec<Proposals>,
    /// `(B, N, H)` projected image tokens.
    pub image_tokens: Tensor,
    /// `(K, H)` region tokens of all images, laid out as [`EncodedBatch::layout`].
    pub region_tokens: Tensor,
    /// `(K, 4)` normalised region boxes, in the model's dtype.
    pub region_boxes: Tensor,
    pub layout: RegionLayout,
    /// `(B, D, h, w)` dense embedding and the two upscaling skips.
    pub dense: Tensor,
    pub skips: (Tensor, Tensor),
}

impl EncodedBatch {
    /// Number of regions of image `b`.
    pub fn regions_of(&self, b: usize) -> usize {
        self.proposals
            .get(b)
            .map_or(0, |p| p.objects.len() + p.parts.len())
    }

    /// `(k_b, H)` region tokens and `(k_b, 4)` boxes of image `b`.
    pub fn regions(&self, b: usize) -> Result<(Tensor, Tensor)> {
        let off = *self
            .layout
            .offsets
            .get(b)
            .ok_or_else(|| Error::shape("encoded batch", format!("no image {b}")))?;
        let k = self.regions_of(b);
        Ok((
            self.region_tokens.narrow(0, off, k)?,
            self.region_boxes.narrow(0, off, k)?,
        ))
    }

    /// The one image of a batch of one.
    pub fn into_single(mut self) -> Result<EncodedImage> {
        if self.sizes.len() != 1 {
            return Err(Error::shape(
                "encoded batch",
                format!("{} images, expected 1", self.sizes.len()),
            ));
        }
        let (width, height) = self.sizes[0];
        let geometry = self.geometries.remove(0);
        let proposals = self.proposals.remove(0);
        Ok(EncodedImage {
            width,
            height,
            geometry,
            proposals,
            image_tokens: self.image_tokens.squeeze(0)?,
            region_tokens: self.region_tokens,
            region_boxes: self.region_boxes,
            dense: self.dense,
            skips: self.skips,
            prefix: None,
        })
    }
}

/// Encodes images and their proposals (original pixel coordinates): both views preprocessed,
/// the vision blocks run once on the whole batch, and the region tokens pooled.
pub fn encode_batch(model: &UniRes, images: &[(&RgbImage, &Proposals)]) -> Result<EncodedBatch> {
    if images.is_empty() {
        return Err(Error::shape("encode", "no images"));
    }
    let c = model.config();
    let dev = model.device();
    let (mut lows, mut highs) = (Vec::new(), Vec::new());
    let (mut sizes, mut geometries, mut proposals) = (Vec::new(), Vec::new(), Vec::new());
    profile::stage("preprocess", || -> Result<()> {
        for (image, p) in images {
            let (w, h) = image.dimensions();
            check_size(w, h, &c.limits)?;
            proposals.push(cap_proposals(c, p, w, h)?);
            let clip = &c.vision.clip;
            lows.push(preprocess_lowres(
                image,
                clip.image_size,
                c.image_mean,
                c.image_std,
                dev,
            )?);
            let (high, g) = preprocess_hires(
                image,
                c.hires.image_size,
                c.hires.pad,
                c.image_mean,
                c.image_std,
                dev,
            )?;
            highs.push(high);
            geometries.push(g);
            sizes.push((w, h));
        }
        Ok(())
    })?;
    let image_tokens = profile::stage("clip", || model.image_tokens(&Tensor::cat(&lows, 0)?))?;
    let feats = profile::stage("convnext", || {
        model.hires_features(&Tensor::cat(&highs, 0)?)
    })?;
    let (dense, skips) = profile::stage("dense", || model.dense_features(&feats))?;
    let layout = RegionLayout::new(&proposals, &geometries);
    let k = layout.len();
    let region_boxes =
        Tensor::from_vec(layout.boxes.clone(), (k, 4), dev)?.to_dtype(model.dtype())?;
    let region_tokens = profile::stage("regions", || -> Result<Tensor> {
        if k > 0 {
            model.region_tokens(
                &feats,
                &Tensor::from_vec(layout.rois.clone(), (k, 5), dev)?,
                &Tensor::from_vec(layout.kinds.clone(), k, dev)?,
                &region_boxes,
            )
        } else {
            Ok(Tensor::zeros((0, c.llm.hidden_size), model.dtype(), dev)?)
        }
    })?;
    Ok(EncodedBatch {
        sizes,
        geometries,
        proposals,
        image_tokens,
        region_tokens,
        region_boxes,
        layout,
        dense,
        skips,
    })
}

/// Encodes one image and its proposals (original pixel coordinates), and prefills the
/// prompt prefix when the model's prefix cache is on ([`UniRes::set_prefix_cache`]).
pub fn encode(model: &UniRes, image: &RgbImage, proposals: &Proposals) -> Result<EncodedImage> {
    let mut enc = encode_batch(model, &[(image, proposals)])?.into_single()?;
    if model.prefix_cache() {
        let counts = (enc.proposals.objects.len(), enc.proposals.parts.len());
        enc.prefix = Some(profile::stage("llm_prefix", || {
            PromptPrefix::new(model, &enc.image_tokens, &enc.region_tokens, counts)
        })?);
    }
    Ok(enc)
}
