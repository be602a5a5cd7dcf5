//! The fused ConvNeXt block ending (`ops::scaled_residual_nchw`: bias, layer scale, NHWC →
//! NCHW and the residual in one pass) and the fused channels-last LayerNorm
//! (`ops::layer_norm_to_nhwc`) against candle's composition, on the test device.

mod common;

use candle_core::{DType, Var};
use common::tensors::{dev_tensor_scaled, max_abs_diff};
use unires::ops::{layer_norm_to_nhwc, scaled_residual_nchw, scaled_residual_plain};

/// f32: within 1e-6 of the composition on values up to ~8 (one rounding against three; a
/// transposed read or a channel off by one is off by 1 or more). f16/bf16: the fused path
/// rounds once where the composition rounds after each op: a few units in the last place of
/// values up to ~16, 4 × 16 × 2⁻¹¹ = 3.1e-2 for f16 and 4 × 16 × 2⁻⁸ = 0.25 for bf16.
#[test]
fn fused_matches_the_composition() {
    // Channels not a multiple of the 16-channel tile, positions not of the 64-position tile,
    // two images.
    for (n, c, h, w) in [(2, 40, 9, 11), (1, 192, 16, 16), (1, 7, 1, 3)] {
        let x = dev_tensor_scaled(&[n, c, h, w], 1, 4.0);
        let y = dev_tensor_scaled(&[n, h, w, c], 2, 4.0);
        let b = dev_tensor_scaled(&[c], 3, 1.0);
        let s = dev_tensor_scaled(&[c], 4, 1.0);
        for (dtype, tol) in [
            (DType::F32, 1e-6),
            (DType::F16, 3.1e-2),
            (DType::BF16, 0.25),
        ] {
            let cast = |t: &candle_core::Tensor| t.to_dtype(dtype).unwrap();
            let (x, y, b, s) = (cast(&x), cast(&y), cast(&b), cast(&s));
            for (bias, scale) in [
                (Some(&b), Some(&s)),
                (Some(&b), None),
                (None, Some(&s)),
                (None, None),
            ] {
                let want = scaled_residual_plain(&x, &y, bias, scale).unwrap();
                let got = scaled_residual_nchw(&x, &y, bias, scale).unwrap();
                assert_eq!(got.dims(), x.dims());
                let d = max_abs_diff(&got, &want);
                assert!(
                    d <= tol,
                    "{dtype:?} {:?} bias {} scale {}: {d:e}",
                    x.dims(),
                    bias.is_some(),
                    scale.is_some()
                );
            }
        }
        // `y` as rows (N·H·W, C) gives the same.
        let rows = y.reshape((n * h * w, c)).unwrap();
        let a = scaled_residual_nchw(&x, &rows, Some(&b), Some(&s)).unwrap();
        let z = scaled_residual_nchw(&x, &y, Some(&b), Some(&s)).unwrap();
        assert_eq!(max_abs_diff(&a, &z), 0.0);
    }
}

#[test]
fn fallbacks_gradients_and_bad_shapes() {
    let (n, c, h, w) = (1, 24, 5, 6);
    let x = dev_tensor_scaled(&[n, c, h, w], 5, 2.0);
    let y = dev_tensor_scaled(&[n, h, w, c], 6, 2.0);
    let s = dev_tensor_scaled(&[c], 7, 1.0);
    let want = scaled_residual_plain(&x, &y, None, Some(&s)).unwrap();
    // A non-contiguous `y` (the same values): the composition.
    let yt = y
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .transpose(1, 2)
        .unwrap();
    assert!(!yt.is_contiguous());
    let got = scaled_residual_nchw(&x, &yt, None, Some(&s)).unwrap();
    assert!(max_abs_diff(&got, &want) <= 1e-6);
    // Tracking gradients: the composition, and the gradient reaches the layer scale.
    let sv = Var::from_tensor(&s).unwrap();
    let out = scaled_residual_nchw(&x, &y, None, Some(sv.as_tensor())).unwrap();
    assert!(max_abs_diff(&out, &want) <= 1e-6);
    let grads = out.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(sv.as_tensor()).is_some());
    // Mismatched shapes are typed errors.
    let short = dev_tensor_scaled(&[c - 1], 8, 1.0);
    assert!(scaled_residual_nchw(&x, &y, Some(&short), None).is_err());
    assert!(scaled_residual_nchw(&x, &y, None, Some(&short)).is_err());
    let wrong = dev_tensor_scaled(&[n, h, c, w], 9, 1.0);
    assert!(scaled_residual_nchw(&x, &wrong, None, None).is_err());
}

/// The LayerNorm of the permuted input computed in f64 (mean, then centred variance), as f32.
fn layer_norm_f64(
    x: &candle_core::Tensor,
    w: &candle_core::Tensor,
    b: &candle_core::Tensor,
    eps: f64,
) -> candle_core::Tensor {
    use candle_core::D;
    let f = |t: &candle_core::Tensor| t.to_dtype(DType::F64).unwrap();
    let xl = f(&x.permute((0, 2, 3, 1)).unwrap());
    let mean = xl.mean_keepdim(D::Minus1).unwrap();
    let xc = xl.broadcast_sub(&mean).unwrap();
    let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    let y = xc
        .broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
        .unwrap();
    let y = y
        .broadcast_mul(&f(w))
        .unwrap()
        .broadcast_add(&f(b))
        .unwrap();
    y.to_dtype(DType::F32).unwrap()
}

/// f32: within 4e-6 of an f64 reference for unit-scale outputs times weights up to ~4, on
/// inputs offset by 3 (centring first keeps the variance exact where candle's one-pass
/// `layer_norm` is off by 1.6e-5 here; a wrong position's statistics or a transposed write is
/// off by 1 or more). Half precision: one rounding of the output, 2 × 16 × 2⁻¹¹ for f16 and
/// 2 × 16 × 2⁻⁸ for bf16 on outputs up to ~16.
#[test]
fn layer_norm_to_nhwc_matches_the_permuted_layer_norm() {
    for (n, c, h, w) in [(2, 40, 9, 11), (1, 192, 12, 12), (1, 3, 1, 70)] {
        // An offset per channel, so that centring matters.
        let x = (dev_tensor_scaled(&[n, c, h, w], 11, 2.0) + 3.0).unwrap();
        let wt = dev_tensor_scaled(&[c], 12, 4.0);
        let b = dev_tensor_scaled(&[c], 13, 1.0);
        // Three channels: the variance of three values can be small, and 1/σ amplifies the
        // f32 rounding of x − mean (measured 6.4e-6).
        let f32_tol = if c < 8 { 2e-5 } else { 4e-6 };
        for (dtype, tol) in [
            (DType::F32, f32_tol),
            (DType::F16, 1.6e-2),
            (DType::BF16, 0.125),
        ] {
            let cast = |t: &candle_core::Tensor| t.to_dtype(dtype).unwrap();
            let xd = cast(&x);
            let got = layer_norm_to_nhwc(&xd, &cast(&wt), &cast(&b), 1e-6)
                .unwrap()
                .expect("the CPU takes the fused path");
            // The reference in f32 from the same rounded input.
            let want = layer_norm_f64(&xd, &wt, &b, 1e-6);
            assert_eq!(got.dims(), [n, h, w, c]);
            let d = max_abs_diff(&got.to_dtype(DType::F32).unwrap(), &want);
            assert!(d <= tol, "{dtype:?} {:?}: {d:e}", x.dims());
        }
    }
    // Wrong weight length: a typed error; tracking gradients: the caller composes.
    let x = dev_tensor_scaled(&[1, 8, 3, 3], 14, 1.0);
    let w = dev_tensor_scaled(&[8], 15, 1.0);
    assert!(layer_norm_to_nhwc(&x, &dev_tensor_scaled(&[7], 16, 1.0), &w, 1e-6).is_err());
    let wv = Var::from_tensor(&w).unwrap();
    assert!(layer_norm_to_nhwc(&x, wv.as_tensor(), &w, 1e-6)
        .unwrap()
        .is_none());
}
