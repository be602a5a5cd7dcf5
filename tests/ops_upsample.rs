//! Fused mask upsampling against the plain candle chain (`upsample_bilinear2d` → `narrow` →
//! `upsample_bilinear2d` → sigmoid / `> 0`): probabilities and logits within 1e-5, masks equal except
//! where the logit is within rounding of zero; odd sizes, several masks, both resize
//! directions in either stage.
//!
//! On the device `UNIRES_DEVICE` names (default the CPU), with the same tolerances; the plain
//! chain runs there too.

mod common;

use candle_core::{DType, Tensor};
use common::tensors::{dev_tensor_scaled as tensor_scaled, flat};
use unires::ops::upsample::{
    upsample_mask_logits, upsample_mask_probs, upsample_masks, upsample_masks_and_probs,
    upsample_masks_plain, MaskResize,
};

/// Seeded mask logits in [-8, 8).
fn logits(shape: &[usize], seed: u64) -> Tensor {
    tensor_scaled(shape, seed, 8.0)
}

/// (logit shape, resize)
fn cases() -> Vec<(Vec<usize>, MaskResize)> {
    let r = |padded, valid, orig| MaskResize {
        padded,
        valid,
        orig,
    };
    vec![
        (vec![1, 16, 16], r((64, 64), (48, 64), (97, 130))),
        (vec![3, 7, 9], r((30, 41), (30, 20), (11, 13))),
        (vec![2, 2, 10, 12], r((40, 48), (33, 48), (50, 71))),
        (vec![2, 64, 64], r((32, 32), (20, 32), (45, 60))),
        (vec![1, 5, 5], r((5, 5), (5, 5), (5, 5))),
        (vec![2, 1, 1], r((3, 4), (2, 3), (7, 1))),
        (vec![1, 32, 32], r((128, 128), (96, 128), (301, 401))),
    ]
}

#[test]
fn probabilities_match_the_plain_chain() {
    for (i, (shape, r)) in cases().into_iter().enumerate() {
        let x = logits(&shape, i as u64);
        let (_, plain) = upsample_masks_plain(&x, &r).unwrap();
        let fused = upsample_mask_probs(&x, &r).unwrap();
        assert_eq!(fused.dims(), plain.dims());
        let err = flat(&fused)
            .iter()
            .zip(flat(&plain))
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("case {i} {shape:?}: max |Δp| = {err:.2e}");
        assert!(err <= 1e-5, "case {i} {shape:?} {r:?}: max |Δp| = {err:e}");
    }
}

#[test]
fn logits_and_masks_match_the_plain_chain() {
    for (i, (shape, r)) in cases().into_iter().enumerate() {
        let x = logits(&shape, 50 + i as u64);
        let (plain_masks, _) = upsample_masks_plain(&x, &r).unwrap();
        // The plain chain's logits: the same chain without the sigmoid.
        let n: usize = shape[..shape.len() - 2].iter().product();
        let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let plain_logits = x
            .reshape((n, 1, h, w))
            .unwrap()
            .upsample_bilinear2d(r.padded.0, r.padded.1, false)
            .unwrap()
            .narrow(2, 0, r.valid.0)
            .unwrap()
            .narrow(3, 0, r.valid.1)
            .unwrap()
            .contiguous()
            .unwrap()
            .upsample_bilinear2d(r.orig.0, r.orig.1, false)
            .unwrap();
        let want = flat(&plain_logits);
        let got = flat(&upsample_mask_logits(&x, &r).unwrap());
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("case {i}: max |Δlogit| = {err:.2e}");
        assert!(err <= 1e-5, "case {i}: max |Δlogit| = {err:e}");
        let masks = upsample_masks(&x, &r).unwrap();
        assert_eq!(masks.len(), n);
        let plain_masks: Vec<u8> = plain_masks.flatten_all().unwrap().to_vec1().unwrap();
        let mut differ = 0;
        for (j, (m, p)) in masks.concat().iter().zip(&plain_masks).enumerate() {
            if m != p {
                assert!(
                    want[j].abs() < 1e-4,
                    "case {i} pixel {j}: logit {}",
                    want[j]
                );
                differ += 1;
            }
        }
        assert!(differ <= 2, "case {i}: {differ} pixels differ");
    }
}

#[test]
fn one_pass_masks_and_probs_equal_separate_calls() {
    let (shape, r) = &cases()[2];
    let x = logits(shape, 9);
    let (masks, probs) = upsample_masks_and_probs(&x, r).unwrap();
    assert_eq!(masks, upsample_masks(&x, r).unwrap());
    assert_eq!(flat(&probs), flat(&upsample_mask_probs(&x, r).unwrap()));
    assert_eq!(probs.dims(), &[2, 2, r.orig.0, r.orig.1]);
}

#[test]
fn half_logits_are_upsampled_in_f32() {
    let (shape, r) = &cases()[0];
    let x = logits(shape, 3).to_dtype(DType::BF16).unwrap();
    let got = flat(&upsample_mask_probs(&x, r).unwrap());
    let want = flat(&upsample_mask_probs(&x.to_dtype(DType::F32).unwrap(), r).unwrap());
    assert_eq!(got, want);
}

#[test]
fn no_masks_gives_empty_results() {
    let x = logits(&[0, 8, 8], 1);
    let r = MaskResize {
        padded: (16, 16),
        valid: (12, 16),
        orig: (9, 12),
    };
    assert!(upsample_masks(&x, &r).unwrap().is_empty());
    assert_eq!(upsample_mask_probs(&x, &r).unwrap().dims(), &[0, 9, 12]);
}

#[test]
fn bad_sizes_are_errors() {
    let x = logits(&[1, 8, 8], 1);
    let r = |padded, valid, orig| MaskResize {
        padded,
        valid,
        orig,
    };
    assert!(upsample_masks(&x, &r((16, 16), (17, 16), (20, 20))).is_err());
    assert!(upsample_masks(&x, &r((16, 16), (16, 16), (0, 20))).is_err());
    assert!(upsample_masks(&x, &r((16, 0), (16, 0), (20, 20))).is_err());
    let flat2 = logits(&[8, 8], 1);
    assert!(upsample_mask_probs(&flat2, &r((16, 16), (16, 16), (20, 20))).is_err());
    let ints = x.to_dtype(DType::U8).unwrap();
    assert!(upsample_mask_probs(&ints, &r((16, 16), (16, 16), (20, 20))).is_err());
}
