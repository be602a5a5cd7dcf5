//! Fused attention vs the plain matmul + softmax composition on seeded inputs: every mask
//! variant, GQA, batch > 1, odd sizes, sequences that are not multiples of the block sizes,
//! `Sq < Sk` (KV cache) and `Sq > Sk`, in f32, f16 and bf16.
//!
//! On the device `UNIRES_DEVICE` names (default the CPU), with the same tolerances. The GPU
//! kernels take no additive mask: there those cases check that `attention_fused` refuses it
//! and that `attention` falls back to the plain composition.

mod common;

use candle_core::{DType, Tensor, Var};
use common::tensors::{dev_tensor_scaled as tensor_scaled, max_abs_diff, on_device, values};
use unires::ops::attention::{attention, attention_fused, attention_plain, AttnMask};

#[derive(Clone, Copy, Debug)]
enum Mask {
    None,
    Causal,
    /// `(B, 1, Sq, Sk)` values plus −inf on the last keys of batch 1 (padding).
    Padding,
    /// `(Sk)` only: broadcast over batch, heads and queries.
    KeyBias,
    /// `(Sq, Sk)`: even rows see only the last 40 keys (whole key blocks fully masked).
    Leading,
}

struct Case {
    b: usize,
    h: usize,
    hkv: usize,
    sq: usize,
    sk: usize,
    d: usize,
    dv: usize,
    mask: Mask,
}

fn mask_tensor(c: &Case) -> Option<Tensor> {
    match c.mask {
        Mask::None | Mask::Causal => None,
        Mask::Padding => {
            let mut v = values(c.b * c.sq * c.sk, 99);
            for bi in 1..c.b {
                for i in 0..c.sq {
                    for j in c.sk - c.sk / 3..c.sk {
                        v[(bi * c.sq + i) * c.sk + j] = f32::NEG_INFINITY;
                    }
                }
            }
            Some(on_device(
                &Tensor::from_vec(v, (c.b, 1, c.sq, c.sk), &candle_core::Device::Cpu).unwrap(),
            ))
        }
        Mask::KeyBias => Some(tensor_scaled(&[c.sk], 7, 2.0)),
        Mask::Leading => {
            let mut v = values(c.sq * c.sk, 5);
            for i in (0..c.sq).step_by(2) {
                for x in &mut v[i * c.sk..i * c.sk + c.sk - 40] {
                    *x = f32::NEG_INFINITY;
                }
            }
            Some(on_device(
                &Tensor::from_vec(v, (c.sq, c.sk), &candle_core::Device::Cpu).unwrap(),
            ))
        }
    }
}

fn inputs(c: &Case, seed: u64) -> (Tensor, Tensor, Tensor) {
    // Scores of a realistic spread: |q·k|·scale up to a few units.
    let q = tensor_scaled(&[c.b, c.h, c.sq, c.d], seed, 2.0);
    let k = tensor_scaled(&[c.b, c.hkv, c.sk, c.d], seed + 1, 2.0);
    let v = tensor_scaled(&[c.b, c.hkv, c.sk, c.dv], seed + 2, 1.0);
    (q, k, v)
}

fn run(c: &Case, dtype: DType, tol_vs_f32: f32) {
    let (q, k, v) = inputs(c, 17 + c.sq as u64);
    let scale = 1.0 / (c.d as f64).sqrt();
    let m = mask_tensor(c);
    let mask = match (&c.mask, &m) {
        (Mask::Causal, _) => AttnMask::Causal,
        (_, Some(t)) => AttnMask::Additive(t),
        _ => AttnMask::None,
    };
    let reference = attention_plain(&q, &k, &v, mask, scale).unwrap();
    let (qd, kd, vd) = (
        q.to_dtype(dtype).unwrap(),
        k.to_dtype(dtype).unwrap(),
        v.to_dtype(dtype).unwrap(),
    );
    if !q.device().is_cpu() && matches!(mask, AttnMask::Additive(_)) {
        // The GPU kernels take no additive mask: refused by the fused op, and the dispatcher
        // takes the plain composition.
        assert!(attention_fused(&qd, &kd, &vd, mask, scale).is_err());
        let got = attention(&qd, &kd, &vd, mask, scale).unwrap();
        let want = attention_plain(&qd, &kd, &vd, mask, scale).unwrap();
        assert_eq!(max_abs_diff(&got, &want), 0.0);
        eprintln!(
            "b{} h{}/{} sq{} sk{} {:?} {dtype:?}: additive mask on a GPU: fused op refuses it, attention() runs plain",
            c.b, c.h, c.hkv, c.sq, c.sk, c.mask
        );
        return;
    }
    let fused = attention_fused(&qd, &kd, &vd, mask, scale).unwrap();
    assert_eq!(fused.dtype(), dtype);
    let err = max_abs_diff(&fused, &reference);
    eprintln!(
        "b{} h{}/{} sq{} sk{} d{} dv{} {:?} {dtype:?}: max |fused - plain(f32)| = {err:.2e}",
        c.b, c.h, c.hkv, c.sq, c.sk, c.d, c.dv, c.mask
    );
    assert!(
        err <= tol_vs_f32,
        "b{} h{}/{} sq{} sk{} d{} dv{} {:?} {dtype:?}: max |fused - plain(f32)| = {err:e} > {tol_vs_f32:e}",
        c.b, c.h, c.hkv, c.sq, c.sk, c.d, c.dv, c.mask
    );
}

fn cases() -> Vec<Case> {
    let c = |b, h, hkv, sq, sk, d, dv, mask| Case {
        b,
        h,
        hkv,
        sq,
        sk,
        d,
        dv,
        mask,
    };
    vec![
        c(2, 4, 4, 37, 37, 16, 16, Mask::None),
        c(1, 3, 3, 130, 130, 64, 64, Mask::None),
        c(1, 8, 2, 100, 100, 64, 64, Mask::Causal),
        c(2, 6, 3, 7, 133, 32, 24, Mask::Causal),
        c(1, 2, 1, 1, 300, 128, 128, Mask::Causal),
        c(1, 4, 2, 49, 261, 80, 80, Mask::Causal),
        c(1, 2, 2, 20, 10, 8, 8, Mask::Causal),
        c(2, 4, 2, 50, 70, 40, 40, Mask::Padding),
        c(3, 2, 1, 33, 129, 24, 20, Mask::KeyBias),
        c(2, 2, 1, 40, 300, 16, 16, Mask::Padding),
        c(1, 3, 1, 61, 600, 32, 32, Mask::Leading),
        c(1, 2, 2, 300, 700, 64, 48, Mask::Causal),
        c(1, 1, 1, 5, 3, 3, 5, Mask::None),
    ]
}

#[test]
fn fused_matches_plain_f32() {
    for c in cases() {
        run(&c, DType::F32, 5e-6);
    }
}

#[test]
fn fused_matches_plain_f16() {
    // Inputs rounded to f16 (rel. 2^-11) and the output rounded once more.
    for c in cases() {
        run(&c, DType::F16, 2e-3);
    }
}

#[test]
fn fused_matches_plain_bf16() {
    // Inputs rounded to bf16 (rel. 2^-8) and the output rounded once more.
    for c in cases() {
        run(&c, DType::BF16, 1.5e-2);
    }
}

#[test]
fn fused_bf16_beats_plain_bf16_against_f32() {
    // Accumulating in f32 is at least as accurate as the plain path in bf16.
    let c = Case {
        b: 1,
        h: 4,
        hkv: 4,
        sq: 256,
        sk: 256,
        d: 64,
        dv: 64,
        mask: Mask::Causal,
    };
    let (q, k, v) = inputs(&c, 5);
    let scale = 0.125;
    let want = attention_plain(&q, &k, &v, AttnMask::Causal, scale).unwrap();
    let (qb, kb, vb) = (
        q.to_dtype(DType::BF16).unwrap(),
        k.to_dtype(DType::BF16).unwrap(),
        v.to_dtype(DType::BF16).unwrap(),
    );
    let fused = attention_fused(&qb, &kb, &vb, AttnMask::Causal, scale).unwrap();
    let plain = attention_plain(&qb, &kb, &vb, AttnMask::Causal, scale).unwrap();
    let (ef, ep) = (max_abs_diff(&fused, &want), max_abs_diff(&plain, &want));
    assert!(
        ef <= ep,
        "fused bf16 error {ef:e} > plain bf16 error {ep:e}"
    );
}

#[test]
fn dispatch_equals_plain_and_keeps_gradients() {
    let c = Case {
        b: 1,
        h: 4,
        hkv: 2,
        sq: 96,
        sk: 96,
        d: 32,
        dv: 32,
        mask: Mask::Causal,
    };
    let (q, k, v) = inputs(&c, 3);
    let want = attention_plain(&q, &k, &v, AttnMask::Causal, 0.2).unwrap();
    let got = attention(&q, &k, &v, AttnMask::Causal, 0.2).unwrap();
    assert!(max_abs_diff(&got, &want) < 2e-5);
    // With a variable the dispatcher must take the differentiable path.
    let qv = Var::from_tensor(&q).unwrap();
    let out = attention(qv.as_tensor(), &k, &v, AttnMask::Causal, 0.2).unwrap();
    let grads = out.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let g = grads.get(qv.as_tensor()).expect("gradient of q");
    assert_eq!(g.dims(), q.dims());
}

#[test]
fn degenerate_shapes_match_plain() {
    let no_keys = (
        tensor_scaled(&[1, 2, 4, 8], 1, 1.0),
        tensor_scaled(&[1, 2, 0, 8], 2, 1.0),
        tensor_scaled(&[1, 2, 0, 8], 3, 1.0),
    );
    assert!(attention_fused(&no_keys.0, &no_keys.1, &no_keys.2, AttnMask::None, 1.0).is_err());
    assert!(attention(&no_keys.0, &no_keys.1, &no_keys.2, AttnMask::None, 1.0).is_err());
    for (sq, sk, d, dv) in [(4, 20, 0, 8), (0, 20, 8, 8), (4, 20, 8, 0)] {
        let q = tensor_scaled(&[1, 2, sq, d], 1, 1.0);
        let k = tensor_scaled(&[1, 2, sk, d], 2, 1.0);
        let v = tensor_scaled(&[1, 2, sk, dv], 3, 1.0);
        let fused = attention_fused(&q, &k, &v, AttnMask::None, 1.0).unwrap();
        let plain = attention_plain(&q, &k, &v, AttnMask::None, 1.0).unwrap();
        assert_eq!(fused.dims(), plain.dims());
        if fused.elem_count() > 0 {
            assert!(max_abs_diff(&fused, &plain) < 1e-6);
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let q = tensor_scaled(&[1, 4, 8, 16], 1, 1.0);
    let k = tensor_scaled(&[1, 3, 8, 16], 2, 1.0);
    let v = tensor_scaled(&[1, 3, 8, 16], 3, 1.0);
    assert!(attention_fused(&q, &k, &v, AttnMask::None, 1.0).is_err());
    let k = tensor_scaled(&[1, 2, 8, 16], 2, 1.0);
    let v = tensor_scaled(&[1, 2, 8, 16], 3, 1.0);
    let bad_mask = tensor_scaled(&[3, 8], 4, 1.0);
    assert!(attention_fused(&q, &k, &v, AttnMask::Additive(&bad_mask), 1.0).is_err());
    let kh = k.to_dtype(DType::F16).unwrap();
    assert!(attention_fused(&q, &kh, &v, AttnMask::None, 1.0).is_err());
}
