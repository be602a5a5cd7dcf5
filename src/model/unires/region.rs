//! Region tokens (UniRES++'s object-level `F_o` and part-level `F_p`): proposals pooled by ROI
//! Align from the high-resolution feature maps, then projected to the LLM width, plus a
//! learned granularity (object/part) embedding and a sin/cos box encoding — a GLaMM-style
//! region encoder.
//!
//! Per configured ConvNeXt level: 1×1 conv to `region.dim` channels (`level_proj.i`), ROI Align
//! (`pool_size²`, stride-aware `spatial_scale`), mean over levels, flatten, 2-layer GELU MLP
//! (`mlp.0`, `mlp.2`) to the LLM width; `kind_embed.weight` is `(2, H)` (0 = object, 1 = part);
//! `box_proj` maps `[sin, cos](2^f π c)` of the four normalised coordinates to `H`.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use crate::config::RegionConfig;
use crate::error::{Error, Result};
use crate::model::nn::{Conv2d, Linear};
use crate::ops::roi_align::{roi_align, RoiAlign};

/// The region encoder.
#[derive(Debug, Clone)]
pub struct RegionEncoder {
    level_proj: Vec<Conv2d>,
    levels: Vec<usize>,
    strides: Vec<f32>,
    mlp0: Linear,
    mlp2: Linear,
    kind_embed: Tensor,
    box_proj: Linear,
    cfg: RegionConfig,
}

/// Sin/cos encoding of `(K, 4)` normalised box coordinates with `freqs` frequencies
/// (`2^f · π`, f = 0..freqs) → `(K, 8·freqs)`: all sines, then all cosines.
pub fn box_encoding(boxes: &Tensor, freqs: usize) -> Result<Tensor> {
    let k = boxes.dim(0)?;
    let f: Vec<f32> = (0..freqs)
        .map(|i| (2f32).powi(i as i32) * std::f32::consts::PI)
        .collect();
    let f = Tensor::from_vec(f, (1, 1, freqs), boxes.device())?.to_dtype(boxes.dtype())?;
    let a = boxes
        .unsqueeze(2)?
        .broadcast_mul(&f)?
        .reshape((k, 4 * freqs))?;
    Ok(Tensor::cat(&[a.sin()?, a.cos()?], 1)?)
}

impl RegionEncoder {
    /// `hires_dims`: channels of each ConvNeXt stage; `patch_size`: the stem stride;
    /// `hidden`: the LLM width.
    pub fn new(
        cfg: &RegionConfig,
        hires_dims: &[usize],
        patch_size: usize,
        hidden: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mut level_proj = Vec::with_capacity(cfg.levels.len());
        let mut strides = Vec::with_capacity(cfg.levels.len());
        for (i, &l) in cfg.levels.iter().enumerate() {
            let c = *hires_dims.get(l).ok_or_else(|| Error::Config {
                what: "region".into(),
                reason: format!("level {l} but hires has {} stages", hires_dims.len()),
            })?;
            level_proj.push(Conv2d::new(
                c,
                cfg.dim,
                1,
                0,
                true,
                vb.pp(format!("level_proj.{i}")),
            )?);
            strides.push((patch_size << l) as f32);
        }
        let pooled = cfg.dim * cfg.pool_size * cfg.pool_size;
        Ok(Self {
            level_proj,
            levels: cfg.levels.clone(),
            strides,
            mlp0: Linear::new(pooled, hidden, true, vb.pp("mlp.0"))?,
            mlp2: Linear::new(hidden, hidden, true, vb.pp("mlp.2"))?,
            kind_embed: vb.get_with_hints(
                (2, hidden),
                "kind_embed.weight",
                candle_nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?,
            box_proj: Linear::new(8 * cfg.box_freqs, hidden, true, vb.pp("box_proj"))?,
            cfg: cfg.clone(),
        })
    }

    /// The level projections of the stage outputs, computed once per image: `(B, dim, h, w)`
    /// per configured level.
    pub fn project_levels(&self, feats: &[Tensor]) -> Result<Vec<Tensor>> {
        self.levels
            .iter()
            .zip(&self.level_proj)
            .map(|(&l, conv)| {
                let f = feats.get(l).ok_or_else(|| {
                    Error::shape("region encoder", format!("no feature level {l}"))
                })?;
                conv.forward(f)
            })
            .collect()
    }

    /// * `projected`: from [`Self::project_levels`];
    /// * `rois`: `(K, 5)` = `[batch index, x1, y1, x2, y2]` in high-res input pixels;
    /// * `kinds`: `(K)` u32, 0 = object, 1 = part;
    /// * `boxes_norm`: `(K, 4)` boxes divided by the padded input width/height.
    ///
    /// Returns `(K, H)` region tokens.
    pub fn forward(
        &self,
        projected: &[Tensor],
        rois: &Tensor,
        kinds: &Tensor,
        boxes_norm: &Tensor,
    ) -> Result<Tensor> {
        let k = rois.dim(0)?;
        let mut pooled: Option<Tensor> = None;
        for (p, &stride) in projected.iter().zip(&self.strides) {
            let op = RoiAlign {
                output_size: (self.cfg.pool_size, self.cfg.pool_size),
                spatial_scale: 1.0 / stride,
                sampling_ratio: self.cfg.sampling_ratio,
                aligned: self.cfg.aligned,
            };
            let r = roi_align(p, &rois.to_dtype(DType::F32)?, &op)?;
            pooled = Some(match pooled {
                None => r,
                Some(acc) => (acc + r)?,
            });
        }
        let pooled = pooled.ok_or_else(|| Error::shape("region encoder", "no levels"))?;
        let pooled = (pooled / self.levels.len() as f64)?.reshape((k, ()))?;
        let x = self.mlp0.forward(&pooled)?.gelu_erf()?;
        let x = self.mlp2.forward(&x)?;
        let kind = self.kind_embed.index_select(kinds, 0)?;
        let boxes = box_encoding(&boxes_norm.to_dtype(x.dtype())?, self.cfg.box_freqs)?;
        let b = self.box_proj.forward(&boxes)?;
        Ok(((x + kind)? + b)?)
    }
}
