//! The small heads of the UniRES++ graph around the big blocks: the LLaVA projector, LISA's
//! `text_hidden_fcs`, the region selection, the no-target head, and the SAM-style neck and
//! skip projections over the ConvNeXt stages. Field names follow the checkpoint keys (a
//! PyTorch `nn.Sequential` numbers its children, so `mm_projector.0` is [`Mlp2::fc0`] and
//! `mm_projector.2` is [`Mlp2::fc2`]).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::config::Activation;
use crate::error::Result;
use crate::model::nn::{activation, Conv2d, LayerNorm2d, Linear};

/// `nn.Sequential(Linear, act, Linear)`: keys `0.*` and `2.*` (the activation has no weights).
#[derive(Debug, Clone)]
pub struct Mlp2 {
    /// Key `0`.
    pub fc0: Linear,
    /// Key `2`.
    pub fc2: Linear,
    act: Activation,
}

impl Mlp2 {
    pub fn new(dims: (usize, usize, usize), act: Activation, vb: VarBuilder) -> Result<Self> {
        let (d_in, d_mid, d_out) = dims;
        Ok(Self {
            fc0: Linear::new(d_in, d_mid, true, vb.pp("0"))?,
            fc2: Linear::new(d_mid, d_out, true, vb.pp("2"))?,
            act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = activation(&self.fc0.forward(x)?, self.act)?;
        self.fc2.forward(&h)
    }
}

/// Region selection (`region_select.*`): a bilinear score between the `[SEG]` state and each
/// region state, and the dense prompt added where the selected boxes cover the grid.
#[derive(Debug, Clone)]
pub struct RegionSelect {
    /// Key `q`: `[SEG]` state → selection space.
    pub q: Linear,
    /// Key `k`: region state → selection space.
    pub k: Linear,
    /// Key `mask_embed.weight`, `(1, D)`.
    pub mask_embed: Tensor,
}

impl RegionSelect {
    pub fn new(hidden: usize, select_dim: usize, d: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            q: Linear::new(hidden, select_dim, true, vb.pp("q"))?,
            k: Linear::new(hidden, select_dim, true, vb.pp("k"))?,
            mask_embed: vb.get_with_hints(
                (1, d),
                "mask_embed.weight",
                candle_nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )?,
        })
    }

    /// `(B, R)` logits: `⟨q(seg), k(region)⟩ / √S` for `seg (B, H)` and `regions (B, R, H)`.
    pub fn logits(&self, seg: &Tensor, regions: &Tensor) -> Result<Tensor> {
        let q = self.q.forward(seg)?.unsqueeze(2)?; // (B, S, 1)
        let k = self.k.forward(regions)?; // (B, R, S)
        let scale = 1.0 / (q.dim(1)? as f64).sqrt();
        Ok((k.matmul(&q)?.squeeze(2)? * scale)?)
    }
}

/// SAM-style neck: 1×1 conv, LayerNorm2d, 3×3 conv, LayerNorm2d (no conv biases).
#[derive(Debug, Clone)]
pub struct Neck {
    conv1: Conv2d,
    layer_norm1: LayerNorm2d,
    conv2: Conv2d,
    layer_norm2: LayerNorm2d,
}

impl Neck {
    pub fn new(c_in: usize, d: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: Conv2d::new(c_in, d, 1, 0, false, vb.pp("conv1"))?,
            layer_norm1: LayerNorm2d::new(d, 1e-6, vb.pp("layer_norm1"))?,
            conv2: Conv2d::new(d, d, 3, 1, false, vb.pp("conv2"))?,
            layer_norm2: LayerNorm2d::new(d, 1e-6, vb.pp("layer_norm2"))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.layer_norm1.forward(&self.conv1.forward(x)?)?;
        self.layer_norm2.forward(&self.conv2.forward(&x)?)
    }
}

/// `skip_proj.0` (stride 8 → D/4 channels) and `skip_proj.1` (stride 4 → D/8): 1×1 convs
/// that feed the decoder's upscaling.
#[derive(Debug, Clone)]
pub struct SkipProj {
    /// Key `0`.
    pub stride8: Conv2d,
    /// Key `1`.
    pub stride4: Conv2d,
}

impl SkipProj {
    pub fn new(c8: usize, c4: usize, d: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            stride8: Conv2d::new(c8, d / 4, 1, 0, true, vb.pp("0"))?,
            stride4: Conv2d::new(c4, d / 8, 1, 0, true, vb.pp("1"))?,
        })
    }

    pub fn forward(&self, f8: &Tensor, f4: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.stride8.forward(f8)?, self.stride4.forward(f4)?))
    }
}
