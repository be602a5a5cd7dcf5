//! Seeded inputs and tensor comparisons.

use candle_core::{DType, Device, Tensor};

/// Deterministic pseudo-random values in [-1, 1) (xorshift).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// An f32 CPU tensor of `shape` filled with [`values`] of `seed`.
pub fn tensor(shape: &[usize], seed: u64) -> Tensor {
    tensor_scaled(shape, seed, 1.0)
}

/// [`tensor`] times `scale` (values in [-scale, scale)).
pub fn tensor_scaled(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let v: Vec<f32> = values(shape.iter().product(), seed)
        .into_iter()
        .map(|x| x * scale)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// [`tensor`] on the test device ([`super::device`]).
pub fn dev_tensor(shape: &[usize], seed: u64) -> Tensor {
    on_device(&tensor(shape, seed))
}

/// [`tensor_scaled`] on the test device ([`super::device`]).
pub fn dev_tensor_scaled(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    on_device(&tensor_scaled(shape, seed, scale))
}

/// `t` copied to the test device ([`super::device`]).
pub fn on_device(t: &Tensor) -> Tensor {
    t.to_device(&super::device()).unwrap()
}

/// `t` copied to the CPU.
pub fn on_cpu(t: &Tensor) -> Tensor {
    t.to_device(&Device::Cpu).unwrap()
}

/// All elements as f32, in row-major order (any float dtype, any device).
pub fn flat(t: &Tensor) -> Vec<f32> {
    on_cpu(t)
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The largest elementwise |a − b|, computed in f32 (shapes must be equal). Equal values
/// (infinities of one sign, NaN on both sides) differ by 0; NaN on one side only, or
/// infinities that differ, by +∞.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    flat(a)
        .iter()
        .zip(&flat(b))
        .map(|(&x, &y)| {
            if x == y || (x.is_nan() && y.is_nan()) {
                0.0
            } else {
                let d = (x - y).abs();
                if d.is_nan() {
                    f32::INFINITY
                } else {
                    d
                }
            }
        })
        .fold(0f32, f32::max)
}

/// Σ a·b over all elements, in f64 on the CPU (any device: Metal has no f64).
pub fn dot(a: &Tensor, b: &Tensor) -> f64 {
    (on_cpu(a).to_dtype(DType::F64).unwrap() * on_cpu(b).to_dtype(DType::F64).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}
