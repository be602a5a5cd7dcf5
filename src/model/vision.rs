//! CLIP ViT vision tower, HF `CLIPVisionModel` semantics (transformers `modeling_clip.py`),
//! with LLaVA-1.5 feature selection.
//!
//! Facts about the reference that this file reproduces:
//! * `hidden_states` has `num_hidden_layers + 1` entries. The first is the input of layer 0,
//!   i.e. the embeddings **after** `pre_layrnorm` (the checkpoint really spells it
//!   `pre_layrnorm`); entry `k` is the output of layer `k`. The last entry is *not*
//!   normalised: `post_layernorm` is applied only to the CLS token to make `pooler_output`.
//! * LLaVA-1.5 takes `hidden_states[-2]` — the output of the penultimate layer — and drops
//!   the CLS token. [`ClipVisionModel::forward_select`] runs only the layers that this needs.
//! * Input sizes other than `image_size` use HF's `interpolate_pos_encoding=True` path: the
//!   CLS position is kept as is, the `g × g` patch-position grid is resized to the new
//!   `(H / patch, W / patch)` grid with `F.interpolate(mode="bicubic", align_corners=False)`
//!   (Keys' cubic convolution with `A = −0.75`, borders clamped, no antialiasing), see
//!   [`resize_bicubic_hwc`]. At the trained size the table is used unchanged, as in HF.
//!   (HF raises without the flag; we always interpolate.)
//! * Pixels are cast to the weights' dtype before the patch embedding, as HF does.
//! * Checkpoint keys: HF's `CLIPVisionModel.state_dict()` (transformers ≥ 5) has no
//!   `vision_model.` prefix, published CLIP checkpoints do; the caller passes the builder
//!   positioned where `embeddings.*` starts.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use crate::config::{Activation, ClipVisionConfig, SelectFeature};
use crate::error::{Error, Result};
use crate::model::init::INIT_STD;
use crate::model::nn::{attention_f32, patch_conv2d, LayerNorm, Linear};
use crate::ops::attention::AttnMask;

/// Everything HF's `CLIPVisionModel` returns with `output_hidden_states=True`.
#[derive(Debug, Clone)]
pub struct ClipVisionOutput {
    /// `num_hidden_layers + 1` tensors `(B, 1 + h·w, D)`: embeddings after `pre_layrnorm`,
    /// then the output of every layer.
    pub hidden_states: Vec<Tensor>,
    /// Output of the last layer (not normalised), `(B, 1 + h·w, D)`.
    pub last_hidden_state: Tensor,
    /// `post_layernorm` of the CLS token, `(B, D)`.
    pub pooler_output: Tensor,
}

/// Keys' cubic-convolution weights with `A = −0.75` (PyTorch's bicubic), for a tap at
/// distance `t + 1, t, 1 − t, 2 − t` from the source point.
fn cubic_coeffs(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// The `(out, in)` matrix of PyTorch's 1-D bicubic resize with `align_corners=False`:
/// source coordinate `(i + ½)·in/out − ½` (not clamped), four taps, indices clamped to
/// the border. Computed in f32 as PyTorch does for f32 input.
fn bicubic_matrix(in_size: usize, out_size: usize) -> Vec<f32> {
    let scale = in_size as f32 / out_size as f32;
    let mut m = vec![0f32; out_size * in_size];
    let last = in_size as i64 - 1;
    for i in 0..out_size {
        let src = scale * (i as f32 + 0.5) - 0.5;
        let x0 = src.floor();
        let t = (src - x0).clamp(0.0, 1.0);
        let coeffs = cubic_coeffs(t);
        for (k, c) in coeffs.iter().enumerate() {
            let idx = (x0 as i64 - 1 + k as i64).clamp(0, last) as usize;
            m[i * in_size + idx] += c;
        }
    }
    m
}

/// Resizes a channels-last `(H, W, C)` tensor to `(out_h, out_w, C)` exactly as
/// `F.interpolate(x_nchw, size=(out_h, out_w), mode="bicubic", align_corners=False)`.
///
/// Separable: one `(out, in)` weight matrix per axis, applied with matmuls in f32 (so the
/// result is differentiable with respect to `x`), then cast back to `x`'s dtype.
pub fn resize_bicubic_hwc(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (h, w, c) = x.dims3()?;
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return Err(Error::shape(
            "resize_bicubic_hwc",
            format!("cannot resize {:?} to {out_h}x{out_w}", x.dims()),
        ));
    }
    let dev = x.device();
    let xf = x.to_dtype(DType::F32)?;
    let mh = Tensor::from_vec(bicubic_matrix(h, out_h), (out_h, h), dev)?;
    let mw = Tensor::from_vec(bicubic_matrix(w, out_w), (1, out_w, w), dev)?;
    // Rows: (out_h, h) · (h, w·C).
    let rows = mh
        .matmul(&xf.reshape((h, w * c))?.contiguous()?)?
        .reshape((out_h, w, c))?;
    // Columns: (1, out_w, w) · (out_h, w, C), broadcast over the rows.
    let y = mw
        .broadcast_as((out_h, out_w, w))?
        .contiguous()?
        .matmul(&rows)?;
    Ok(y.to_dtype(x.dtype())?)
}

#[derive(Debug, Clone)]
struct ClipVisionEmbeddings {
    class_embedding: Tensor,
    patch_embedding: Tensor,
    position_embedding: Tensor,
    num_channels: usize,
    /// Side of the trained patch grid (`image_size / patch_size`).
    grid: usize,
    hidden_size: usize,
}

impl ClipVisionEmbeddings {
    fn new(cfg: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let grid = cfg.image_size / cfg.patch_size.max(1);
        // Initialisation (used only when `vb` creates variables) as HF's `_init_weights`.
        let randn = |stdev: f64| candle_nn::Init::Randn { mean: 0.0, stdev };
        let class_embedding =
            vb.get_with_hints(d, "class_embedding", randn((d as f64).powf(-0.5)))?;
        let patch_embedding = vb.pp("patch_embedding").get_with_hints(
            (d, cfg.num_channels, cfg.patch_size, cfg.patch_size),
            "weight",
            randn(INIT_STD),
        )?;
        let position_embedding = vb.pp("position_embedding").get_with_hints(
            (grid * grid + 1, d),
            "weight",
            randn(INIT_STD),
        )?;
        Ok(Self {
            class_embedding,
            patch_embedding,
            position_embedding,
            num_channels: cfg.num_channels,
            grid,
            hidden_size: d,
        })
    }

    /// Position embeddings for a `gh × gw` patch grid, `(1 + gh·gw, D)`.
    fn positions(&self, gh: usize, gw: usize) -> Result<Tensor> {
        if gh == self.grid && gw == self.grid {
            return Ok(self.position_embedding.clone());
        }
        let cls = self.position_embedding.narrow(0, 0, 1)?;
        let grid = self
            .position_embedding
            .narrow(0, 1, self.grid * self.grid)?
            .reshape((self.grid, self.grid, self.hidden_size))?;
        let resized = resize_bicubic_hwc(&grid, gh, gw)?.reshape((gh * gw, self.hidden_size))?;
        Ok(Tensor::cat(&[&cls, &resized], 0)?)
    }

    fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, c, _h, _w) = pixel_values.dims4()?;
        if c != self.num_channels {
            return Err(Error::shape(
                "ClipVisionModel",
                format!(
                    "pixel_values {:?} has {c} channels, the model {}",
                    pixel_values.dims(),
                    self.num_channels
                ),
            ));
        }
        let x = pixel_values.to_dtype(self.patch_embedding.dtype())?;
        let patches = patch_conv2d(&x, &self.patch_embedding, None)?;
        let (_, gh, gw, d) = patches.dims4()?;
        let patches = patches.reshape((b, gh * gw, d))?;
        let cls = self
            .class_embedding
            .reshape((1, 1, d))?
            .broadcast_as((b, 1, d))?;
        let tokens = Tensor::cat(&[&cls, &patches], 1)?;
        Ok(tokens.broadcast_add(&self.positions(gh, gw)?.unsqueeze(0)?)?)
    }
}

#[derive(Debug, Clone)]
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
}

impl ClipAttention {
    fn new(cfg: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        Ok(Self {
            q_proj: Linear::new(d, d, true, vb.pp("q_proj"))?,
            k_proj: Linear::new(d, d, true, vb.pp("k_proj"))?,
            v_proj: Linear::new(d, d, true, vb.pp("v_proj"))?,
            out_proj: Linear::new(d, d, true, vb.pp("out_proj"))?,
            num_heads: cfg.num_attention_heads,
            head_dim: d / cfg.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, s, d) = x.dims3()?;
        let heads = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, s, self.num_heads, self.head_dim))?
                .transpose(1, 2)?)
        };
        let q = heads(self.q_proj.forward(x)?)?;
        let k = heads(self.k_proj.forward(x)?)?;
        let v = heads(self.v_proj.forward(x)?)?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let o = attention_f32(&q, &k, &v, AttnMask::None, scale)?;
        let o = o.transpose(1, 2)?.reshape((b, s, d))?;
        self.out_proj.forward(&o)
    }
}

#[derive(Debug, Clone)]
struct ClipMlp {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl ClipMlp {
    fn new(cfg: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(cfg.hidden_size, cfg.intermediate_size, true, vb.pp("fc1"))?,
            fc2: Linear::new(cfg.intermediate_size, cfg.hidden_size, true, vb.pp("fc2"))?,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward_act(x, self.act)?)
    }
}

#[derive(Debug, Clone)]
struct ClipEncoderLayer {
    self_attn: ClipAttention,
    layer_norm1: LayerNorm,
    mlp: ClipMlp,
    layer_norm2: LayerNorm,
}

impl ClipEncoderLayer {
    fn new(cfg: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        let (d, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        Ok(Self {
            self_attn: ClipAttention::new(cfg, vb.pp("self_attn"))?,
            layer_norm1: LayerNorm::new(d, eps, vb.pp("layer_norm1"))?,
            mlp: ClipMlp::new(cfg, vb.pp("mlp"))?,
            layer_norm2: LayerNorm::new(d, eps, vb.pp("layer_norm2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = (x + self.self_attn.forward(&self.layer_norm1.forward(x)?)?)?;
        Ok((&x + self.mlp.forward(&self.layer_norm2.forward(&x)?)?)?)
    }
}

/// HF `CLIPVisionModel` (the vision transformer without projection).
#[derive(Debug, Clone)]
pub struct ClipVisionModel {
    embeddings: ClipVisionEmbeddings,
    pre_layrnorm: LayerNorm,
    layers: Vec<ClipEncoderLayer>,
    post_layernorm: LayerNorm,
}

impl ClipVisionModel {
    /// `vb` sits where HF's `CLIPVisionModel` keys start (`embeddings.*`, `pre_layrnorm.*`,
    /// `encoder.layers.N.*`, `post_layernorm.*`); for a published CLIP checkpoint that is
    /// `vb.pp("vision_model")`.
    pub fn new(cfg: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.patch_size == 0
            || cfg.image_size % cfg.patch_size != 0
            || cfg.num_attention_heads == 0
            || cfg.hidden_size % cfg.num_attention_heads != 0
        {
            return Err(Error::Config {
                what: "ClipVisionConfig".into(),
                reason: format!(
                    "image_size {} must be a multiple of patch_size {} and hidden_size {} of \
                     num_attention_heads {}",
                    cfg.image_size, cfg.patch_size, cfg.hidden_size, cfg.num_attention_heads
                ),
            });
        }
        let (d, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let embeddings = ClipVisionEmbeddings::new(cfg, vb.pp("embeddings"))?;
        let pre_layrnorm = LayerNorm::new(d, eps, vb.pp("pre_layrnorm"))?;
        let vl = vb.pp("encoder").pp("layers");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ClipEncoderLayer::new(cfg, vl.pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let post_layernorm = LayerNorm::new(d, eps, vb.pp("post_layernorm"))?;
        Ok(Self {
            embeddings,
            pre_layrnorm,
            layers,
            post_layernorm,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Embeddings after `pre_layrnorm`: `hidden_states[0]`.
    fn embed(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.pre_layrnorm
            .forward(&self.embeddings.forward(pixel_values)?)
    }

    /// The full forward pass. `pixel_values: (B, C, H, W)` with `H, W ≥ patch_size`; sizes
    /// other than `image_size` interpolate the position embeddings (module docs).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<ClipVisionOutput> {
        let mut x = self.embed(pixel_values)?;
        let mut hidden_states = Vec::with_capacity(self.layers.len() + 1);
        hidden_states.push(x.clone());
        for layer in &self.layers {
            x = layer.forward(&x)?;
            hidden_states.push(x.clone());
        }
        let pooler_output = self
            .post_layernorm
            .forward(&x.narrow(1, 0, 1)?.squeeze(1)?)?;
        Ok(ClipVisionOutput {
            hidden_states,
            last_hidden_state: x,
            pooler_output,
        })
    }

    /// The index into `hidden_states` that `select_layer` names (negative counts from the end).
    pub fn resolve_layer(&self, select_layer: i32) -> Result<usize> {
        let n = self.layers.len() as i64 + 1;
        let i = select_layer as i64;
        let idx = if i < 0 { n + i } else { i };
        if !(0..n).contains(&idx) {
            return Err(Error::Config {
                what: "vision.select_layer".into(),
                reason: format!("{select_layer} is outside the {n} hidden states"),
            });
        }
        Ok(idx as usize)
    }

    /// LLaVA-1.5 image features: `hidden_states[select_layer]` (negative counts from the end,
    /// so −2 is the output of the penultimate layer), CLS dropped for
    /// [`SelectFeature::Patch`]. Runs only the layers up to the selected one.
    /// Returns `(B, h·w, D)` (or `(B, 1 + h·w, D)` with the CLS token).
    pub fn forward_select(
        &self,
        pixel_values: &Tensor,
        select_layer: i32,
        feature: SelectFeature,
    ) -> Result<Tensor> {
        let upto = self.resolve_layer(select_layer)?;
        let mut x = self.embed(pixel_values)?;
        for layer in &self.layers[..upto] {
            x = layer.forward(&x)?;
        }
        Ok(match feature {
            SelectFeature::Patch => {
                let s = x.dim(1)?;
                x.narrow(1, 1, s - 1)?
            }
            SelectFeature::ClsPatch => x,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};
    use candle_nn::VarMap;
    use std::collections::HashMap;

    fn tiny() -> ClipVisionConfig {
        ClipVisionConfig {
            hidden_size: 16,
            intermediate_size: 24,
            num_hidden_layers: 3,
            num_attention_heads: 2,
            num_channels: 3,
            image_size: 16,
            patch_size: 4,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }

    #[test]
    fn training_path_matches_inference_and_reaches_every_parameter() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = tiny();
        let varmap = VarMap::new();
        let train = ClipVisionModel::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
        let frozen: HashMap<String, Tensor> = varmap
            .data()
            .lock()
            .map_err(|e| Error::shape("test", e.to_string()))?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect();
        let infer = ClipVisionModel::new(&cfg, VarBuilder::from_tensors(frozen, DType::F32, &dev))?;
        // A non-trained, non-square size: the interpolated positions must carry gradients too.
        for (h, w) in [(16, 16), (24, 20)] {
            let px = Tensor::randn(0f32, 1.0, (2, 3, h, w), &dev)?;
            let a = train.forward(&px)?;
            let b = infer.forward(&px)?;
            let d = (&a.last_hidden_state - &b.last_hidden_state)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(d < 1e-4, "composed vs fused at {h}x{w}: {d}");
            let loss = (a.last_hidden_state.sqr()?.sum_all()? + a.pooler_output.sum_all()?)?;
            crate::model::nn::assert_every_variable_has_a_gradient(
                &varmap,
                &loss,
                &format!(" at {h}x{w}"),
            )?;
        }
        Ok(())
    }

    #[test]
    fn select_layer_minus_two_is_the_penultimate_layer_output() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = tiny();
        let varmap = VarMap::new();
        let model = ClipVisionModel::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
        let px = Tensor::randn(0f32, 1.0, (1, 3, 16, 16), &dev)?;
        let all = model.forward(&px)?;
        assert_eq!(all.hidden_states.len(), cfg.num_hidden_layers + 1);
        assert_eq!(model.resolve_layer(-2)?, cfg.num_hidden_layers - 1);
        let sel = model.forward_select(&px, -2, SelectFeature::Patch)?;
        let want = all.hidden_states[cfg.num_hidden_layers - 1].narrow(1, 1, 16)?;
        let d = (&sel - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(d, 0.0);
        let last = (&sel - all.last_hidden_state.narrow(1, 1, 16)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(last > 1e-3, "−2 must not be the last layer");
        let with_cls = model.forward_select(&px, 0, SelectFeature::ClsPatch)?;
        assert_eq!(with_cls.dims(), all.hidden_states[0].dims());
        assert!(model.resolve_layer(-5).is_err() && model.resolve_layer(4).is_err());
        Ok(())
    }

    #[test]
    fn patch_conv_matches_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        // 13×10 is not a multiple of 3: the remainder must be ignored as a strided conv does.
        let x = Tensor::randn(0f32, 1.0, (2, 4, 13, 10), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (5, 4, 3, 3), &dev)?;
        let b = Tensor::randn(0f32, 1.0, 5, &dev)?;
        let conv = candle_nn::Conv2d::new(
            w.clone(),
            Some(b.clone()),
            candle_nn::Conv2dConfig {
                stride: 3,
                ..Default::default()
            },
        );
        let want = conv.forward(&x)?.permute((0, 2, 3, 1))?;
        let got = patch_conv2d(&x, &w, Some(&b))?;
        assert_eq!(got.dims(), want.dims());
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "patch conv vs conv2d: {diff}");
        Ok(())
    }

    #[test]
    fn bicubic_rows_sum_to_one_and_identity_at_same_size() {
        for (i, o) in [(4, 7), (7, 4), (5, 5), (3, 11)] {
            let m = bicubic_matrix(i, o);
            for r in 0..o {
                let s: f32 = m[r * i..(r + 1) * i].iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "{i}->{o} row {r} sums to {s}");
            }
        }
        let m = bicubic_matrix(5, 5);
        for r in 0..5 {
            for c in 0..5 {
                let want = if r == c { 1.0 } else { 0.0 };
                assert!((m[r * 5 + c] - want).abs() < 1e-6);
            }
        }
    }
}
