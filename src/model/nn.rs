//! Small shared building blocks (linear, norms, activations, softmax, f32 attention,
//! convolutions) used by every model file.
//!
//! Norms and softmax take candle's fused kernels at inference time and a differentiable
//! composition of elementary ops when the input tracks gradients (training), because the
//! fused kernels have no backward pass.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::VarBuilder;

use crate::config::{Activation, Quantization};
use crate::error::{Error, Result};
use crate::ops::attention::{attention, AttnMask};
use crate::ops::bias_act::bias_act;

// The softmax lives with the attention op, which needs it and sits below the model layer.
pub use crate::ops::attention::softmax_last_dim;

/// `y = x Wᵀ + b`, weights named `weight`/`bias` as in PyTorch; the weight may be quantised
/// after loading ([`Linear::quantize`]).
#[derive(Debug, Clone)]
pub struct Linear {
    inner: LinearWeight,
}

#[derive(Debug, Clone)]
enum LinearWeight {
    Dense(candle_nn::Linear),
    /// A GGML block-quantised weight (`out × in`) and the bias kept as it was.
    Quantized {
        weight: candle_core::quantized::QMatMul,
        bias: Option<Tensor>,
        format: Quantization,
    },
}

impl Linear {
    pub fn new(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let inner = if bias {
            candle_nn::linear(in_dim, out_dim, vb)?
        } else {
            candle_nn::linear_no_bias(in_dim, out_dim, vb)?
        };
        Ok(Self {
            inner: LinearWeight::Dense(inner),
        })
    }

    /// The full-precision weight (`None` once quantised).
    pub fn weight(&self) -> Option<&Tensor> {
        match &self.inner {
            LinearWeight::Dense(l) => Some(l.weight()),
            LinearWeight::Quantized { .. } => None,
        }
    }

    pub fn bias(&self) -> Option<&Tensor> {
        match &self.inner {
            LinearWeight::Dense(l) => l.bias(),
            LinearWeight::Quantized { bias, .. } => bias.as_ref(),
        }
    }

    /// The block format of the weight, if quantised.
    pub fn quantization(&self) -> Option<Quantization> {
        match &self.inner {
            LinearWeight::Dense(_) => None,
            LinearWeight::Quantized { format, .. } => Some(*format),
        }
    }

    /// Replaces the weight by its `format` block quantisation (computed on the CPU, stored on
    /// the weight's device) and returns the weight's bytes before and after. The input width
    /// must be a multiple of the format's block size. Inference only: a quantised layer has
    /// no gradient.
    pub fn quantize(&mut self, format: Quantization, name: &str) -> Result<(usize, usize)> {
        let LinearWeight::Dense(l) = &self.inner else {
            return Err(Error::Config {
                what: name.into(),
                reason: "the layer is already quantised".into(),
            });
        };
        let w = l.weight();
        let (_, in_dim) = w.dims2()?;
        if in_dim % format.block_size() != 0 {
            return Err(Error::Config {
                what: name.into(),
                reason: format!(
                    "input width {in_dim} is not a multiple of {}, the block size of {format}",
                    format.block_size()
                ),
            });
        }
        let ggml = match format {
            Quantization::Q8_0 => candle_core::quantized::GgmlDType::Q8_0,
            Quantization::Q4K => candle_core::quantized::GgmlDType::Q4K,
        };
        let before = w.elem_count() * w.dtype().size_in_bytes();
        let cpu = w.to_device(&candle_core::Device::Cpu)?;
        let q = candle_core::quantized::QTensor::quantize_onto(&cpu, ggml, w.device())?;
        let after = q.storage_size_in_bytes();
        self.inner = LinearWeight::Quantized {
            weight: candle_core::quantized::QMatMul::from_qtensor(q)?,
            bias: l.bias().cloned(),
            format,
        };
        Ok((before, after))
    }

    /// `act(x Wᵀ + b)`. At inference on the CPU the bias add and the activation run as one
    /// in-place pass over the matmul output ([`crate::ops::bias_act`]); otherwise (training,
    /// no bias, a quantised weight, another device) this is `activation(forward(x))`.
    pub fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        if !x.device().is_cpu() {
            return activation(&self.forward(x)?, act);
        }
        match self.forward_unbiased(x)? {
            (y, Some(bias)) => bias_act(y, bias, act),
            (y, None) => activation(&y, act),
        }
    }

    /// `x Wᵀ` and the bias still to be added, for callers that fold the bias into their own
    /// epilogue. Only dense weights at inference leave the bias out; otherwise the result is
    /// [`Linear::forward`] and the bias `None`.
    pub fn forward_unbiased(&self, x: &Tensor) -> Result<(Tensor, Option<&Tensor>)> {
        match &self.inner {
            LinearWeight::Dense(l) if !x.track_op() && !l.weight().track_op() => {
                let w = l.weight();
                let dims = x.dims();
                let (k, n) = (dims.last().copied().unwrap_or(0), w.dim(0)?);
                let rows = x.elem_count() / k.max(1);
                let y = x.reshape((rows, k))?.matmul(&w.t()?)?;
                let mut out = dims.to_vec();
                if let Some(last) = out.last_mut() {
                    *last = n;
                }
                Ok((y.reshape(out)?, l.bias()))
            }
            _ => Ok((self.forward(x)?, None)),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.inner {
            LinearWeight::Dense(l) => Ok(l.forward(x)?),
            LinearWeight::Quantized { weight, bias, .. } => {
                // The block kernels are fastest on a contiguous f32 input (with f16 input
                // candle's Q8_0 prefill took 2–9× longer at LLaMA-7B width); the result goes
                // back to the model's dtype.
                let dtype = x.dtype();
                let xf = x.to_dtype(DType::F32)?.contiguous()?;
                let y = weight.forward(&xf)?.to_dtype(dtype)?;
                Ok(match bias {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                })
            }
        }
    }
}

/// LayerNorm over the last dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self { weight, bias, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.track_op() || self.weight.track_op() {
            let dtype = x.dtype();
            let x = x.to_dtype(DType::F32)?;
            let mean = x.mean_keepdim(D::Minus1)?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
            let y = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
            let y = y.to_dtype(dtype)?;
            Ok(y.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)?)
        } else {
            let x = x.contiguous()?;
            Ok(candle_nn::ops::layer_norm(
                &x,
                &self.weight,
                &self.bias,
                self.eps as f32,
            )?)
        }
    }
}

impl LayerNorm {
    /// The LayerNorm over the channels of an NCHW tensor, returned channels-last
    /// (`(N, H, W, C)`): one pass on the CPU at inference ([`crate::ops::residual`]),
    /// otherwise a permuted copy and [`LayerNorm::forward`].
    pub fn forward_nchw_to_nhwc(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) =
            crate::ops::residual::layer_norm_to_nhwc(x, &self.weight, &self.bias, self.eps)?
        {
            return Ok(y);
        }
        self.forward(&x.permute((0, 2, 3, 1))?.contiguous()?)
    }
}

/// LayerNorm over the channel dimension of an NCHW tensor (SAM's / ConvNeXt's `LayerNorm2d`).
#[derive(Debug, Clone)]
pub struct LayerNorm2d {
    inner: LayerNorm,
}

impl LayerNorm2d {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            inner: LayerNorm::new(dim, eps, vb)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.inner.forward(&x.permute((0, 2, 3, 1))?)?;
        Ok(y.permute((0, 3, 1, 2))?.contiguous()?)
    }
}

/// RMSNorm over the last dimension (LLaMA), computed in f32.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?;
        Ok(Self { weight, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.track_op() || self.weight.track_op() {
            let dtype = x.dtype();
            let xf = x.to_dtype(DType::F32)?;
            let ms = xf.sqr()?.mean_keepdim(D::Minus1)?;
            let y = xf
                .broadcast_div(&(ms + self.eps)?.sqrt()?)?
                .to_dtype(dtype)?;
            Ok(y.broadcast_mul(&self.weight)?)
        } else {
            let x = x.contiguous()?;
            Ok(candle_nn::ops::rms_norm(&x, &self.weight, self.eps as f32)?)
        }
    }
}

/// Applies an activation function.
pub fn activation(x: &Tensor, act: Activation) -> Result<Tensor> {
    Ok(match act {
        Activation::QuickGelu => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
        Activation::Gelu => x.gelu_erf()?,
        Activation::GeluPytorchTanh => x.gelu()?,
        Activation::Relu => x.relu()?,
        Activation::Silu => x.silu()?,
    })
}

/// Scaled dot-product attention computed in f32 whatever the model dtype: HF's eager
/// attention takes its softmax in f32, and a softmax summed in bf16 loses the small terms.
pub fn attention_f32(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: AttnMask,
    scale: f64,
) -> Result<Tensor> {
    let dtype = q.dtype();
    if dtype == DType::F32 || dtype == DType::F64 {
        return attention(q, k, v, mask, scale);
    }
    let (q, k, v) = (
        q.to_dtype(DType::F32)?,
        k.to_dtype(DType::F32)?,
        v.to_dtype(DType::F32)?,
    );
    Ok(attention(&q, &k, &v, mask, scale)?.to_dtype(dtype)?)
}

/// A convolution whose stride equals its kernel size ("patchify"), as one matmul.
///
/// `x: (B, C, H, W)`, `weight: (O, C, p, p)`, optional `bias: (O)` → `(B, H/p, W/p, O)`
/// (channels last). Rows/columns beyond the last whole patch are ignored, as PyTorch's
/// `Conv2d(kernel_size=p, stride=p)` does. Differentiable through elementary ops.
pub fn patch_conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (o, wc, ph, pw) = weight.dims4()?;
    if wc != c || ph == 0 || pw == 0 || h < ph || w < pw {
        return Err(Error::shape(
            "patch_conv2d",
            format!(
                "input {:?} for kernel {:?}: need (B, C, H ≥ p, W ≥ p) with kernel (O, C, p, p)",
                x.dims(),
                weight.dims()
            ),
        ));
    }
    let (gh, gw) = (h / ph, w / pw);
    let x = if gh * ph != h || gw * pw != w {
        x.narrow(2, 0, gh * ph)?.narrow(3, 0, gw * pw)?
    } else {
        x.clone()
    };
    // (B, C, gh, p, gw, p) → (B, gh, gw, C, p, p): one row per patch, in the kernel's order.
    let patches = x
        .reshape((b, c, gh, ph, gw, pw))?
        .permute((0, 2, 4, 1, 3, 5))?
        .contiguous()?
        .reshape((b * gh * gw, c * ph * pw))?;
    let wt = weight.reshape((o, c * ph * pw))?;
    let mut y = patches.matmul(&wt.t()?)?;
    if let Some(bias) = bias {
        y = y.broadcast_add(bias)?;
    }
    Ok(y.reshape((b, gh, gw, o))?)
}

/// A stride-1 2-D convolution with symmetric zero padding (`nn.Conv2d(c_in, c_out, k,
/// padding=p)`), keys `weight` `(O, C, k, k)` and `bias` `(O)` as in PyTorch.
///
/// Routed so that every dtype runs on every device, and differentiable on every path:
/// - 1×1 without padding: one product `W (O, C) · x (B, C, H·W)`, on every device and in
///   every dtype (no im2col copy);
/// - k×k on the CPU: im2col and one product ([`conv2d_im2col`]), in every dtype: candle's CPU
///   `conv2d` has no bf16 kernel, and is slower in f32 and f16 as well (BENCHMARKS.md);
/// - k×k on a GPU: candle's `conv2d`, which has kernels for every float dtype there.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    padding: usize,
}

impl Conv2d {
    /// Fresh variables as PyTorch's (and candle's) `Conv2d` initialises them: Kaiming-normal
    /// weight, bias `U(±1/√c_in)`.
    pub fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        padding: usize,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get_with_hints(
            (c_out, c_in, kernel, kernel),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        let bias = if bias {
            let bound = 1.0 / (c_in as f64).sqrt();
            Some(vb.get_with_hints(
                c_out,
                "bias",
                candle_nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )?)
        } else {
            None
        };
        Self::from_tensors(weight, bias, padding)
    }

    /// From a `(O, C, kh, kw)` weight and an optional `(O)` bias.
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>, padding: usize) -> Result<Self> {
        let (o, _, kh, kw) = weight.dims4()?;
        if kh == 0 || kw == 0 || bias.as_ref().is_some_and(|b| b.dims() != [o]) {
            return Err(Error::shape(
                "conv2d",
                format!(
                    "weight {:?} with bias {:?}: need (O, C, kh ≥ 1, kw ≥ 1) and (O)",
                    weight.dims(),
                    bias.as_ref().map(|b| b.dims().to_vec())
                ),
            ));
        }
        Ok(Self {
            weight,
            bias,
            padding,
        })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// `(B, C, H, W)` → `(B, O, H + 2p − kh + 1, W + 2p − kw + 1)`, in `x`'s dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (o, c, kh, kw) = self.weight.dims4()?;
        let (_, xc, h, w) = x.dims4()?;
        let p = self.padding;
        if xc != c || h + 2 * p < kh || w + 2 * p < kw {
            return Err(Error::shape(
                "conv2d",
                format!(
                    "input {:?} for weight {:?}, padding {p}",
                    x.dims(),
                    self.weight.dims()
                ),
            ));
        }
        let y = if kh == 1 && kw == 1 && p == 0 {
            conv2d_1x1(x, &self.weight)?
        } else if x.device().is_cpu() {
            conv2d_im2col(x, &self.weight, p)?
        } else {
            x.conv2d(&self.weight, p, 1, 1, 1)?
        };
        match &self.bias {
            Some(b) => Ok(y.broadcast_add(&b.reshape((1, o, 1, 1))?)?),
            None => Ok(y),
        }
    }
}

/// `W (O, C) · x (B, C, H·W)`: a 1×1 convolution without bias.
fn conv2d_1x1(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let o = weight.dim(0)?;
    let wm = weight.reshape((o, c))?;
    let y = if b == 1 {
        wm.matmul(&x.reshape((c, h * w))?)?
    } else {
        wm.broadcast_matmul(&x.reshape((b, c, h * w))?)?
    };
    Ok(y.reshape((b, o, h, w))?)
}

/// A stride-1 convolution without bias as im2col and one product: the `kh·kw` shifted views
/// of the zero-padded input stacked as `(B, C·kh·kw, Ho·Wo)` columns (the weight's own
/// `(c, ky, kx)` order), then `W (O, C·kh·kw) · cols`. Elementary ops only, so any dtype a
/// product runs in, and differentiable.
pub fn conv2d_im2col(x: &Tensor, weight: &Tensor, padding: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (o, wc, kh, kw) = weight.dims4()?;
    let p = padding;
    if wc != c || kh == 0 || kw == 0 || h + 2 * p < kh || w + 2 * p < kw {
        return Err(Error::shape(
            "conv2d_im2col",
            format!(
                "input {:?} for weight {:?}, padding {p}",
                x.dims(),
                weight.dims()
            ),
        ));
    }
    let (ho, wo) = (h + 2 * p + 1 - kh, w + 2 * p + 1 - kw);
    let padded = if p > 0 {
        x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?
    } else {
        x.clone()
    };
    let mut taps = Vec::with_capacity(kh * kw);
    for ky in 0..kh {
        for kx in 0..kw {
            taps.push(padded.narrow(2, ky, ho)?.narrow(3, kx, wo)?);
        }
    }
    let cols = Tensor::stack(&taps, 2)?.reshape((b, c * kh * kw, ho * wo))?;
    let wm = weight.reshape((o, c * kh * kw))?;
    let y = if b == 1 {
        wm.matmul(&cols.squeeze(0)?)?
    } else {
        wm.broadcast_matmul(&cols)?
    };
    Ok(y.reshape((b, o, ho, wo))?)
}

/// Test helper: every variable of `varmap` got a finite, non-zero gradient from `loss`.
#[cfg(test)]
pub(crate) fn assert_every_variable_has_a_gradient(
    varmap: &candle_nn::VarMap,
    loss: &Tensor,
    context: &str,
) -> Result<()> {
    let grads = loss.backward()?;
    let data = varmap
        .data()
        .lock()
        .map_err(|e| crate::error::Error::shape("test", e.to_string()))?;
    for (name, var) in data.iter() {
        let n = grads
            .get(var.as_tensor())
            .map(|g| g.sqr()?.sum_all()?.to_scalar::<f32>())
            .transpose()?
            .unwrap_or(0.0);
        assert!(n.is_finite() && n > 0.0, "{name}{context}: |grad|² = {n}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_and_differentiable_norms_agree() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 5, 16), &dev)?;
        let w = Tensor::randn(1f32, 0.1, 16, &dev)?;
        let b = Tensor::randn(0f32, 0.1, 16, &dev)?;
        let ln = LayerNorm {
            weight: w.clone(),
            bias: b,
            eps: 1e-5,
        };
        let xv = Var::from_tensor(&x)?;
        let fused = ln.forward(&x)?;
        let slow = ln.forward(xv.as_tensor())?;
        let diff = (fused - slow)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "layer norm fused vs composed: {diff}");

        let rms = RmsNorm {
            weight: w,
            eps: 1e-6,
        };
        let diff = (rms.forward(&x)? - rms.forward(xv.as_tensor())?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "rms norm fused vs composed: {diff}");

        let diff = (softmax_last_dim(&x)? - softmax_last_dim(xv.as_tensor())?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-6, "softmax fused vs composed: {diff}");
        Ok(())
    }
}
