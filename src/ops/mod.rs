//! Custom operations (candle `CustomOp`s): ROI Align, depthwise convolution, fused attention
//! and fused mask upsampling. Each CPU path is always compiled and is the reference; CUDA and
//! Metal paths (`kernels/cuda`, `kernels/metal`) sit behind the `cuda` / `metal` features.
//! The op files hand the GPU backends (`cuda.rs`, `metal.rs`) the plain-number structs of
//! `params`, so the backends depend on no op file.

pub mod attention;
mod attention_cpu;
pub mod bias_act;
pub(crate) mod cpu;
pub mod dwconv;
mod params;
pub mod residual;
pub mod roi_align;
pub mod upsample;

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(all(feature = "metal", target_os = "macos"))]
mod metal;

pub use attention::{attention, attention_fused, attention_plain, AttnMask};
pub use bias_act::{bias_act, bias_act_plain};
pub use dwconv::{depthwise_conv2d, depthwise_conv2d_backward};
pub use residual::{layer_norm_to_nhwc, scaled_residual_nchw, scaled_residual_plain};
pub use roi_align::{roi_align, roi_align_backward, RoiAlign};
pub use upsample::{
    upsample_mask_logits, upsample_mask_probs, upsample_masks, upsample_masks_and_probs, MaskResize,
};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// Whether this build has a kernel for tensors on `device` (the CPU always; CUDA and Metal
/// with their cargo features).
pub(crate) fn has_kernel_for(device: &Device) -> bool {
    match device {
        Device::Cpu => true,
        Device::Cuda(_) => cfg!(feature = "cuda"),
        Device::Metal(_) => cfg!(all(feature = "metal", target_os = "macos")),
    }
}

/// `Ok` when this build has a kernel for `t`'s device, [`Error::FeatureDisabled`] naming the
/// feature to turn on otherwise (a GPU tensor can exist without our feature when another
/// crate in the build enables candle's backend).
pub(crate) fn require_kernel(t: &Tensor, what: &'static str) -> Result<()> {
    if has_kernel_for(t.device()) {
        return Ok(());
    }
    let feature = if t.device().is_cuda() {
        "cuda"
    } else {
        "metal"
    };
    Err(Error::FeatureDisabled { feature, what })
}

/// `Ok` for the float dtypes the kernels read (f32, f16, bf16).
pub(crate) fn require_float(t: &Tensor, op: &'static str, name: &str) -> Result<()> {
    match t.dtype() {
        DType::F32 | DType::F16 | DType::BF16 => Ok(()),
        other => Err(Error::DTypeMismatch {
            name: format!("{op}: {name}"),
            expected: "f32, f16 or bf16".into(),
            got: format!("{other:?}"),
        }),
    }
}

/// `Ok` when `b` lives on the same device as `a`.
pub(crate) fn require_same_device(a: &Tensor, b: &Tensor, op: &'static str) -> Result<()> {
    if a.device().same_device(b.device()) {
        Ok(())
    } else {
        Err(Error::DeviceMismatch {
            op,
            first: format!("{:?}", a.device().location()),
            second: format!("{:?}", b.device().location()),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use candle_core::{Device, Tensor};

    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
        d.max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// The portable kernels (separate multiply and add, used on CPUs without AVX2+FMA) give
    /// the same results as the dispatched ones on this CPU.
    #[test]
    fn portable_kernels_match_dispatched_ones() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (1, 4, 70, 40), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (1, 2, 90, 40), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, 2, 90, 24), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 21, 37), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (3, 1, 7, 7), &dev).unwrap();
        let low = Tensor::randn(0f32, 4.0, (2, 16, 16), &dev).unwrap();
        let r = MaskResize {
            padded: (64, 64),
            valid: (48, 64),
            orig: (75, 99),
        };
        let run = || {
            (
                attention_fused(&q, &k, &v, AttnMask::Causal, 0.2).unwrap(),
                depthwise_conv2d(&x, &w, None, 3).unwrap(),
                upsample_mask_probs(&low, &r).unwrap(),
            )
        };
        let fast = run();
        cpu::FORCE_PORTABLE.store(true, Ordering::Relaxed);
        let portable = run();
        cpu::FORCE_PORTABLE.store(false, Ordering::Relaxed);
        assert!(max_diff(&fast.0, &portable.0) < 1e-5);
        assert!(max_diff(&fast.1, &portable.1) < 1e-5);
        assert!(max_diff(&fast.2, &portable.2) < 1e-6);
    }
}
