//! ConvNeXt high-resolution encoder (feature maps at strides 4/8/16/32), HF `ConvNextModel`
//! semantics (transformers `modeling_convnext.py`).
//!
//! Facts about the reference that this file reproduces:
//! * Every LayerNorm inside the network (the stem's, the downsampling layers', every block's)
//!   uses `eps = 1e-6` whatever the config says; `config.layer_norm_eps` (HF default 1e-12)
//!   is used only by the final `layernorm` that makes `pooler_output`.
//! * Stage 0 has no downsampling layer (its `downsampling_layer` list is empty); stages
//!   `i > 0` start with a channels-first LayerNorm followed by a 2×2 stride-2 conv.
//! * A block is `x + γ ⊙ pwconv2(act(pwconv1(LN(dwconv7×7(x)))))` with LN and the pointwise
//!   linears channels-last; `γ` (`layer_scale_parameter`) exists only when
//!   `layer_scale_init_value > 0`.
//! * `hidden_states` = (stem output, stage 1, …, stage 4); `last_hidden_state` is the last
//!   stage output (not normalised); `pooler_output = layernorm(mean over H, W)`.
//! * The strided convs floor like PyTorch's: inputs that are not multiples of 32 work, with
//!   the trailing rows/columns ignored where a stride does not divide.
//!
//! The 7×7 depthwise convolution goes through [`crate::ops::dwconv::depthwise_conv2d`].

use candle_core::{Tensor, D};
use candle_nn::VarBuilder;

use crate::config::{Activation, ConvNextConfig};
use crate::error::{Error, Result};
use crate::model::nn::{patch_conv2d, LayerNorm, Linear};
use crate::ops::dwconv::depthwise_conv2d;
use crate::ops::residual::scaled_residual_nchw;

/// The eps HF hard-codes for every LayerNorm except the final pooled one.
const BLOCK_LN_EPS: f64 = 1e-6;
/// ConvNeXt's depthwise kernel size.
const DW_KERNEL: usize = 7;
/// Expansion of the pointwise MLP.
const MLP_RATIO: usize = 4;
/// Kernel (= stride) of the downsampling conv between stages.
const DOWNSAMPLE: usize = 2;

/// Everything HF's `ConvNextModel` returns with `output_hidden_states=True`.
#[derive(Debug, Clone)]
pub struct ConvNextOutput {
    /// Stem output (stride `patch_size`), then every stage output, all NCHW.
    pub hidden_states: Vec<Tensor>,
    /// The last stage output, NCHW.
    pub last_hidden_state: Tensor,
    /// `layernorm(mean over H, W of last_hidden_state)`, `(B, C_last)`.
    pub pooler_output: Tensor,
}

/// NHWC → NCHW, contiguous.
fn to_channels_first(x: &Tensor) -> Result<Tensor> {
    Ok(x.permute((0, 3, 1, 2))?.contiguous()?)
}

/// A stride-`k` conv with kernel `k` (stem or downsampling), weights `weight`/`bias`.
#[derive(Debug, Clone)]
struct PatchConv {
    weight: Tensor,
    bias: Tensor,
}

impl PatchConv {
    fn new(in_c: usize, out_c: usize, k: usize, vb: VarBuilder) -> Result<Self> {
        // PyTorch's default Conv2d bias init, U(±1/√fan_in). A zero bias would make the
        // following LayerNorm see an all-zero vector on the zero padding of the input, where
        // its gradient is amplified by 1/√eps when training from scratch.
        let bound = 1.0 / ((in_c * k * k) as f64).sqrt();
        Ok(Self {
            weight: vb.get_with_hints(
                (out_c, in_c, k, k),
                "weight",
                candle_nn::init::DEFAULT_KAIMING_NORMAL,
            )?,
            bias: vb.get_with_hints(
                out_c,
                "bias",
                candle_nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )?,
        })
    }

    /// NCHW in, NHWC out.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        patch_conv2d(x, &self.weight, Some(&self.bias))
    }
}

#[derive(Debug, Clone)]
struct ConvNextLayer {
    dw_weight: Tensor,
    dw_bias: Tensor,
    layernorm: LayerNorm,
    pwconv1: Linear,
    pwconv2: Linear,
    layer_scale: Option<Tensor>,
    act: Activation,
}

impl ConvNextLayer {
    fn new(cfg: &ConvNextConfig, dim: usize, vb: VarBuilder) -> Result<Self> {
        let vdw = vb.pp("dwconv");
        let layer_scale = if cfg.layer_scale_init_value > 0.0 {
            Some(vb.get_with_hints(
                dim,
                "layer_scale_parameter",
                candle_nn::Init::Const(cfg.layer_scale_init_value),
            )?)
        } else {
            None
        };
        Ok(Self {
            dw_weight: vdw.get_with_hints(
                (dim, 1, DW_KERNEL, DW_KERNEL),
                "weight",
                candle_nn::init::DEFAULT_KAIMING_NORMAL,
            )?,
            dw_bias: vdw.get(dim, "bias")?,
            layernorm: LayerNorm::new(dim, BLOCK_LN_EPS, vb.pp("layernorm"))?,
            pwconv1: Linear::new(dim, MLP_RATIO * dim, true, vb.pp("pwconv1"))?,
            pwconv2: Linear::new(MLP_RATIO * dim, dim, true, vb.pp("pwconv2"))?,
            layer_scale,
            act: cfg.hidden_act,
        })
    }

    /// NCHW in, NCHW out.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = depthwise_conv2d(x, &self.dw_weight, Some(&self.dw_bias), DW_KERNEL / 2)?;
        let y = self.layernorm.forward_nchw_to_nhwc(&y)?;
        let y = self.pwconv1.forward_act(&y, self.act)?;
        // The second pointwise layer's bias, the layer scale, the NHWC → NCHW copy and the
        // residual in one pass after the bare matmul (`ops::scaled_residual_nchw`).
        let (y, bias) = self.pwconv2.forward_unbiased(&y)?;
        scaled_residual_nchw(x, &y, bias, self.layer_scale.as_ref())
    }
}

#[derive(Debug, Clone)]
struct ConvNextStage {
    /// LayerNorm (channels-first in HF, applied channels-last here) + 2×2 stride-2 conv.
    downsampling: Option<(LayerNorm, PatchConv)>,
    layers: Vec<ConvNextLayer>,
}

impl ConvNextStage {
    fn new(
        cfg: &ConvNextConfig,
        in_c: usize,
        out_c: usize,
        depth: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let downsampling = if in_c != out_c || stride > 1 {
            let vd = vb.pp("downsampling_layer");
            Some((
                LayerNorm::new(in_c, BLOCK_LN_EPS, vd.pp(0))?,
                PatchConv::new(in_c, out_c, stride, vd.pp(1))?,
            ))
        } else {
            None
        };
        let vl = vb.pp("layers");
        let layers = (0..depth)
            .map(|j| ConvNextLayer::new(cfg, out_c, vl.pp(j)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            downsampling,
            layers,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = match &self.downsampling {
            Some((ln, conv)) => {
                let y = ln.forward_nchw_to_nhwc(x)?;
                to_channels_first(&conv.forward(&to_channels_first(&y)?)?)?
            }
            None => x.clone(),
        };
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        Ok(x)
    }
}

/// HF `ConvNextModel`: stem, stages, and the pooled final LayerNorm.
#[derive(Debug, Clone)]
pub struct ConvNextModel {
    patch_embeddings: PatchConv,
    embeddings_layernorm: LayerNorm,
    stages: Vec<ConvNextStage>,
    layernorm: LayerNorm,
    num_channels: usize,
    patch_size: usize,
}

impl ConvNextModel {
    /// `vb` sits at HF `ConvNextModel`'s root (`embeddings.*`, `encoder.stages.*`,
    /// `layernorm.*`).
    pub fn new(cfg: &ConvNextConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.depths.is_empty()
            || cfg.depths.len() != cfg.hidden_sizes.len()
            || cfg.patch_size == 0
        {
            return Err(Error::Config {
                what: "ConvNextConfig".into(),
                reason: format!(
                    "depths {:?} and hidden_sizes {:?} must be non-empty and of equal length, \
                     patch_size {} positive",
                    cfg.depths, cfg.hidden_sizes, cfg.patch_size
                ),
            });
        }
        let ve = vb.pp("embeddings");
        let c0 = cfg.hidden_sizes[0];
        let patch_embeddings = PatchConv::new(
            cfg.num_channels,
            c0,
            cfg.patch_size,
            ve.pp("patch_embeddings"),
        )?;
        let embeddings_layernorm = LayerNorm::new(c0, BLOCK_LN_EPS, ve.pp("layernorm"))?;
        let vs = vb.pp("encoder").pp("stages");
        let mut prev = c0;
        let mut stages = Vec::with_capacity(cfg.depths.len());
        for (i, (&out_c, &depth)) in cfg.hidden_sizes.iter().zip(&cfg.depths).enumerate() {
            let stride = if i > 0 { DOWNSAMPLE } else { 1 };
            stages.push(ConvNextStage::new(
                cfg,
                prev,
                out_c,
                depth,
                stride,
                vs.pp(i),
            )?);
            prev = out_c;
        }
        let layernorm = LayerNorm::new(prev, cfg.layer_norm_eps, vb.pp("layernorm"))?;
        Ok(Self {
            patch_embeddings,
            embeddings_layernorm,
            stages,
            layernorm,
            num_channels: cfg.num_channels,
            patch_size: cfg.patch_size,
        })
    }

    /// Total downsampling factor of the last stage.
    pub fn max_stride(&self) -> usize {
        self.patch_size * DOWNSAMPLE.pow(self.stages.len().saturating_sub(1) as u32)
    }

    /// The stem: patchify conv + LayerNorm, NCHW out (`hidden_states[0]`).
    fn embed(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (_b, c, h, w) = pixel_values.dims4()?;
        let stride = self.max_stride();
        if c != self.num_channels || h < stride || w < stride {
            return Err(Error::shape(
                "ConvNextModel",
                format!(
                    "pixel_values {:?}: need (B, {}, H, W) with H, W ≥ {stride}",
                    pixel_values.dims(),
                    self.num_channels
                ),
            ));
        }
        let x = pixel_values.to_dtype(self.patch_embeddings.weight.dtype())?;
        let y = self.patch_embeddings.forward(&x)?;
        to_channels_first(&self.embeddings_layernorm.forward(&y)?)
    }

    /// The stage outputs (HF `hidden_states[1..]`), NCHW, at strides 4/8/16/32 for the
    /// standard 4-stage configs. `pixel_values: (B, C, H, W)`.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Vec<Tensor>> {
        let mut x = self.embed(pixel_values)?;
        let mut outs = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            x = stage.forward(&x)?;
            outs.push(x.clone());
        }
        Ok(outs)
    }

    /// `layernorm(mean over H, W)` of an NCHW map: HF's `pooler_output`.
    pub fn pool(&self, last_hidden_state: &Tensor) -> Result<Tensor> {
        let mean = last_hidden_state.mean(D::Minus1)?.mean(D::Minus1)?;
        self.layernorm.forward(&mean)
    }

    /// Everything HF returns with `output_hidden_states=True`.
    pub fn forward_all(&self, pixel_values: &Tensor) -> Result<ConvNextOutput> {
        let stem = self.embed(pixel_values)?;
        let mut hidden_states = Vec::with_capacity(self.stages.len() + 1);
        hidden_states.push(stem.clone());
        let mut x = stem;
        for stage in &self.stages {
            x = stage.forward(&x)?;
            hidden_states.push(x.clone());
        }
        let pooler_output = self.pool(&x)?;
        Ok(ConvNextOutput {
            hidden_states,
            last_hidden_state: x,
            pooler_output,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;
    use std::collections::HashMap;

    #[test]
    fn training_path_matches_inference_and_reaches_every_parameter() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = ConvNextConfig {
            hidden_sizes: vec![4, 6, 8, 10],
            depths: vec![1, 1, 1, 1],
            ..ConvNextConfig::default()
        };
        let varmap = VarMap::new();
        let train = ConvNextModel::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
        let frozen: HashMap<String, Tensor> = varmap
            .data()
            .lock()
            .map_err(|e| Error::shape("test", e.to_string()))?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect();
        let infer = ConvNextModel::new(&cfg, VarBuilder::from_tensors(frozen, DType::F32, &dev))?;
        let px = Tensor::randn(0f32, 1.0, (2, 3, 64, 32), &dev)?;
        let a = train.forward_all(&px)?;
        let b = infer.forward_all(&px)?;
        let strides: Vec<usize> = a.hidden_states[1..]
            .iter()
            .map(|t| 64 / t.dim(2).unwrap_or(1))
            .collect();
        assert_eq!(strides, [4, 8, 16, 32]);
        for (x, y) in a.hidden_states.iter().zip(&b.hidden_states) {
            let d = (x - y)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-4, "composed vs fused: {d}");
        }
        let loss = (a.last_hidden_state.sqr()?.sum_all()? + a.pooler_output.sum_all()?)?;
        crate::model::nn::assert_every_variable_has_a_gradient(&varmap, &loss, "")
    }
}
