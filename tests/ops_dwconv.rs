//! Depthwise convolution: forward against candle's grouped `conv2d` (the reference), backward
//! against the elementary-op composition's gradients and against finite differences.
//!
//! On the device `UNIRES_DEVICE` names (default the CPU), with the same tolerances, except
//! one: on the CPU the explicit `depthwise_conv2d_backward` and autograd run the same kernel
//! (agreement within 1e-6), while on other devices the explicit backward differentiates the
//! shifted composition and autograd goes through candle's `conv2d`, so they are held to the
//! composition tolerance (1e-4).

mod common;

use candle_core::{DType, Tensor, Var};
use common::tensors::{dev_tensor as tensor, dot, max_abs_diff};
use unires::ops::dwconv::{depthwise_conv2d, depthwise_conv2d_backward, depthwise_conv2d_shifted};

/// (B, C, H, W, K, K', pad)
const SHAPES: &[(usize, usize, usize, usize, usize, usize, usize)] = &[
    (2, 5, 13, 17, 7, 7, 3),
    (1, 8, 16, 16, 7, 7, 3),
    (1, 3, 9, 40, 3, 3, 1),
    (2, 4, 6, 6, 5, 5, 0),
    (1, 2, 5, 5, 3, 3, 4),
    (1, 3, 11, 70, 3, 5, 2),
    (1, 2, 1, 1, 1, 1, 0),
];

#[test]
fn forward_matches_grouped_conv2d() {
    for (i, &(b, c, h, w, kh, kw, pad)) in SHAPES.iter().enumerate() {
        let x = tensor(&[b, c, h, w], i as u64);
        let wt = tensor(&[c, 1, kh, kw], 100 + i as u64);
        let bias = tensor(&[c], 200 + i as u64);
        let want = x
            .conv2d(&wt, pad, 1, 1, c)
            .unwrap()
            .broadcast_add(&bias.reshape((1, c, 1, 1)).unwrap())
            .unwrap();
        let got = depthwise_conv2d(&x, &wt, Some(&bias), pad).unwrap();
        let err = max_abs_diff(&got, &want);
        eprintln!("{:?}: max |ours - conv2d| = {err:.2e}", SHAPES[i]);
        assert!(err < 1e-5, "{:?}: max error {err:e}", SHAPES[i]);
        let nobias = depthwise_conv2d(&x, &wt, None, pad).unwrap();
        let want = x.conv2d(&wt, pad, 1, 1, c).unwrap();
        assert!(max_abs_diff(&nobias, &want) < 1e-5);
    }
}

#[test]
fn half_inputs_match_f32_within_rounding() {
    let (b, c, h, w) = (1, 6, 20, 33);
    let x = tensor(&[b, c, h, w], 1);
    let wt = tensor(&[c, 1, 7, 7], 2);
    let bias = tensor(&[c], 3);
    for (dtype, tol) in [(DType::F16, 4e-3), (DType::BF16, 3e-2)] {
        let (xh, wh, bh) = (
            x.to_dtype(dtype).unwrap(),
            wt.to_dtype(dtype).unwrap(),
            bias.to_dtype(dtype).unwrap(),
        );
        let got = depthwise_conv2d(&xh, &wh, Some(&bh), 3).unwrap();
        assert_eq!(got.dtype(), dtype);
        let want = depthwise_conv2d(
            &xh.to_dtype(DType::F32).unwrap(),
            &wh.to_dtype(DType::F32).unwrap(),
            Some(&bh.to_dtype(DType::F32).unwrap()),
            3,
        )
        .unwrap();
        let err = max_abs_diff(&got, &want);
        eprintln!("{dtype:?}: max |half - f32| = {err:.2e}");
        assert!(err < tol, "{dtype:?}: {err:e}");
    }
}

#[test]
fn backward_matches_composition_and_finite_differences() {
    for (i, &(b, c, h, w, kh, kw, pad)) in SHAPES.iter().enumerate() {
        let x = Var::from_tensor(&tensor(&[b, c, h, w], i as u64)).unwrap();
        let wt = Var::from_tensor(&tensor(&[c, 1, kh, kw], 100 + i as u64)).unwrap();
        let bias = Var::from_tensor(&tensor(&[c], 200 + i as u64)).unwrap();
        let y = depthwise_conv2d(&x, &wt, Some(&bias), pad).unwrap();
        let g_out = tensor(y.dims(), 300 + i as u64);
        let loss = (&y * &g_out).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let y_ref = depthwise_conv2d_shifted(&x, &wt, Some(&bias), pad).unwrap();
        let grads_ref = (&y_ref * &g_out)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, v) in [("x", &x), ("weight", &wt), ("bias", &bias)] {
            let got = grads.get(v).unwrap();
            let want = grads_ref.get(v).unwrap();
            let err = max_abs_diff(got, want);
            eprintln!(
                "{:?} grad {name}: max |ours - composition| = {err:.2e}",
                SHAPES[i]
            );
            assert!(err < 1e-4, "{:?} grad {name}: {err:e}", SHAPES[i]);
        }
        // The explicit backward function gives the same gradients.
        let (gx, gw, gb) = depthwise_conv2d_backward(&x, &wt, &g_out, pad).unwrap();
        let tol = if x.device().is_cpu() { 1e-6 } else { 1e-4 };
        for (name, got, v) in [("x", &gx, &x), ("weight", &gw, &wt), ("bias", &gb, &bias)] {
            let err = max_abs_diff(got, grads.get(v).unwrap());
            assert!(err < tol, "{:?} explicit grad {name}: {err:e}", SHAPES[i]);
        }
        // Central differences along random directions (the loss is linear in each input).
        let loss_at = |xx: &Tensor, ww: &Tensor, bb: &Tensor| {
            dot(&depthwise_conv2d(xx, ww, Some(bb), pad).unwrap(), &g_out)
        };
        let eps = 0.25;
        for (which, v) in [(0, &x), (1, &wt), (2, &bias)] {
            let dir = tensor(v.dims(), 400 + which);
            let step = (&dir * eps).unwrap();
            let shift = |sign: f64| -> f64 {
                let moved = (v.as_tensor() + (&step * sign).unwrap()).unwrap();
                match which {
                    0 => loss_at(&moved, &wt, &bias),
                    1 => loss_at(&x, &moved, &bias),
                    _ => loss_at(&x, &wt, &moved),
                }
            };
            let fd = (shift(1.0) - shift(-1.0)) / (2.0 * eps);
            let an = dot(grads.get(v).unwrap(), &dir);
            assert!(
                (fd - an).abs() <= 1e-3 * (1.0 + an.abs()),
                "{:?} input {which}: finite difference {fd} vs backward {an}",
                SHAPES[i]
            );
        }
    }
}

#[test]
fn empty_batches_and_channels() {
    for (b, c) in [(0, 3), (2, 0)] {
        let x = Var::from_tensor(&tensor(&[b, c, 8, 8], 1)).unwrap();
        let w = Var::from_tensor(&tensor(&[c, 1, 3, 3], 2)).unwrap();
        let y = depthwise_conv2d(&x, &w, None, 1).unwrap();
        assert_eq!(y.dims(), &[b, c, 8, 8]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(grads.get(&w).unwrap().dims(), w.dims());
    }
}

#[test]
fn bad_shapes_are_errors() {
    let x = tensor(&[1, 3, 8, 8], 1);
    assert!(depthwise_conv2d(&x, &tensor(&[4, 1, 3, 3], 2), None, 1).is_err());
    assert!(depthwise_conv2d(&x, &tensor(&[3, 2, 3, 3], 2), None, 1).is_err());
    assert!(depthwise_conv2d(&x, &tensor(&[3, 1, 9, 9], 2), None, 0).is_err());
    assert!(depthwise_conv2d(&x, &tensor(&[3, 1, 3, 3], 2), Some(&tensor(&[4], 3)), 1).is_err());
}
