//! BEiT-3, the multiway vision-language encoder EVF-SAM fuses image and text with
//! (torchscale 0.2.0 `BEiT3` with the `Encoder` that `EncoderConfig` builds).
//!
//! Facts about the reference that this file reproduces:
//! * Tokens: the image's `P` patches (a strided convolution, conv bias included) after a
//!   learned CLS token, then the text's `T` token embeddings (`nn.Embedding` without a
//!   padding row). The sequence is `1 + P + T` long; rows `0..1+P` are "vision", the rest
//!   "language". Every Linear and LayerNorm exists twice, `A` for vision rows and `B` for
//!   language rows (torchscale's multiway split at `1 + P`); we keep the two row ranges as
//!   separate tensors and join them only where attention needs the whole sequence.
//! * Positions: both modalities count from 2 (a fairseq convention), each in its own table:
//!   vision uses rows `2..3+P` of a `P + 3` row table `embed_positions.A`, language rows
//!   `2..2+T` of the `max_source_positions` row table `embed_positions.B` (so at most
//!   `max_source_positions − 2` text tokens). Rows 0 and 1 are never read.
//! * The token embeddings (not the positions) are multiplied by √D unless
//!   `no_scale_embedding` (EVF-SAM: set, so the scale is 1).
//! * Padding (`text_padding_position`, nonzero = pad): after adding the positions, padded
//!   rows are multiplied by zero (positions included); in every layer padded *keys* get −∞
//!   before the f32 softmax. Padded *queries* are computed like any other row, so their
//!   outputs are not zero. Vision rows are never padded, so no softmax row is all −∞.
//!   (torchscale multiplies by `1 − pad`, which differs from zeroing only for values other
//!   than 0 and 1; here any nonzero value pads.)
//! * Layers are pre-LN with sub-LN: `x + out_proj(inner_attn_ln(attn(self_attn_layer_norm(x))))`,
//!   then `x + fc2(ffn_layernorm(gelu(fc1(final_layer_norm(x)))))`. Queries are scaled by
//!   `head_dim^−½`; the softmax runs in f32; GELU is the exact `erf` form, computed in f32.
//! * A final multiway `encoder.layer_norm` when `normalize_output`. EVF-SAM's config sets
//!   `no_output_layer`, so there is no vocabulary projection.
//! * `vision_embed.mask_token` is a checkpoint tensor used only for masked-image
//!   pre-training; it is loaded (so checkpoints match exactly) and not used.
//!
//! Checkpoint keys are torchscale's, relative to the `BEiT3` module (`mm_extractor.beit3.`
//! in an EVF-SAM checkpoint).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::config::{Activation, Beit3Config};
use crate::error::{Error, Result};
use crate::model::init::INIT_STD;
use crate::model::nn::{activation, attention_f32, patch_conv2d, LayerNorm, Linear};
use crate::ops::attention::AttnMask;

const OP: &str = "Beit3";

/// The hidden state split at the multiway boundary: `(B, 1 + P, D)` and `(B, T, D)`.
#[derive(Debug, Clone)]
struct Rows {
    vision: Tensor,
    text: Tensor,
}

/// A module and its language copy (torchscale's `MultiwayNetwork`, keys `A.*` and `B.*`).
#[derive(Debug, Clone)]
struct Multiway<M> {
    a: M,
    b: M,
}

impl<M> Multiway<M> {
    fn new(vb: VarBuilder, build: impl Fn(VarBuilder) -> Result<M>) -> Result<Self> {
        Ok(Self {
            a: build(vb.pp("A"))?,
            b: build(vb.pp("B"))?,
        })
    }

    /// `A` on the vision rows, `B` on the language rows.
    fn apply(&self, x: &Rows, f: impl Fn(&M, &Tensor) -> Result<Tensor>) -> Result<Rows> {
        Ok(Rows {
            vision: f(&self.a, &x.vision)?,
            text: f(&self.b, &x.text)?,
        })
    }
}

/// A linear layer on `(B, S, in)` as one `(B·S, in)` matmul.
fn linear(l: &Linear, x: &Tensor) -> Result<Tensor> {
    let (b, s, d) = x.dims3()?;
    let y = l.forward(&x.reshape((b * s, d))?)?;
    let o = y.dim(1)?;
    Ok(y.reshape((b, s, o))?)
}

fn layer_norm(ln: &LayerNorm, x: &Tensor) -> Result<Tensor> {
    ln.forward(x)
}

fn multiway_linear(d_in: usize, d_out: usize, vb: VarBuilder) -> Result<Multiway<Linear>> {
    Multiway::new(vb, |vb| Linear::new(d_in, d_out, true, vb))
}

fn multiway_norm(d: usize, eps: f64, vb: VarBuilder) -> Result<Multiway<LayerNorm>> {
    Multiway::new(vb, |vb| LayerNorm::new(d, eps, vb))
}

/// torchscale's `MultiheadAttention` with sub-LN (`inner_attn_ln`).
#[derive(Debug, Clone)]
struct SelfAttention {
    q_proj: Multiway<Linear>,
    k_proj: Multiway<Linear>,
    v_proj: Multiway<Linear>,
    out_proj: Multiway<Linear>,
    inner_attn_ln: Multiway<LayerNorm>,
    heads: usize,
}

impl SelfAttention {
    fn new(cfg: &Beit3Config, vb: VarBuilder) -> Result<Self> {
        let (d, eps) = (cfg.encoder_embed_dim, cfg.layernorm_eps);
        Ok(Self {
            q_proj: multiway_linear(d, d, vb.pp("q_proj"))?,
            k_proj: multiway_linear(d, d, vb.pp("k_proj"))?,
            v_proj: multiway_linear(d, d, vb.pp("v_proj"))?,
            out_proj: multiway_linear(d, d, vb.pp("out_proj"))?,
            inner_attn_ln: multiway_norm(d, eps, vb.pp("inner_attn_ln"))?,
            heads: cfg.encoder_attention_heads,
        })
    }

    fn forward(&self, x: &Rows, mask: AttnMask) -> Result<Rows> {
        let (b, sv, d) = x.vision.dims3()?;
        let st = x.text.dim(1)?;
        let (s, hd) = (sv + st, d / self.heads);
        // Each projection on its own rows, then the whole sequence as (B, H, S, hd).
        let heads = |p: &Multiway<Linear>| -> Result<Tensor> {
            let r = p.apply(x, linear)?;
            Ok(Tensor::cat(&[&r.vision, &r.text], 1)?
                .reshape((b, s, self.heads, hd))?
                .transpose(1, 2)?)
        };
        let (q, k, v) = (
            heads(&self.q_proj)?,
            heads(&self.k_proj)?,
            heads(&self.v_proj)?,
        );
        let o = attention_f32(&q, &k, &v, mask, (hd as f64).powf(-0.5))?;
        let o = o.transpose(1, 2)?.reshape((b, s, d))?;
        let o = Rows {
            vision: o.narrow(1, 0, sv)?,
            text: o.narrow(1, sv, st)?,
        };
        let o = self.inner_attn_ln.apply(&o, layer_norm)?;
        self.out_proj.apply(&o, linear)
    }
}

/// torchscale's `FeedForwardNetwork` with sub-LN (`ffn_layernorm` before `fc2`).
#[derive(Debug, Clone)]
struct FeedForward {
    fc1: Linear,
    fc2: Linear,
    ffn_layernorm: LayerNorm,
    act: Activation,
}

impl FeedForward {
    fn new(cfg: &Beit3Config, vb: VarBuilder) -> Result<Self> {
        let (d, f) = (cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim);
        Ok(Self {
            fc1: Linear::new(d, f, true, vb.pp("fc1"))?,
            fc2: Linear::new(f, d, true, vb.pp("fc2"))?,
            ffn_layernorm: LayerNorm::new(f, cfg.layernorm_eps, vb.pp("ffn_layernorm"))?,
            act: cfg.activation_fn,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = linear(&self.fc1, x)?;
        // The reference applies the activation in f32 and casts back.
        let h = match h.dtype() {
            DType::F32 | DType::F64 => activation(&h, self.act)?,
            dt => activation(&h.to_dtype(DType::F32)?, self.act)?.to_dtype(dt)?,
        };
        linear(&self.fc2, &self.ffn_layernorm.forward(&h)?)
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    self_attn: SelfAttention,
    self_attn_layer_norm: Multiway<LayerNorm>,
    ffn: Multiway<FeedForward>,
    final_layer_norm: Multiway<LayerNorm>,
}

impl EncoderLayer {
    fn new(cfg: &Beit3Config, vb: VarBuilder) -> Result<Self> {
        let (d, eps) = (cfg.encoder_embed_dim, cfg.layernorm_eps);
        Ok(Self {
            self_attn: SelfAttention::new(cfg, vb.pp("self_attn"))?,
            self_attn_layer_norm: multiway_norm(d, eps, vb.pp("self_attn_layer_norm"))?,
            ffn: Multiway::new(vb.pp("ffn"), |vb| FeedForward::new(cfg, vb))?,
            final_layer_norm: multiway_norm(d, eps, vb.pp("final_layer_norm"))?,
        })
    }

    fn forward(&self, x: &Rows, mask: AttnMask) -> Result<Rows> {
        let h = self.self_attn_layer_norm.apply(x, layer_norm)?;
        let h = self.self_attn.forward(&h, mask)?;
        let x = Rows {
            vision: (&x.vision + h.vision)?,
            text: (&x.text + h.text)?,
        };
        let h = self.final_layer_norm.apply(&x, layer_norm)?;
        let h = self.ffn.apply(&h, |f, t| f.forward(t))?;
        Ok(Rows {
            vision: (x.vision + h.vision)?,
            text: (x.text + h.text)?,
        })
    }
}

/// torchscale's `BEiT3` (vision + language input) with its `Encoder`.
#[derive(Debug, Clone)]
pub struct Beit3 {
    cfg: Beit3Config,
    text_embed: Tensor,
    proj_weight: Tensor,
    proj_bias: Tensor,
    cls_token: Tensor,
    /// `(P + 3, D)`: vision positions (rows from 2).
    positions_vision: Tensor,
    /// `(max_source_positions, D)`: text positions (rows from 2).
    positions_text: Tensor,
    layers: Vec<EncoderLayer>,
    layer_norm: Option<Multiway<LayerNorm>>,
}

impl Beit3 {
    /// `vb` sits where the `BEiT3` module's keys start (`text_embed.weight`,
    /// `vision_embed.*`, `encoder.*`); in an EVF-SAM checkpoint that is
    /// `vb.pp("mm_extractor").pp("beit3")`. The weights' dtype is the compute dtype.
    pub fn new(cfg: &Beit3Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate("beit3")?;
        if !matches!(cfg.activation_fn, Activation::Gelu | Activation::Relu) {
            return Err(Error::Config {
                what: "beit3".into(),
                reason: format!(
                    "activation_fn {:?}: torchscale's feed-forward supports gelu and relu",
                    cfg.activation_fn
                ),
            });
        }
        let (d, p) = (cfg.encoder_embed_dim, cfg.patch_size);
        let randn = |stdev: f64| candle_nn::Init::Randn { mean: 0.0, stdev };
        let text_embed = vb.pp("text_embed").get_with_hints(
            (cfg.vocab_size, d),
            "weight",
            randn((d as f64).powf(-0.5)),
        )?;
        let ve = vb.pp("vision_embed");
        let proj_weight =
            ve.pp("proj")
                .get_with_hints((d, cfg.in_chans, p, p), "weight", randn(INIT_STD))?;
        let proj_bias = ve
            .pp("proj")
            .get_with_hints(d, "bias", candle_nn::Init::Const(0.0))?;
        let cls_token = ve.get_with_hints((1, 1, d), "cls_token", randn(INIT_STD))?;
        // Present in checkpoints, used only by masked-image pre-training.
        ve.get_with_hints((1, 1, d), "mask_token", randn(INIT_STD))?;
        let enc = vb.pp("encoder");
        let pos = enc.pp("embed_positions");
        let positions_vision =
            pos.pp("A")
                .get_with_hints((cfg.vision_tokens() + 2, d), "weight", randn(INIT_STD))?;
        let positions_text =
            pos.pp("B")
                .get_with_hints((cfg.max_source_positions, d), "weight", randn(INIT_STD))?;
        let vl = enc.pp("layers");
        let layers = (0..cfg.encoder_layers)
            .map(|i| EncoderLayer::new(cfg, vl.pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let layer_norm = if cfg.normalize_output {
            Some(multiway_norm(d, cfg.layernorm_eps, enc.pp("layer_norm"))?)
        } else {
            None
        };
        Ok(Self {
            cfg: cfg.clone(),
            text_embed,
            proj_weight,
            proj_bias,
            cls_token,
            positions_vision,
            positions_text,
            layers,
            layer_norm,
        })
    }

    pub fn config(&self) -> &Beit3Config {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.text_embed.dtype()
    }

    pub fn device(&self) -> &Device {
        self.text_embed.device()
    }

    /// The encoder output `(B, 1 + P + T, D)` (torchscale's `encoder_out`).
    ///
    /// `visual_tokens: (B, in_chans, img_size, img_size)` float pixels (cast to the weights'
    /// dtype); `textual_tokens: (B, T)` token ids (u8, u32 or i64), `1 ≤ T ≤
    /// max_source_positions − 2`; `text_padding: (B, T)`, nonzero marks a padding token.
    pub fn forward(
        &self,
        visual_tokens: &Tensor,
        textual_tokens: &Tensor,
        text_padding: Option<&Tensor>,
    ) -> Result<Tensor> {
        let rows = self.encode(visual_tokens, textual_tokens, text_padding)?;
        let rows = self.final_norm(&rows)?;
        Ok(Tensor::cat(&[&rows.vision, &rows.text], 1)?)
    }

    /// The CLS row of [`Self::forward`], `(B, D)`: what EVF-SAM projects into SAM's prompt.
    pub fn cls(
        &self,
        visual_tokens: &Tensor,
        textual_tokens: &Tensor,
        text_padding: Option<&Tensor>,
    ) -> Result<Tensor> {
        let rows = self.encode(visual_tokens, textual_tokens, text_padding)?;
        let cls = rows.vision.narrow(1, 0, 1)?;
        let cls = match &self.layer_norm {
            Some(ln) => ln.a.forward(&cls)?,
            None => cls,
        };
        Ok(cls.squeeze(1)?)
    }

    fn final_norm(&self, rows: &Rows) -> Result<Rows> {
        match &self.layer_norm {
            Some(ln) => ln.apply(rows, layer_norm),
            None => Ok(rows.clone()),
        }
    }

    /// Embeddings and every layer, before the final LayerNorm.
    fn encode(
        &self,
        visual_tokens: &Tensor,
        textual_tokens: &Tensor,
        text_padding: Option<&Tensor>,
    ) -> Result<Rows> {
        let (b, ids) = self.check_inputs(visual_tokens, textual_tokens)?;
        let t = ids.len() / b;
        let pad = match text_padding {
            Some(m) => padding_flags(m, b, t)?,
            None => vec![false; b * t],
        };
        let (dev, dtype, d) = (
            self.device().clone(),
            self.dtype(),
            self.cfg.encoder_embed_dim,
        );
        let pixels = visual_tokens.to_device(&dev)?.to_dtype(dtype)?;
        let patches = patch_conv2d(&pixels, &self.proj_weight, Some(&self.proj_bias))?;
        let patches = patches.reshape((b, self.cfg.num_patches(), d))?;
        let cls = self.cls_token.broadcast_as((b, 1, d))?;
        let vision = Tensor::cat(&[&cls, &patches], 1)?;
        let ids = Tensor::from_vec(ids, b * t, &dev)?;
        let text = self.text_embed.index_select(&ids, 0)?.reshape((b, t, d))?;
        let (vision, text) = if self.cfg.no_scale_embedding {
            (vision, text)
        } else {
            let s = (d as f64).sqrt();
            ((vision * s)?, (text * s)?)
        };
        let sv = self.cfg.vision_tokens();
        let vision =
            vision.broadcast_add(&self.positions_vision.narrow(0, 2, sv)?.unsqueeze(0)?)?;
        let mut text = text.broadcast_add(&self.positions_text.narrow(0, 2, t)?.unsqueeze(0)?)?;
        let mask = if pad.iter().any(|&p| p) {
            let keep: Vec<f32> = pad.iter().map(|&p| if p { 0.0 } else { 1.0 }).collect();
            let keep = Tensor::from_vec(keep, (b, t, 1), &dev)?.to_dtype(dtype)?;
            text = text.broadcast_mul(&keep)?;
            let additive: Vec<f32> = pad
                .chunks(t)
                .flat_map(|row| {
                    std::iter::repeat_n(0.0, sv).chain(row.iter().map(|&p| {
                        if p {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    }))
                })
                .collect();
            Some(Tensor::from_vec(additive, (b, 1, 1, sv + t), &dev)?)
        } else {
            None
        };
        let mask = match &mask {
            Some(m) => AttnMask::Additive(m),
            None => AttnMask::None,
        };
        let mut x = Rows { vision, text };
        for layer in &self.layers {
            x = layer.forward(&x, mask)?;
        }
        Ok(x)
    }

    /// Checks shapes and ranges; returns the batch size and the token ids as u32.
    fn check_inputs(&self, visual: &Tensor, text: &Tensor) -> Result<(usize, Vec<u32>)> {
        let c = &self.cfg;
        let (b, ch, h, w) = visual.dims4().map_err(|_| {
            Error::shape(
                OP,
                format!("visual_tokens {:?}: need (B, C, H, W)", visual.dims()),
            )
        })?;
        if !visual.dtype().is_float() {
            return Err(Error::DTypeMismatch {
                name: "visual_tokens".into(),
                expected: "a float dtype (normalised pixels)".into(),
                got: format!("{:?}", visual.dtype()),
            });
        }
        if ch != c.in_chans || b == 0 {
            return Err(Error::shape(
                OP,
                format!(
                    "visual_tokens {:?}: need a non-empty batch of {} channels",
                    visual.dims(),
                    c.in_chans
                ),
            ));
        }
        if h != c.img_size || w != c.img_size {
            return Err(Error::SizeMismatch {
                what: "BEiT-3 visual_tokens".into(),
                expected_h: c.img_size,
                expected_w: c.img_size,
                got_h: h,
                got_w: w,
            });
        }
        let (tb, t) = text.dims2().map_err(|_| {
            Error::shape(OP, format!("textual_tokens {:?}: need (B, T)", text.dims()))
        })?;
        if tb != b || t == 0 || t > c.max_text_tokens() {
            return Err(Error::shape(
                OP,
                format!(
                    "textual_tokens {:?} for {b} image(s): need (B, T) with 1 ≤ T ≤ {} \
                     (max_source_positions − 2)",
                    text.dims(),
                    c.max_text_tokens()
                ),
            ));
        }
        let flat = text.flatten_all()?.to_device(&Device::Cpu)?;
        let ids: Vec<i64> = match text.dtype() {
            DType::I64 => flat.to_vec1::<i64>()?,
            DType::U32 => flat.to_vec1::<u32>()?.into_iter().map(i64::from).collect(),
            DType::U8 => flat.to_vec1::<u8>()?.into_iter().map(i64::from).collect(),
            dt => {
                return Err(Error::DTypeMismatch {
                    name: "textual_tokens".into(),
                    expected: "u8, u32 or i64 token ids".into(),
                    got: format!("{dt:?}"),
                })
            }
        };
        if let Some(bad) = ids.iter().find(|&&i| i < 0 || i >= c.vocab_size as i64) {
            return Err(Error::shape(
                OP,
                format!(
                    "token id {bad} is outside the vocabulary 0..{}",
                    c.vocab_size
                ),
            ));
        }
        Ok((b, ids.into_iter().map(|i| i as u32).collect()))
    }
}

/// The `(B, T)` padding mask as flags (nonzero = padding).
fn padding_flags(m: &Tensor, b: usize, t: usize) -> Result<Vec<bool>> {
    if m.dims() != [b, t] {
        return Err(Error::shape(
            OP,
            format!(
                "text_padding {:?} must match textual_tokens ({b}, {t})",
                m.dims()
            ),
        ));
    }
    let v = m
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    Ok(v.into_iter().map(|x| x != 0.0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::validate::requested_tensors;
    use candle_nn::VarMap;
    use std::collections::{HashMap, HashSet};

    fn tiny() -> Beit3Config {
        Beit3Config {
            encoder_embed_dim: 16,
            encoder_attention_heads: 2,
            encoder_ffn_embed_dim: 40,
            encoder_layers: 2,
            img_size: 8,
            patch_size: 4,
            vocab_size: 50,
            max_source_positions: 12,
            ..Beit3Config::large()
        }
    }

    /// Random weights as plain tensors (the inference paths).
    fn model(cfg: &Beit3Config) -> Result<Beit3> {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        Beit3::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
        let frozen: HashMap<String, Tensor> = varmap
            .data()
            .lock()
            .map_err(|e| Error::shape("test", e.to_string()))?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect();
        Beit3::new(cfg, VarBuilder::from_tensors(frozen, DType::F32, &dev))
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
    }

    #[test]
    fn large_preset_asks_for_the_checkpoint_keys_and_shapes() -> Result<()> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/evf_sam/checkpoint-keys.tsv"
        );
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let prefix = "mm_extractor.beit3.";
        let want: HashSet<(String, Vec<usize>)> = text
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, shape)| {
                let dims = shape
                    .trim_matches(|c| c == '(' || c == ')')
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| s.trim().parse::<usize>().unwrap())
                    .collect();
                (name.to_string(), dims)
            })
            .collect();
        // 7 embedding tensors, 24 layers of 40, the final multiway LayerNorm.
        assert_eq!(want.len(), 7 + 24 * 40 + 4);
        let got = requested_tensors(HashSet::new(), |vb| {
            Beit3::new(&Beit3Config::large(), vb.pp("mm_extractor").pp("beit3")).map(drop)
        })?;
        let got_set: HashSet<(String, Vec<usize>)> = got
            .iter()
            .map(|r| (r.name.clone(), r.shape.clone()))
            .collect();
        assert_eq!(got.len(), got_set.len(), "a tensor is asked for twice");
        let missing: Vec<_> = want.difference(&got_set).collect();
        let extra: Vec<_> = got_set.difference(&want).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "not asked for: {missing:?}; not in the checkpoint: {extra:?}"
        );
        Ok(())
    }

    #[test]
    fn padded_tokens_change_nothing_but_their_own_rows() -> Result<()> {
        let cfg = tiny();
        let m = model(&cfg)?;
        let dev = Device::Cpu;
        let px = Tensor::randn(0f32, 1.0, (2, 3, 8, 8), &dev)?;
        let ids = Tensor::new(&[[0i64, 7, 9, 2, 1, 1], [0, 30, 31, 32, 33, 2]], &dev)?;
        let pad = Tensor::new(&[[0u8, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]], &dev)?;
        let out = m.forward(&px, &ids, Some(&pad))?;
        assert_eq!(out.dims(), &[2, 1 + 4 + 6, 16]);
        // The first sample alone, truncated before its padding, gives the same rows.
        let short = m.forward(
            &px.narrow(0, 0, 1)?,
            &ids.narrow(0, 0, 1)?.narrow(1, 0, 4)?,
            None,
        )?;
        let d = max_diff(&out.narrow(0, 0, 1)?.narrow(1, 0, 9)?, &short)?;
        assert!(d < 1e-5, "padded vs truncated: {d}");
        // Other padding ids change no unpadded row.
        let ids2 = Tensor::new(&[[0i64, 7, 9, 2, 44, 3], [0, 30, 31, 32, 33, 2]], &dev)?;
        let out2 = m.forward(&px, &ids2, Some(&pad))?;
        assert_eq!(
            max_diff(&out.narrow(1, 0, 9)?, &out2.narrow(1, 0, 9)?)?,
            0.0
        );
        assert_eq!(
            max_diff(&out.narrow(0, 1, 1)?, &out2.narrow(0, 1, 1)?)?,
            0.0
        );
        // Without padding the rows do depend on those tokens; a zero mask is no mask.
        let free = m.forward(&px, &ids, None)?;
        assert!(max_diff(&free.narrow(1, 0, 9)?, &out.narrow(1, 0, 9)?)? > 1e-3);
        let zeros = Tensor::zeros((2, 6), DType::I64, &dev)?;
        assert_eq!(max_diff(&free, &m.forward(&px, &ids, Some(&zeros))?)?, 0.0);
        // The CLS helper is row 0 of the output.
        let cls = m.cls(&px, &ids, Some(&pad))?;
        assert_eq!(max_diff(&cls, &out.narrow(1, 0, 1)?.squeeze(1)?)?, 0.0);
        Ok(())
    }

    #[test]
    fn bad_inputs_are_typed_errors() -> Result<()> {
        let cfg = tiny();
        let m = model(&cfg)?;
        let dev = Device::Cpu;
        let px = Tensor::randn(0f32, 1.0, (1, 3, 8, 8), &dev)?;
        let ids = Tensor::new(&[[0u32, 5, 2]], &dev)?;
        let size = m.forward(
            &Tensor::zeros((1, 3, 12, 12), DType::F32, &dev)?,
            &ids,
            None,
        );
        assert!(matches!(size, Err(Error::SizeMismatch { .. })), "{size:?}");
        let chans = m.forward(&Tensor::zeros((1, 1, 8, 8), DType::F32, &dev)?, &ids, None);
        assert!(matches!(chans, Err(Error::BadShape { .. })), "{chans:?}");
        let batch = m.forward(&px, &Tensor::new(&[[0u32, 2], [0, 2]], &dev)?, None);
        assert!(matches!(batch, Err(Error::BadShape { .. })), "{batch:?}");
        let oov = m.forward(&px, &Tensor::new(&[[0u32, 50]], &dev)?, None);
        assert!(matches!(oov, Err(Error::BadShape { .. })), "{oov:?}");
        let neg = m.forward(&px, &Tensor::new(&[[0i64, -1]], &dev)?, None);
        assert!(matches!(neg, Err(Error::BadShape { .. })), "{neg:?}");
        // 10 = max_source_positions − 2 tokens fit, 11 do not.
        assert!(m
            .forward(&px, &Tensor::zeros((1, 10), DType::U32, &dev)?, None)
            .is_ok());
        let long = m.forward(&px, &Tensor::zeros((1, 11), DType::U32, &dev)?, None);
        assert!(matches!(long, Err(Error::BadShape { .. })), "{long:?}");
        let float_ids = m.forward(&px, &Tensor::zeros((1, 3), DType::F32, &dev)?, None);
        assert!(
            matches!(float_ids, Err(Error::DTypeMismatch { .. })),
            "{float_ids:?}"
        );
        let pad = Tensor::zeros((1, 4), DType::U8, &dev)?;
        let pad = m.forward(&px, &ids, Some(&pad));
        assert!(matches!(pad, Err(Error::BadShape { .. })), "{pad:?}");
        let mut silu = cfg.clone();
        silu.activation_fn = Activation::Silu;
        let varmap = VarMap::new();
        let built = Beit3::new(&silu, VarBuilder::from_varmap(&varmap, DType::F32, &dev));
        assert!(matches!(built, Err(Error::Config { .. })));
        Ok(())
    }
}
