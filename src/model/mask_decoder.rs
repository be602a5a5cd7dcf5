//! SAM's mask decoder (two-way transformer + hypernetwork upscaling), HF `SamMaskDecoder`
//! semantics, plus the pieces of SAM's prompt encoder the graph needs (random-Fourier
//! positional encoding, box-corner embeddings, `no_mask_embed`).
//!
//! Differences from candle-transformers' SAM that matter for parity: the upscaling GELU is
//! the exact `erf` form (PyTorch `nn.GELU()`), the final token-to-image LayerNorm uses
//! PyTorch's default eps 1e-5 (not the config's), and the decoder can add two skip feature
//! maps during upscaling (our FPN fusion; `None` gives SAM exactly).
//!
//! Checkpoint keys follow HF: `iou_token`, `mask_tokens`, `transformer.layers.N.{self_attn,
//! cross_attn_token_to_image, cross_attn_image_to_token}.{q,k,v,out}_proj`,
//! `transformer.layers.N.layer_norm{1..4}`, `transformer.layers.N.mlp.{lin1,lin2}`,
//! `transformer.final_attn_token_to_image`, `transformer.layer_norm_final_attn`,
//! `upscale_conv{1,2}`, `upscale_layer_norm`, `output_hypernetworks_mlps.N.{proj_in,layers.M,proj_out}`,
//! `iou_prediction_head.*`.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;

use crate::config::{Activation, SamMaskDecoderConfig};
use crate::error::{Error, Result};
use crate::model::nn::{activation, LayerNorm, LayerNorm2d, Linear};
use crate::ops::attention::{attention, AttnMask};

/// SAM's attention with an optional internal downsampling of the width.
#[derive(Debug, Clone)]
struct SamAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl SamAttention {
    fn new(cfg: &SamMaskDecoderConfig, downsample: usize, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let internal = d / downsample.max(1);
        if cfg.num_attention_heads == 0 || internal % cfg.num_attention_heads != 0 {
            return Err(Error::Config {
                what: "mask decoder".into(),
                reason: format!(
                    "internal width {internal} not divisible by {} heads",
                    cfg.num_attention_heads
                ),
            });
        }
        Ok(Self {
            q_proj: Linear::new(d, internal, true, vb.pp("q_proj"))?,
            k_proj: Linear::new(d, internal, true, vb.pp("k_proj"))?,
            v_proj: Linear::new(d, internal, true, vb.pp("v_proj"))?,
            out_proj: Linear::new(internal, d, true, vb.pp("out_proj"))?,
            heads: cfg.num_attention_heads,
        })
    }

    /// `q: (B, Sq, D)`, `k, v: (B, Sk, D)` → `(B, Sq, D)`.
    fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let split = |x: Tensor| -> Result<Tensor> {
            let (b, s, c) = x.dims3()?;
            Ok(x.reshape((b, s, self.heads, c / self.heads))?
                .transpose(1, 2)?)
        };
        let q = split(self.q_proj.forward(q)?)?;
        let k = split(self.k_proj.forward(k)?)?;
        let v = split(self.v_proj.forward(v)?)?;
        let dh = q.dim(D::Minus1)?;
        let o = attention(&q, &k, &v, AttnMask::None, 1.0 / (dh as f64).sqrt())?;
        let (b, h, s, dh) = o.dims4()?;
        let o = o.transpose(1, 2)?.reshape((b, s, h * dh))?;
        self.out_proj.forward(&o)
    }
}

#[derive(Debug, Clone)]
struct MlpBlock {
    lin1: Linear,
    lin2: Linear,
    act: Activation,
}

impl MlpBlock {
    fn new(cfg: &SamMaskDecoderConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            lin1: Linear::new(cfg.hidden_size, cfg.mlp_dim, true, vb.pp("lin1"))?,
            lin2: Linear::new(cfg.mlp_dim, cfg.hidden_size, true, vb.pp("lin2"))?,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.lin2
            .forward(&activation(&self.lin1.forward(x)?, self.act)?)
    }
}

#[derive(Debug, Clone)]
struct TwoWayBlock {
    self_attn: SamAttention,
    layer_norm1: LayerNorm,
    cross_attn_token_to_image: SamAttention,
    layer_norm2: LayerNorm,
    mlp: MlpBlock,
    layer_norm3: LayerNorm,
    layer_norm4: LayerNorm,
    cross_attn_image_to_token: SamAttention,
    skip_first_layer_pe: bool,
}

impl TwoWayBlock {
    fn new(cfg: &SamMaskDecoderConfig, skip_first_layer_pe: bool, vb: VarBuilder) -> Result<Self> {
        let (d, eps, r) = (
            cfg.hidden_size,
            cfg.layer_norm_eps,
            cfg.attention_downsample_rate,
        );
        Ok(Self {
            self_attn: SamAttention::new(cfg, 1, vb.pp("self_attn"))?,
            layer_norm1: LayerNorm::new(d, eps, vb.pp("layer_norm1"))?,
            cross_attn_token_to_image: SamAttention::new(
                cfg,
                r,
                vb.pp("cross_attn_token_to_image"),
            )?,
            layer_norm2: LayerNorm::new(d, eps, vb.pp("layer_norm2"))?,
            mlp: MlpBlock::new(cfg, vb.pp("mlp"))?,
            layer_norm3: LayerNorm::new(d, eps, vb.pp("layer_norm3"))?,
            layer_norm4: LayerNorm::new(d, eps, vb.pp("layer_norm4"))?,
            cross_attn_image_to_token: SamAttention::new(
                cfg,
                r,
                vb.pp("cross_attn_image_to_token"),
            )?,
            skip_first_layer_pe,
        })
    }

    fn forward(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        query_pe: &Tensor,
        key_pe: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let queries = if self.skip_first_layer_pe {
            self.self_attn.forward(queries, queries, queries)?
        } else {
            let q = (queries + query_pe)?;
            (queries + self.self_attn.forward(&q, &q, queries)?)?
        };
        let queries = self.layer_norm1.forward(&queries)?;

        let q = (&queries + query_pe)?;
        let k = keys.broadcast_add(key_pe)?;
        let queries = (&queries + self.cross_attn_token_to_image.forward(&q, &k, keys)?)?;
        let queries = self.layer_norm2.forward(&queries)?;

        let queries = (&queries + self.mlp.forward(&queries)?)?;
        let queries = self.layer_norm3.forward(&queries)?;

        let q = (&queries + query_pe)?;
        let keys = (keys + self.cross_attn_image_to_token.forward(&k, &q, &queries)?)?;
        let keys = self.layer_norm4.forward(&keys)?;
        Ok((queries, keys))
    }
}

#[derive(Debug, Clone)]
struct TwoWayTransformer {
    layers: Vec<TwoWayBlock>,
    final_attn_token_to_image: SamAttention,
    layer_norm_final_attn: LayerNorm,
}

/// PyTorch's `nn.LayerNorm` default eps, used by SAM's final token-to-image norm.
const TORCH_LAYER_NORM_EPS: f64 = 1e-5;

impl TwoWayTransformer {
    fn new(cfg: &SamMaskDecoderConfig, vb: VarBuilder) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| TwoWayBlock::new(cfg, i == 0, vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            final_attn_token_to_image: SamAttention::new(
                cfg,
                cfg.attention_downsample_rate,
                vb.pp("final_attn_token_to_image"),
            )?,
            layer_norm_final_attn: LayerNorm::new(
                cfg.hidden_size,
                TORCH_LAYER_NORM_EPS,
                vb.pp("layer_norm_final_attn"),
            )?,
        })
    }

    /// `tokens: (B, T, D)`, `image: (B, HW, D)`, `image_pe: (B|1, HW, D)`.
    fn forward(
        &self,
        tokens: &Tensor,
        image: &Tensor,
        image_pe: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let mut queries = tokens.clone();
        let mut keys = image.clone();
        for layer in &self.layers {
            let (q, k) = layer.forward(&queries, &keys, tokens, image_pe)?;
            queries = q;
            keys = k;
        }
        let q = (&queries + tokens)?;
        let k = keys.broadcast_add(image_pe)?;
        let attn = self.final_attn_token_to_image.forward(&q, &k, &keys)?;
        let queries = self.layer_norm_final_attn.forward(&(queries + attn)?)?;
        Ok((queries, keys))
    }
}

/// SAM's `SamFeedForward`: `proj_in`, ReLU, `layers.*` with ReLU, `proj_out`.
#[derive(Debug, Clone)]
pub struct FeedForward {
    proj_in: Linear,
    layers: Vec<Linear>,
    proj_out: Linear,
}

impl FeedForward {
    pub fn new(
        input: usize,
        hidden: usize,
        output: usize,
        depth: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let layers = (0..depth.saturating_sub(2))
            .map(|i| Linear::new(hidden, hidden, true, vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            proj_in: Linear::new(input, hidden, true, vb.pp("proj_in"))?,
            layers,
            proj_out: Linear::new(hidden, output, true, vb.pp("proj_out"))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.proj_in.forward(x)?.relu()?;
        for l in &self.layers {
            h = l.forward(&h)?.relu()?;
        }
        self.proj_out.forward(&h)
    }
}

/// A 2×2, stride-2 transposed convolution (`nn.ConvTranspose2d(c_in, c_out, 2, 2)`, weight
/// `(c_in, c_out, 2, 2)`), computed as one matmul and a pixel shuffle: with kernel = stride
/// the output windows do not overlap, so this is exact and differentiable.
#[derive(Debug, Clone)]
pub struct ConvTranspose2x2 {
    weight: Tensor,
    bias: Tensor,
    c_out: usize,
}

impl ConvTranspose2x2 {
    pub fn new(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Self> {
        let bound = 1.0 / ((c_out * 4) as f64).sqrt();
        let weight = vb.get_with_hints(
            (c_in, c_out, 2, 2),
            "weight",
            candle_nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let bias = vb.get_with_hints(c_out, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self {
            weight,
            bias,
            c_out,
        })
    }

    /// `(B, C_in, h, w)` → `(B, C_out, 2h, 2w)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let xs = x.permute((0, 2, 3, 1))?.reshape((b * h * w, c))?;
        let wm = self.weight.reshape((c, self.c_out * 4))?;
        let y = xs.matmul(&wm)?; // (b h w, o·2·2)
        let y = y
            .reshape((b, h, w, self.c_out, 2, 2))?
            .permute((0, 3, 1, 4, 2, 5))?
            .reshape((b, self.c_out, 2 * h, 2 * w))?;
        Ok(y.broadcast_add(&self.bias.reshape((1, self.c_out, 1, 1))?)?)
    }
}

/// Output of the mask decoder.
#[derive(Debug, Clone)]
pub struct DecoderOutput {
    /// `(B, num_mask_tokens, 4h, 4w)` mask logits.
    pub masks: Tensor,
    /// `(B, num_mask_tokens)` predicted IoU.
    pub iou: Tensor,
}

/// HF `SamMaskDecoder`.
#[derive(Debug, Clone)]
pub struct SamMaskDecoder {
    iou_token: Tensor,
    mask_tokens: Tensor,
    transformer: TwoWayTransformer,
    upscale_conv1: ConvTranspose2x2,
    upscale_layer_norm: LayerNorm2d,
    upscale_conv2: ConvTranspose2x2,
    output_hypernetworks_mlps: Vec<FeedForward>,
    iou_prediction_head: FeedForward,
    num_mask_tokens: usize,
    hidden: usize,
}

/// LayerNorm eps of SAM's `upscale_layer_norm` (its `SamLayerNorm` default).
const SAM_LAYER_NORM_EPS: f64 = 1e-6;

impl SamMaskDecoder {
    pub fn new(cfg: &SamMaskDecoderConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        if d % 8 != 0 {
            return Err(Error::Config {
                what: "mask decoder".into(),
                reason: format!("hidden_size {d} must be a multiple of 8"),
            });
        }
        let n = cfg.num_multimask_outputs + 1;
        let init = candle_nn::Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        };
        let output_hypernetworks_mlps = (0..n)
            .map(|i| {
                FeedForward::new(
                    d,
                    d,
                    d / 8,
                    3,
                    vb.pp(format!("output_hypernetworks_mlps.{i}")),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            iou_token: vb.get_with_hints((1, d), "iou_token.weight", init)?,
            mask_tokens: vb.get_with_hints((n, d), "mask_tokens.weight", init)?,
            transformer: TwoWayTransformer::new(cfg, vb.pp("transformer"))?,
            upscale_conv1: ConvTranspose2x2::new(d, d / 4, vb.pp("upscale_conv1"))?,
            upscale_layer_norm: LayerNorm2d::new(
                d / 4,
                SAM_LAYER_NORM_EPS,
                vb.pp("upscale_layer_norm"),
            )?,
            upscale_conv2: ConvTranspose2x2::new(d / 4, d / 8, vb.pp("upscale_conv2"))?,
            output_hypernetworks_mlps,
            iou_prediction_head: FeedForward::new(
                d,
                cfg.iou_head_hidden_dim,
                n,
                cfg.iou_head_depth,
                vb.pp("iou_prediction_head"),
            )?,
            num_mask_tokens: n,
            hidden: d,
        })
    }

    pub fn num_mask_tokens(&self) -> usize {
        self.num_mask_tokens
    }

    /// * `image_embeddings`: `(B, D, h, w)`; `image_pe`: `(1|B, D, h, w)`;
    /// * `sparse`: `(B, T, D)` prompt tokens (may have `T = 0`); `dense`: `(1|B, D, h, w)`;
    /// * `skips`: feature maps added during upscaling, `(B, D/4, 2h, 2w)` after the first
    ///   transposed conv (before its GELU) and `(B, D/8, 4h, 4w)` after the second.
    ///
    /// Returns all mask tokens' masks (HF's `multimask_output` slicing is left to the caller).
    pub fn forward(
        &self,
        image_embeddings: &Tensor,
        image_pe: &Tensor,
        sparse: &Tensor,
        dense: &Tensor,
        skips: Option<(&Tensor, &Tensor)>,
    ) -> Result<DecoderOutput> {
        let (b, c, h, w) = image_embeddings.dims4()?;
        if c != self.hidden {
            return Err(Error::shape(
                "mask decoder",
                format!(
                    "image embeddings have {c} channels, decoder is {} wide",
                    self.hidden
                ),
            ));
        }
        let out_tokens = Tensor::cat(&[&self.iou_token, &self.mask_tokens], 0)?
            .to_dtype(sparse.dtype())?
            .unsqueeze(0)?
            .broadcast_as((b, self.num_mask_tokens + 1, c))?;
        let tokens = if sparse.dim(1)? > 0 {
            Tensor::cat(&[&out_tokens, sparse], 1)?
        } else {
            out_tokens.contiguous()?
        };
        let src = image_embeddings.broadcast_add(dense)?;
        let flat = |t: &Tensor| -> Result<Tensor> {
            let bb = t.dim(0)?;
            Ok(t.reshape((bb, c, h * w))?.transpose(1, 2)?.contiguous()?)
        };
        let keys = flat(&src)?;
        let pe = flat(image_pe)?;
        let (hs, keys) = self.transformer.forward(&tokens, &keys, &pe)?;
        let iou_out = hs.narrow(1, 0, 1)?.squeeze(1)?;
        let mask_out = hs.narrow(1, 1, self.num_mask_tokens)?;

        let src = keys.transpose(1, 2)?.reshape((b, c, h, w))?;
        let mut up = self.upscale_conv1.forward(&src)?;
        up = self.upscale_layer_norm.forward(&up)?;
        if let Some((s1, _)) = skips {
            up = (up + s1)?;
        }
        up = up.gelu_erf()?;
        up = self.upscale_conv2.forward(&up)?;
        if let Some((_, s2)) = skips {
            up = (up + s2)?;
        }
        let up = up.gelu_erf()?;

        let hyper = self
            .output_hypernetworks_mlps
            .iter()
            .enumerate()
            .map(|(i, mlp)| mlp.forward(&mask_out.narrow(1, i, 1)?))
            .collect::<Result<Vec<_>>>()?;
        let hyper = Tensor::cat(&hyper, 1)?; // (B, n, D/8)
        let (_, cu, hu, wu) = up.dims4()?;
        let masks = hyper.matmul(&up.reshape((b, cu, hu * wu))?)?.reshape((
            b,
            self.num_mask_tokens,
            hu,
            wu,
        ))?;
        let iou = self.iou_prediction_head.forward(&iou_out)?;
        Ok(DecoderOutput { masks, iou })
    }
}

/// SAM's random-Fourier positional encoding (`shared_embedding.positional_embedding`, `(2, D/2)`).
#[derive(Debug, Clone)]
pub struct PositionEmbeddingRandom {
    gaussian: Tensor,
}

impl PositionEmbeddingRandom {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let gaussian = vb.get_with_hints(
            (2, dim / 2),
            "positional_embedding",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )?;
        Ok(Self { gaussian })
    }

    /// Encodes `(…, 2)` points `(x, y)` normalised to `[0, 1]` → `(…, D)`.
    pub fn encode(&self, coords: &Tensor) -> Result<Tensor> {
        let dims = coords.dims().to_vec();
        let n: usize = dims[..dims.len() - 1].iter().product();
        let c = ((coords.reshape((n, 2))? * 2.0)? - 1.0)?;
        let proj = (c.to_dtype(self.gaussian.dtype())?.matmul(&self.gaussian)?
            * (2.0 * std::f64::consts::PI))?;
        let out = Tensor::cat(&[proj.sin()?, proj.cos()?], 1)?;
        let mut shape = dims[..dims.len() - 1].to_vec();
        shape.push(out.dim(1)?);
        Ok(out.reshape(shape)?)
    }

    /// Dense encoding of an `h × w` grid at pixel centres → `(1, D, h, w)`.
    pub fn grid(&self, h: usize, w: usize, device: &Device) -> Result<Tensor> {
        let mut pts = Vec::with_capacity(h * w * 2);
        for y in 0..h {
            for x in 0..w {
                pts.push((x as f32 + 0.5) / w as f32);
                pts.push((y as f32 + 0.5) / h as f32);
            }
        }
        let coords = Tensor::from_vec(pts, (h, w, 2), device)?;
        let pe = self.encode(&coords)?; // (h, w, D)
        Ok(pe.permute((2, 0, 1))?.unsqueeze(0)?.contiguous()?)
    }
}

/// The parts of SAM's prompt encoder the graph uses.
#[derive(Debug, Clone)]
pub struct PromptEncoder {
    shared_embedding: PositionEmbeddingRandom,
    /// `point_embed.2` / `point_embed.3`: top-left and bottom-right box corners.
    corner_embed: [Tensor; 2],
    no_mask_embed: Tensor,
}

impl PromptEncoder {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let init = candle_nn::Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        };
        Ok(Self {
            shared_embedding: PositionEmbeddingRandom::new(dim, vb.pp("shared_embedding"))?,
            corner_embed: [
                vb.get_with_hints((1, dim), "point_embed.2.weight", init)?,
                vb.get_with_hints((1, dim), "point_embed.3.weight", init)?,
            ],
            no_mask_embed: vb.get_with_hints((1, dim), "no_mask_embed.weight", init)?,
        })
    }

    /// Box prompts: `boxes (N, 4)` as `x1, y1, x2, y2` normalised to `[0, 1]` → `(N, 2, D)`
    /// corner tokens (positional encoding + corner embedding).
    pub fn embed_boxes(&self, boxes: &Tensor) -> Result<Tensor> {
        let n = boxes.dim(0)?;
        let corners = boxes.reshape((n, 2, 2))?;
        let pe = self.shared_embedding.encode(&corners)?; // (N, 2, D)
        let ce = Tensor::cat(&[&self.corner_embed[0], &self.corner_embed[1]], 0)?.unsqueeze(0)?;
        Ok(pe.broadcast_add(&ce)?)
    }

    /// SAM's `get_dense_pe`: the positional encoding of the `h × w` image-embedding grid,
    /// `(1, D, h, w)` in `dtype`.
    pub fn dense_pe(&self, h: usize, w: usize, dtype: DType) -> Result<Tensor> {
        let dev = self.no_mask_embed.device();
        Ok(self.shared_embedding.grid(h, w, dev)?.to_dtype(dtype)?)
    }

    /// `no_mask_embed` as a `(1, D, 1, 1)` dense prompt (broadcast over the grid).
    pub fn dense_no_mask(&self) -> Result<Tensor> {
        let d = self.no_mask_embed.dim(1)?;
        Ok(self.no_mask_embed.reshape((1, d, 1, 1))?)
    }
}

/// Casts to f32 for post-processing.
pub fn to_f32(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(DType::F32)?)
}
