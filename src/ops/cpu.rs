//! Shared CPU plumbing for the custom ops: f32 views of float storages, element conversion,
//! run-time SIMD dispatch (AVX2+FMA on x86-64) and a vectorisable `exp`.

use std::borrow::Cow;

use candle_core::{bail, CpuStorage, DType, Layout};
use half::{bf16, f16};

/// A float element type the kernels read and write; arithmetic is always f32.
pub(crate) trait Elem: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    fn from_f32(x: f32) -> Self;
    /// The slice itself when the element type is f32 (kernels can then write in place).
    fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    /// The slice itself when the element type is f32.
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
}

impl Elem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
    fn as_f32_mut(s: &mut [f32]) -> Option<&mut [f32]> {
        Some(s)
    }
    fn as_f32(s: &[f32]) -> Option<&[f32]> {
        Some(s)
    }
}

impl Elem for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}

impl Elem for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

/// A contiguous float slice of one of the dtypes the ops accept.
#[derive(Clone, Copy)]
pub(crate) enum FloatSlice<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
}

impl<'a> FloatSlice<'a> {
    /// The contiguous part of `s` described by `l`; errors for other dtypes or strided layouts.
    pub(crate) fn new(
        s: &'a CpuStorage,
        l: &Layout,
        op: &'static str,
    ) -> candle_core::Result<Self> {
        let Some((start, end)) = l.contiguous_offsets() else {
            bail!("{op}: input must be contiguous")
        };
        Ok(match s {
            CpuStorage::F32(v) => FloatSlice::F32(&v[start..end]),
            CpuStorage::F16(v) => FloatSlice::F16(&v[start..end]),
            CpuStorage::BF16(v) => FloatSlice::BF16(&v[start..end]),
            other => bail!(
                "{op}: dtype {:?} is not supported",
                candle_core::backend::BackendStorage::dtype(other)
            ),
        })
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            FloatSlice::F32(v) => v.len(),
            FloatSlice::F16(v) => v.len(),
            FloatSlice::BF16(v) => v.len(),
        }
    }

    pub(crate) fn dtype(&self) -> DType {
        match self {
            FloatSlice::F32(_) => DType::F32,
            FloatSlice::F16(_) => DType::F16,
            FloatSlice::BF16(_) => DType::BF16,
        }
    }

    /// The values as f32, borrowed when they already are.
    pub(crate) fn to_f32(self) -> Cow<'a, [f32]> {
        match self {
            FloatSlice::F32(v) => Cow::Borrowed(v),
            FloatSlice::F16(v) => Cow::Owned(v.iter().map(|x| x.to_f32()).collect()),
            FloatSlice::BF16(v) => Cow::Owned(v.iter().map(|x| x.to_f32()).collect()),
        }
    }
}

/// The contiguous f32 values of a float storage (converted from f16/bf16 when needed).
pub(crate) fn f32_values<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &'static str,
) -> candle_core::Result<Cow<'a, [f32]>> {
    Ok(FloatSlice::new(s, l, op)?.to_f32())
}

/// Wraps f32 results as a storage of `dtype` (f32, f16 or bf16).
pub(crate) fn storage_from_f32(v: Vec<f32>, dtype: DType) -> candle_core::Result<CpuStorage> {
    Ok(match dtype {
        DType::F32 => CpuStorage::F32(v),
        DType::F16 => CpuStorage::F16(v.into_iter().map(f16::from_f32).collect()),
        DType::BF16 => CpuStorage::BF16(v.into_iter().map(bf16::from_f32).collect()),
        other => bail!("dtype {other:?} is not supported"),
    })
}

/// How a kernel compiled for several instruction sets computes `a · b + c`.
pub(crate) trait Fma: Copy {
    fn fma(a: f32, b: f32, c: f32) -> f32;
}

/// Separate multiply and add: the portable build (a fused multiply-add without hardware
/// support would be a library call).
#[derive(Clone, Copy)]
pub(crate) struct Portable;

impl Fma for Portable {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// The hardware fused multiply-add (used only where the CPU has one).
#[derive(Clone, Copy)]
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(crate) struct Fused;

impl Fma for Fused {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// Unit tests set this to run the portable kernels on a CPU that has AVX2 and FMA.
#[cfg(test)]
pub(crate) static FORCE_PORTABLE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Whether this x86-64 CPU has AVX2 and FMA (cached by the standard library).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(test)]
    if FORCE_PORTABLE.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Defines a function that runs the generic kernel `$generic::<F: Fma>` compiled for the best
/// instruction set available at run time: an AVX2+FMA copy on x86-64 CPUs that have them,
/// the hardware FMA on aarch64 (baseline there), portable code otherwise. `$generic` must be
/// `#[inline(always)]` so that its body is compiled inside the feature-enabled copy.
macro_rules! simd_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? = $generic:ident;) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($arg: $ty),*) $(-> $ret)? {
                    $generic::<$crate::ops::cpu::Fused>($($arg),*)
                }
                if $crate::ops::cpu::has_avx2_fma() {
                    // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                    unsafe { fast($($arg),*) }
                } else {
                    $generic::<$crate::ops::cpu::Portable>($($arg),*)
                }
            }
            #[cfg(target_arch = "aarch64")]
            {
                $generic::<$crate::ops::cpu::Fused>($($arg),*)
            }
            #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
            {
                $generic::<$crate::ops::cpu::Portable>($($arg),*)
            }
        }
    };
}
pub(crate) use simd_dispatch;

/// Below this, `exp` returns `exp(EXP_MIN)` (≈ 1.6e-38, the smallest normal range).
const EXP_MIN: f32 = -87.0;
/// Above this, `exp` returns `exp(EXP_MAX)` (≈ 1.7e38).
const EXP_MAX: f32 = 88.0;

/// `eˣ` to about 2 ulp on `[-87, 88]` (clamped outside), written so that loops over it
/// vectorise: round-to-nearest by the 1.5·2²³ trick, Cody–Waite reduction by ln 2, a
/// degree-6 minimax polynomial (Cephes `expf`) and the power of two built from its bits.
#[inline(always)]
pub(crate) fn exp<F: Fma>(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(EXP_MIN, EXP_MAX);
    let t = F::fma(x, std::f32::consts::LOG2_E, ROUND);
    let n = t - ROUND;
    let r = F::fma(n, -LN2_HI, x);
    let r = F::fma(n, -LN2_LO, r);
    let mut p = 1.987_569_1e-4;
    p = F::fma(p, r, 1.398_199_9e-3);
    p = F::fma(p, r, 8.333_452e-3);
    p = F::fma(p, r, 4.166_579_6e-2);
    p = F::fma(p, r, 1.666_666_5e-1);
    p = F::fma(p, r, 0.5);
    let y = F::fma(p, r * r, r) + 1.0;
    let k = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let scale = f32::from_bits(((k + 127) as u32) << 23);
    y * scale
}

/// The logistic function `1 / (1 + e⁻ˣ)` on top of [`exp`].
#[inline(always)]
pub(crate) fn sigmoid<F: Fma>(x: f32) -> f32 {
    1.0 / (1.0 + exp::<F>(-x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            for y in [x, x + 0.37, x + 0.731]
                .into_iter()
                .filter(|y| *y <= EXP_MAX)
            {
                let want = (y as f64).exp();
                for got in [exp::<Portable>(y) as f64, exp::<Fused>(y) as f64] {
                    worst = worst.max(((got - want) / want).abs());
                }
            }
            x += 0.9;
        }
        assert!(worst < 3e-7, "relative error {worst:e}");
        assert!(exp::<Portable>(f32::NEG_INFINITY) < 1e-37);
        assert!(exp::<Portable>(f32::INFINITY).is_finite());
    }

    #[test]
    fn sigmoid_matches_definition() {
        for i in -200..=200 {
            let x = i as f32 * 0.1;
            let want = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!((sigmoid::<Portable>(x) as f64 - want).abs() < 1e-7, "{x}");
        }
    }
}
