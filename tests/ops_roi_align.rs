//! ROI Align beyond the torchvision parity cases (tests/parity): the backward pass against
//! finite differences, half-precision inputs, empty box lists and input errors.
//!
//! On the device `UNIRES_DEVICE` names (default the CPU), with the same tolerances. Metal has
//! no backward kernel: there the backward test says so and checks nothing else.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::tensors::{dev_tensor as tensor, dot, flat, on_device};
use unires::error::{Error, RoiProblem};
use unires::ops::roi_align::{roi_align, RoiAlign};

fn boxes() -> Tensor {
    let b: Vec<f32> = vec![
        0.0, 1.0, 2.0, 9.5, 8.0, //
        1.0, -2.0, 3.0, 6.0, 13.0, //
        1.0, 4.1, 4.2, 4.3, 4.4, //
        0.0, 0.0, 0.0, 11.0, 9.0,
    ];
    on_device(&Tensor::from_vec(b, (4, 5), &Device::Cpu).unwrap())
}

#[test]
fn backward_matches_finite_differences() {
    let feats = tensor(&[2, 3, 10, 12], 1);
    if feats.device().is_metal() {
        eprintln!("SKIP: the Metal build has no ROI Align backward kernel");
        return;
    }
    let rois = boxes();
    for (ratio, aligned) in [(2, true), (-1, false), (-1, true)] {
        let p = RoiAlign::new((3, 4))
            .with_sampling_ratio(ratio)
            .with_aligned(aligned);
        let var = Var::from_tensor(&feats).unwrap();
        let out = roi_align(var.as_tensor(), &rois, &p).unwrap();
        let g_out = tensor(out.dims(), 2);
        let grads = (&out * &g_out)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g_in = grads.get(var.as_tensor()).unwrap();
        assert!(grads.get(&rois).is_none());
        // The op is linear in the features, so a central difference along any direction
        // is exact up to rounding.
        for seed in 3..6 {
            let dir = tensor(feats.dims(), seed);
            let eps = 0.5;
            let plus = roi_align(&(&feats + (&dir * eps).unwrap()).unwrap(), &rois, &p).unwrap();
            let minus = roi_align(&(&feats - (&dir * eps).unwrap()).unwrap(), &rois, &p).unwrap();
            let fd = (dot(&plus, &g_out) - dot(&minus, &g_out)) / (2.0 * eps);
            let an = dot(g_in, &dir);
            assert!(
                (fd - an).abs() <= 1e-4 * (1.0 + an.abs()),
                "ratio {ratio} aligned {aligned}: finite difference {fd} vs backward {an}"
            );
        }
    }
}

#[test]
fn half_inputs_are_computed_in_f32() {
    let feats = tensor(&[2, 5, 9, 11], 7);
    let p = RoiAlign::new((2, 2)).with_sampling_ratio(2);
    for dtype in [DType::F16, DType::BF16] {
        let half = feats.to_dtype(dtype).unwrap();
        let got = roi_align(&half, &boxes(), &p).unwrap();
        assert_eq!(got.dtype(), dtype);
        let want = roi_align(&half.to_dtype(DType::F32).unwrap(), &boxes(), &p)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        assert_eq!(flat(&got), flat(&want), "{dtype:?}");
    }
}

#[test]
fn no_boxes_gives_an_empty_result() {
    let feats = tensor(&[1, 3, 8, 8], 1);
    let rois = Tensor::zeros((0, 5), DType::F32, feats.device()).unwrap();
    let out = roi_align(&feats, &rois, &RoiAlign::new((7, 7))).unwrap();
    assert_eq!(out.dims(), &[0, 3, 7, 7]);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let feats = tensor(&[2, 3, 8, 8], 1);
    let p = RoiAlign::new((2, 2));
    let roi = |v: [f32; 5]| on_device(&Tensor::from_vec(v.to_vec(), (1, 5), &Device::Cpu).unwrap());
    match roi_align(&feats, &roi([2.0, 0.0, 0.0, 4.0, 4.0]), &p) {
        Err(Error::BadRoi {
            index: 0,
            problem: RoiProblem::BatchIndex { batch: 2, .. },
        }) => {}
        other => panic!("expected a batch-index error, got {other:?}"),
    }
    match roi_align(&feats, &roi([0.0, f32::NAN, 0.0, 4.0, 4.0]), &p) {
        Err(Error::BadRoi {
            problem: RoiProblem::NotFinite,
            ..
        }) => {}
        other => panic!("expected a not-finite error, got {other:?}"),
    }
    match roi_align(&feats, &roi([0.0, 0.0, 0.0, 1e9, 1e9]), &p) {
        Err(Error::BadRoi {
            problem: RoiProblem::TooManySamples { .. },
            ..
        }) => {}
        other => panic!("expected a too-many-samples error, got {other:?}"),
    }
    let bad = Tensor::zeros((3, 4), DType::F32, feats.device()).unwrap();
    assert!(matches!(
        roi_align(&feats, &bad, &p),
        Err(Error::BadShape { .. })
    ));
    assert!(matches!(
        roi_align(&feats.flatten_all().unwrap(), &roi([0.0; 5]), &p),
        Err(Error::BadShape { .. })
    ));
    assert!(matches!(
        roi_align(&feats, &roi([0.0; 5]), &RoiAlign::new((0, 2))),
        Err(Error::BadShape { .. })
    ));
    let ints = feats.to_dtype(DType::U32).unwrap();
    assert!(matches!(
        roi_align(&ints, &roi([0.0; 5]), &p),
        Err(Error::DTypeMismatch { .. })
    ));
}
