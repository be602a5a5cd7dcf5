//! `act(x + bias)` written over `x` in one parallel pass: the epilogue of a linear layer
//! whose matmul output nobody else holds (the MLPs of ConvNeXt, CLIP, the SAM ViT and
//! BEiT-3).
//!
//! candle runs a bias add and an activation as two single-threaded passes, each writing a
//! fresh tensor; on ConvNeXt-L at 768 those passes over the 4×-wide hidden layer cost about
//! as much as a third of the matmuls around them. Here the CPU path adds the bias and
//! applies the activation in place, rows split across the rayon pool. f32 runs a vectorised
//! loop (AVX2+FMA where the CPU has it): erf to 1.5e-7 (Abramowitz & Stegun 7.1.26) and the
//! sigmoids on `ops::cpu::exp`; f16/bf16 compute each element in f32 with candle's erf.
//! Other devices, non-contiguous inputs and tensors that track gradients take candle's
//! composition ([`bias_act_plain`]).

use candle_core::{CpuStorage, InplaceOp2, Layout, Tensor};
use rayon::prelude::*;

use crate::config::Activation;
use crate::error::{Error, Result};
use crate::ops::cpu::{exp, sigmoid, simd_dispatch, Elem, Fma};

/// Rows handed to one rayon task at least (small layers stay on one thread).
const MIN_ELEMS_PER_TASK: usize = 1 << 14;

#[inline(always)]
fn act_f32(v: f32, act: Activation) -> f32 {
    match act {
        Activation::Gelu => {
            (candle_core::cpu::erf::erf_f32(v * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * v
        }
        Activation::GeluPytorchTanh => {
            const S: f32 = 0.797_884_6; // √(2/π)
            0.5 * v * (1.0 + (S * v * (1.0 + 0.044715 * v * v)).tanh())
        }
        Activation::QuickGelu => v / (1.0 + (-1.702 * v).exp()),
        Activation::Silu => v / (1.0 + (-v).exp()),
        Activation::Relu => v.max(0.0),
    }
}

struct BiasAct(Activation);

/// `erf(x)` to 1.5e-7 absolute (Abramowitz & Stegun 7.1.26), branch-free so that loops over
/// it vectorise: `1 − (a₁t + … + a₅t⁵)·e^(−x²)` with `t = 1 / (1 + p|x|)`, sign restored.
#[inline(always)]
fn erf<F: Fma>(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / F::fma(P, a, 1.0);
    let mut poly = A[4];
    poly = F::fma(poly, t, A[3]);
    poly = F::fma(poly, t, A[2]);
    poly = F::fma(poly, t, A[1]);
    poly = F::fma(poly, t, A[0]);
    let y = 1.0 - poly * t * exp::<F>(-a * a);
    y.copysign(x)
}

/// The f32 rows of `x` (`bias.len()` wide) through `act(x + bias)`, one loop per activation.
#[inline(always)]
fn rows_f32<F: Fma>(x: &mut [f32], bias: &[f32], act: Activation) {
    let n = bias.len();
    let each = |x: &mut [f32], f: &dyn Fn(f32) -> f32| {
        for row in x.chunks_exact_mut(n) {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v = f(*v + b);
            }
        }
    };
    match act {
        Activation::Gelu => {
            for row in x.chunks_exact_mut(n) {
                for (v, &b) in row.iter_mut().zip(bias) {
                    let y = *v + b;
                    *v = 0.5 * y * (1.0 + erf::<F>(y * std::f32::consts::FRAC_1_SQRT_2));
                }
            }
        }
        Activation::QuickGelu => {
            for row in x.chunks_exact_mut(n) {
                for (v, &b) in row.iter_mut().zip(bias) {
                    let y = *v + b;
                    *v = y * sigmoid::<F>(1.702 * y);
                }
            }
        }
        Activation::Silu => {
            for row in x.chunks_exact_mut(n) {
                for (v, &b) in row.iter_mut().zip(bias) {
                    let y = *v + b;
                    *v = y * sigmoid::<F>(y);
                }
            }
        }
        other => each(x, &|y| act_f32(y, other)),
    }
}

simd_dispatch! {
    /// [`rows_f32`] compiled for the best instruction set of this CPU.
    fn bias_act_f32(x: &mut [f32], bias: &[f32], act: Activation) = rows_f32;
}

fn run<T: Elem>(x: &mut [T], bias: &[T], act: Activation) {
    let n = bias.len();
    let rows_per_task = (MIN_ELEMS_PER_TASK / n.max(1)).max(1);
    x.par_chunks_mut(rows_per_task * n).for_each(|chunk| {
        if let Some(xf) = T::as_f32_mut(chunk) {
            if let Some(bf) = T::as_f32(bias) {
                bias_act_f32(xf, bf, act);
                return;
            }
        }
        for row in chunk.chunks_exact_mut(n) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v = T::from_f32(act_f32(v.to_f32() + b.to_f32(), act));
            }
        }
    });
}

impl InplaceOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "bias-act"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (Some((a, b)), Some((c, d))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("bias-act: contiguous inputs only");
        };
        match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(bias)) => run(&mut x[a..b], &bias[c..d], self.0),
            (CpuStorage::F16(x), CpuStorage::F16(bias)) => run(&mut x[a..b], &bias[c..d], self.0),
            (CpuStorage::BF16(x), CpuStorage::BF16(bias)) => run(&mut x[a..b], &bias[c..d], self.0),
            _ => candle_core::bail!("bias-act: f32, f16 or bf16 of one dtype"),
        }
        Ok(())
    }
}

/// `act(x + bias)` for `x (…, N)` and `bias (N)`, as candle's elementary ops compute it
/// (differentiable).
pub fn bias_act_plain(x: &Tensor, bias: &Tensor, act: Activation) -> Result<Tensor> {
    let y = x.broadcast_add(bias)?;
    Ok(match act {
        Activation::QuickGelu => (&y * candle_nn::ops::sigmoid(&(&y * 1.702)?)?)?,
        Activation::Gelu => y.gelu_erf()?,
        Activation::GeluPytorchTanh => y.gelu()?,
        Activation::Relu => y.relu()?,
        Activation::Silu => y.silu()?,
    })
}

/// `act(x + bias)` for `x (…, N)` and `bias (N)`, computed in place over `x` on the CPU.
///
/// Takes `x` by value: its storage is overwritten, so it must be a tensor no one else holds
/// (a fresh matmul output). Falls back to [`bias_act_plain`] (a new tensor) off the CPU,
/// when either input tracks gradients, is not contiguous, or the dtypes differ.
pub fn bias_act(x: Tensor, bias: &Tensor, act: Activation) -> Result<Tensor> {
    let n = x.dims().last().copied().unwrap_or(0);
    if bias.dims() != [n] {
        return Err(Error::shape(
            "bias_act",
            format!("bias {:?} for input {:?}", bias.dims(), x.dims()),
        ));
    }
    let fused = x.device().is_cpu()
        && !x.track_op()
        && !bias.track_op()
        && x.is_contiguous()
        && bias.is_contiguous()
        && x.dtype() == bias.dtype()
        && n > 0;
    if !fused {
        return bias_act_plain(&x, bias, act);
    }
    x.inplace_op2(bias, &BiasAct(act))?;
    Ok(x)
}
