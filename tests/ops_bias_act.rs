//! The fused bias + activation epilogue (`ops::bias_act`) against candle's composition, for
//! every activation and float dtype, on the test device; and the fallbacks.

mod common;

use candle_core::{DType, Var};
use common::tensors::{dev_tensor_scaled, max_abs_diff};
use unires::config::Activation;
use unires::ops::{bias_act, bias_act_plain};

const ACTS: [Activation; 5] = [
    Activation::Gelu,
    Activation::GeluPytorchTanh,
    Activation::QuickGelu,
    Activation::Silu,
    Activation::Relu,
];

/// f32: within 1e-6 of candle's kernels on values up to ~8 (measured: GELU 4.8e-7 with the
/// 1.5e-7 erf approximation, quick GELU 2.4e-7, SiLU 4.8e-7; a wrong activation or a bias
/// added to the wrong axis is off by 1e-1 or more). f16/bf16: computed in f32 and rounded once where candle rounds after the add too:
/// at most one unit in the last place of the largest values, 8 × 2⁻¹⁰ = 7.8e-3 for f16
/// (measured 3.9e-3) and 8 × 2⁻⁷ = 6.3e-2 for bf16 (measured 3.1e-2).
#[test]
fn fused_matches_the_composition() {
    for (dtype, tol) in [
        (DType::F32, 1e-6),
        (DType::F16, 7.9e-3),
        (DType::BF16, 6.3e-2),
    ] {
        for act in ACTS {
            // 37 rows of 300 (not a multiple of the task size), values up to ~±8.
            let x = dev_tensor_scaled(&[37, 300], 1, 4.0)
                .to_dtype(dtype)
                .unwrap();
            let b = dev_tensor_scaled(&[300], 2, 4.0).to_dtype(dtype).unwrap();
            let want = bias_act_plain(&x, &b, act).unwrap();
            let got = bias_act(x.copy().unwrap(), &b, act).unwrap();
            let d = max_abs_diff(&got, &want);
            assert!(d <= tol, "{dtype:?} {act:?}: {d:e}");
        }
    }
}

#[test]
fn higher_rank_inputs_and_fallbacks() {
    let x = dev_tensor_scaled(&[2, 3, 5, 64], 3, 2.0);
    let b = dev_tensor_scaled(&[64], 4, 1.0);
    let want = bias_act_plain(&x, &b, Activation::Gelu).unwrap();
    // Not contiguous: the composition.
    let xt = x.transpose(1, 2).unwrap();
    let got = bias_act(xt.clone(), &b, Activation::Gelu).unwrap();
    let d = max_abs_diff(&got, &bias_act_plain(&xt, &b, Activation::Gelu).unwrap());
    assert!(d <= 1e-6, "{d}");
    // Tracking gradients: the composition, and the gradient flows.
    let v = Var::from_tensor(&x).unwrap();
    let y = bias_act(v.as_tensor().clone(), &b, Activation::Gelu).unwrap();
    assert!(max_abs_diff(&y, &want) <= 1e-6);
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(v.as_tensor()).is_some());
    // A bias of the wrong length is a typed error.
    let bad = dev_tensor_scaled(&[63], 5, 1.0);
    assert!(bias_act(x.clone(), &bad, Activation::Gelu).is_err());
    let got = bias_act(x.copy().unwrap(), &b, Activation::Gelu).unwrap();
    assert!(max_abs_diff(&got, &want) <= 1e-6);
}
