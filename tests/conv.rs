//! The model's dense convolutions, `model::nn::Conv2d` (the UniRES++ neck, skip projections
//! and region level projections) and the SAM decoder's `ConvTranspose2x2`, against candle's
//! `conv2d` / `conv_transpose2d` (the reference): forward and gradients in f32, and the half
//! dtypes against the f32 reference within their rounding. candle's CPU convolutions have
//! no bf16 kernel, so the bf16 runs can only be held against f32.
//!
//! On the device `UNIRES_DEVICE` names (default the CPU), with the same tolerances.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Tensor, Var};
use candle_nn::VarBuilder;
use common::tensors::{dev_tensor as tensor, flat, max_abs_diff};
use unires::model::mask_decoder::ConvTranspose2x2;
use unires::model::nn::{conv2d_im2col, Conv2d};

/// (B, C, H, W, O, K, pad): the heads' 1×1 and 3×3 shapes, batch > 1, odd and lopsided sizes,
/// padding wider than the kernel's half, a 1×1 with padding, a one-pixel input.
const SHAPES: &[(usize, usize, usize, usize, usize, usize, usize)] = &[
    (1, 96, 10, 10, 64, 1, 0),
    (2, 32, 13, 17, 48, 1, 0),
    (1, 64, 10, 10, 64, 3, 1),
    (2, 5, 9, 40, 7, 3, 1),
    (1, 4, 6, 6, 3, 3, 0),
    (1, 3, 5, 7, 2, 3, 2),
    (1, 6, 4, 5, 3, 1, 1),
    (1, 8, 1, 1, 4, 3, 1),
];

/// Forward in f32: |ours − candle| ≤ 1e-5 (measured ≤ 7.2e-7 on the CPU; outputs are O(1)).
const F32_TOL: f32 = 1e-5;
/// Gradients in f32, relative to the largest |gradient| (at least 1; a weight gradient sums
/// B·H·W products): ≤ 1e-5 of it (measured ≤ 6.8e-7 of it, 2.3e-5 absolute).
const GRAD_TOL: f32 = 1e-5;

/// The reference: candle's `conv2d` plus the bias, in f32.
fn reference(x: &Tensor, w: &Tensor, b: Option<&Tensor>, pad: usize) -> Tensor {
    let y = x.conv2d(w, pad, 1, 1, 1).unwrap();
    match b {
        Some(b) => y
            .broadcast_add(&b.reshape((1, b.dim(0).unwrap(), 1, 1)).unwrap())
            .unwrap(),
        None => y,
    }
}

/// A weight with PyTorch's default scale (|w| < 1/√fan_in), so outputs stay O(1) whatever
/// the fan-in and one tolerance fits every shape.
fn weight(o: usize, c: usize, k: usize, seed: u64) -> Tensor {
    let fan_in = (c * k * k) as f64;
    tensor(&[o, c, k, k], seed)
        .affine(1.0 / fan_in.sqrt(), 0.0)
        .unwrap()
}

#[test]
fn conv2d_matches_candle_conv2d_in_f32() {
    for (i, &(b, c, h, w, o, k, pad)) in SHAPES.iter().enumerate() {
        let i = i as u64;
        let x = tensor(&[b, c, h, w], i);
        let wt = weight(o, c, k, 100 + i);
        let bias = tensor(&[o], 200 + i);
        let want = reference(&x, &wt, Some(&bias), pad);
        let conv = Conv2d::from_tensors(wt.clone(), Some(bias), pad).unwrap();
        let got = conv.forward(&x).unwrap();
        let err = max_abs_diff(&got, &want);
        eprintln!("{:?}: max |ours - conv2d| = {err:.2e}", SHAPES[i as usize]);
        assert!(err <= F32_TOL, "{:?}: {err:e}", SHAPES[i as usize]);
        let err = max_abs_diff(
            &conv2d_im2col(&x, &wt, pad).unwrap(),
            &reference(&x, &wt, None, pad),
        );
        assert!(err <= F32_TOL, "im2col {:?}: {err:e}", SHAPES[i as usize]);
    }
}

#[test]
fn conv2d_gradients_match_candle_conv2d() {
    for (i, &(b, c, h, w, o, k, pad)) in SHAPES.iter().enumerate() {
        let i = i as u64;
        let xv = Var::from_tensor(&tensor(&[b, c, h, w], i)).unwrap();
        let wv = Var::from_tensor(&weight(o, c, k, 100 + i)).unwrap();
        let bv = Var::from_tensor(&tensor(&[o], 200 + i)).unwrap();
        let y = reference(&xv, &wv, Some(&bv), pad);
        let go = tensor(y.dims(), 300 + i);
        let want = (y * &go).unwrap().sum_all().unwrap().backward().unwrap();
        let conv = Conv2d::from_tensors(wv.as_tensor().clone(), Some(bv.as_tensor().clone()), pad)
            .unwrap();
        let loss = (conv.forward(&xv).unwrap() * &go)
            .unwrap()
            .sum_all()
            .unwrap();
        let got = loss.backward().unwrap();
        for (name, v) in [("x", &xv), ("weight", &wv), ("bias", &bv)] {
            let want = want.get(v).unwrap();
            let err = max_abs_diff(got.get(v).unwrap(), want);
            let scale = flat(want).iter().fold(1f32, |m, g| m.max(g.abs()));
            eprintln!(
                "{:?} ∂{name}: max |ours - conv2d| = {err:.2e} (max |∂{name}| {scale:.1})",
                SHAPES[i as usize]
            );
            assert!(
                err <= GRAD_TOL * scale,
                "{:?} ∂{name}: {err:e} > {GRAD_TOL}·{scale}",
                SHAPES[i as usize]
            );
        }
    }
}

/// f16 and bf16 weights and inputs against the f32 reference on the same (rounded) values:
/// the error is the output's own rounding plus the product's, so it is bounded relative to
/// Σ|w·x| (the reference convolution of the absolute values), elementwise:
/// |half − ref| ≤ tol·(Σ|w·x| + |b|). tol = 2⁻⁹ for f16 and 2⁻⁶ for bf16, four times their
/// unit roundoff; measured 4.5e-4 (f16) and 3.8e-3 (bf16), one unit roundoff each. In f16,
/// ours against candle's f16 `conv2d` holds the same bound (measured 2.4e-4).
#[test]
fn half_dtypes_match_f32_within_rounding() {
    for (dtype, tol) in [(DType::F16, 2f32.powi(-9)), (DType::BF16, 2f32.powi(-6))] {
        let mut worst = [0f32; 2];
        for (i, &(b, c, h, w, o, k, pad)) in SHAPES.iter().enumerate() {
            let i = i as u64;
            // Round the inputs first: what is compared is the arithmetic, not the inputs.
            let round = |t: Tensor| t.to_dtype(dtype).unwrap();
            let (xh, wh, bh) = (
                round(tensor(&[b, c, h, w], i)),
                round(weight(o, c, k, 100 + i)),
                round(tensor(&[o], 200 + i)),
            );
            let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            let want = reference(&f32(&xh), &f32(&wh), Some(&f32(&bh)), pad);
            let scale = reference(
                &f32(&xh).abs().unwrap(),
                &f32(&wh).abs().unwrap(),
                None,
                pad,
            )
            .broadcast_add(&f32(&bh).abs().unwrap().reshape((1, o, 1, 1)).unwrap())
            .unwrap();
            let (wh_ref, bh_ref) = (wh.clone(), bh.clone());
            let got = Conv2d::from_tensors(wh, Some(bh), pad)
                .unwrap()
                .forward(&xh)
                .unwrap();
            assert_eq!(got.dtype(), dtype);
            assert_eq!(got.dims(), want.dims());
            // f16 has a candle CPU kernel: ours must hold the same bound against it as well.
            let mut wants = vec![want];
            if dtype == DType::F16 {
                wants.push(reference(&xh, &wh_ref, Some(&bh_ref), pad));
            }
            for (j, want) in wants.iter().enumerate() {
                for ((g, r), s) in flat(&got).iter().zip(flat(want)).zip(flat(&scale)) {
                    let rel = (g - r).abs() / s.max(f32::MIN_POSITIVE);
                    assert!(
                        rel <= tol,
                        "{dtype:?} {:?} vs {}: |{g} - {r}| > {tol}·{s}",
                        SHAPES[i as usize],
                        ["f32", "candle f16"][j]
                    );
                    worst[j] = worst[j].max(rel);
                }
            }
        }
        eprintln!(
            "{dtype:?}: max |ours - f32| / Σ|w·x| = {:.2e}, vs candle f16 {:.2e} (tolerance {tol:.2e})",
            worst[0], worst[1]
        );
    }
}

/// `ConvTranspose2x2` from a `(C_in, C_out, 2, 2)` weight and a bias.
fn conv_transpose(w: &Tensor, b: &Tensor) -> ConvTranspose2x2 {
    let (c_in, c_out, _, _) = w.dims4().unwrap();
    let map = HashMap::from([
        ("weight".to_string(), w.clone()),
        ("bias".to_string(), b.clone()),
    ]);
    let vb = VarBuilder::from_tensors(map, w.dtype(), w.device());
    ConvTranspose2x2::new(c_in, c_out, vb).unwrap()
}

/// The SAM decoder's upscaling (kernel 2, stride 2) against candle's `conv_transpose2d`:
/// ≤ 1e-5 in f32 (measured ≤ 3.6e-7); in bf16 (no candle CPU kernel) against the f32
/// reference on the same rounded values, within 2⁻⁶·(Σ|w·x| + |b|) as above.
#[test]
fn conv_transpose_2x2_matches_candle_conv_transpose2d() {
    for (i, &(b, c, h, w, o)) in [(1, 64, 10, 10, 16), (2, 7, 5, 9, 3), (1, 4, 1, 1, 2)]
        .iter()
        .enumerate()
    {
        let i = i as u64;
        let x = tensor(&[b, c, h, w], 400 + i);
        let wt = tensor(&[c, o, 2, 2], 500 + i)
            .affine(1.0 / (c as f64).sqrt(), 0.0)
            .unwrap();
        let bias = tensor(&[o], 600 + i);
        let reference = |x: &Tensor, w: &Tensor, bias: &Tensor| {
            x.conv_transpose2d(w, 0, 0, 2, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, o, 1, 1)).unwrap())
                .unwrap()
        };
        let got = conv_transpose(&wt, &bias).forward(&x).unwrap();
        let err = max_abs_diff(&got, &reference(&x, &wt, &bias));
        eprintln!(
            "conv transpose {:?}: max |ours - candle| = {err:.2e}",
            x.dims()
        );
        assert!(err <= F32_TOL, "{:?}: {err:e}", x.dims());

        let bf = DType::BF16;
        let (xh, wh, bh) = (
            x.to_dtype(bf).unwrap(),
            wt.to_dtype(bf).unwrap(),
            bias.to_dtype(bf).unwrap(),
        );
        let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let want = reference(&f32(&xh), &f32(&wh), &f32(&bh));
        let scale = reference(
            &f32(&xh).abs().unwrap(),
            &f32(&wh).abs().unwrap(),
            &f32(&bh).abs().unwrap(),
        );
        let got = conv_transpose(&wh, &bh).forward(&xh).unwrap();
        assert_eq!(got.dtype(), bf);
        let tol = 2f32.powi(-6);
        let mut worst = 0f32;
        for ((g, r), s) in flat(&got).iter().zip(flat(&want)).zip(flat(&scale)) {
            assert!(
                (g - r).abs() <= tol * s,
                "bf16 {:?}: |{g} - {r}| > {tol}·{s}",
                x.dims()
            );
            worst = worst.max((g - r).abs() / s.max(f32::MIN_POSITIVE));
        }
        eprintln!(
            "conv transpose {:?} bf16: max |ours - f32| / Σ|w·x| = {worst:.2e}",
            x.dims()
        );
    }
}

#[test]
fn bad_shapes_are_errors() {
    let conv = Conv2d::from_tensors(tensor(&[4, 3, 3, 3], 1), None, 0).unwrap();
    // Channels differ; input smaller than the kernel.
    assert!(conv.forward(&tensor(&[1, 2, 8, 8], 2)).is_err());
    assert!(conv.forward(&tensor(&[1, 3, 2, 8], 3)).is_err());
    assert!(conv2d_im2col(&tensor(&[1, 3, 2, 2], 4), &tensor(&[4, 3, 3, 3], 1), 0).is_err());
    // A bias of the wrong length; a kernel of size 0.
    assert!(Conv2d::from_tensors(tensor(&[4, 3, 1, 1], 1), Some(tensor(&[3], 5)), 0).is_err());
    assert!(Conv2d::from_tensors(tensor(&[4, 3, 0, 1], 1), None, 0).is_err());
}
