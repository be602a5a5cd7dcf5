//! Every custom op of `src/ops` on the test device against a reference, on seeded random
//! shapes: odd sizes, batch > 1, non-contiguous inputs (every other case), forward and
//! backward, in f32, f16 and bf16.
//!
//! - **On a GPU** (`UNIRES_DEVICE=cuda[:N]` or `metal`): the reference is the same op on the
//!   CPU (the reference implementation) with the same inputs, bit for bit (half-precision
//!   inputs are rounded on the CPU, then copied). Attention (fused kernel; with an additive
//!   mask, which the GPU kernels do not take, the `attention` dispatcher in f32), its
//!   gradients through `attention`, ROI Align forward, its backward (autograd and
//!   `roi_align_backward`), depthwise convolution forward and backward (autograd and
//!   `depthwise_conv2d_backward`), and mask upsampling (logits, probabilities, masks).
//! - **On the CPU** (`UNIRES_DEVICE` unset or `cpu`) there is no second implementation of the
//!   same op, so each check compares the fused op with its plain composition where one exists:
//!   attention with `attention_plain` in f32, depthwise convolution (forward and gradients)
//!   with `depthwise_conv2d_shifted` in f32, mask upsampling with `upsample_masks_plain`.
//!   ROI Align has no composition: its forward comparison is skipped with a message (the
//!   parity suite checks it against torchvision), and the attention gradient comparison,
//!   which would compare the plain composition with itself, is skipped too.
//! - On every device ROI Align's backward is checked to be the adjoint of its forward:
//!   `<roi_align(x), g> = <x, roi_align_backward(g)>`.
//!
//! Tolerances, `|got − want| ≤ atol + rtol·|want|` elementwise:
//!
//! | what | f32 | f16 | bf16 |
//! |---|---|---|---|
//! | outputs (`FWD`) | 1e-5 + 1e-5·\|w\| | 1e-3 + 2e-3·\|w\| | 8e-3 + 1.6e-2·\|w\| |
//! | gradients (`GRAD`) | 1e-4 + 1e-4·\|w\| | as FWD | as FWD |
//!
//! f32 allows for a different summation order; f16 and bf16 for about two units in the last
//! place (both sides compute in f32 and round once). Mask-upsampling outputs are f32 for every
//! input dtype. Binary masks must be equal except where the reference logit is within 1e-4 of
//! zero.
//!
//! `UNIRES_OPCHECK_CASES` (default 6) sets the random cases per op and dtype,
//! `UNIRES_OPCHECK_SEED` (default 1) their seed. Every case prints one line; a test fails
//! after all its cases ran, listing the failures.

#[path = "../common/mod.rs"]
mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::tensors::{dot, values};
use unires::ops::attention::{attention, attention_fused, attention_plain, AttnMask};
use unires::ops::dwconv::{depthwise_conv2d, depthwise_conv2d_backward, depthwise_conv2d_shifted};
use unires::ops::roi_align::{roi_align, roi_align_backward, RoiAlign};
use unires::ops::upsample::{
    upsample_mask_logits, upsample_mask_probs, upsample_masks, upsample_masks_plain, MaskResize,
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

mod attention;
mod dwconv;
mod roi_align;
mod upsample;

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

// ------------------------------------------------------------------------- set-up

/// Where the op runs and what it is compared with.
struct Setup {
    /// The test device (`UNIRES_DEVICE`).
    dev: Device,
    /// Whether it is a GPU: reference = the same op on the CPU. Otherwise the plain
    /// composition on the CPU.
    gpu: bool,
    cases: usize,
    seed: u64,
}

fn setup(test: &str) -> Setup {
    let dev = common::device();
    let gpu = !dev.is_cpu();
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(d)
    };
    let s = Setup {
        dev,
        gpu,
        cases: env("UNIRES_OPCHECK_CASES", 6) as usize,
        seed: env("UNIRES_OPCHECK_SEED", 1),
    };
    if s.gpu {
        eprintln!(
            "{test}: device {} against the CPU, {} cases per dtype, seed {}",
            common::device_name(),
            s.cases,
            s.seed
        );
    } else {
        eprintln!(
            "{test}: the test device is the CPU (UNIRES_DEVICE unset or cpu): comparing with the plain composition on the CPU, {} cases per dtype, seed {}",
            s.cases, s.seed
        );
    }
    s
}

/// Seeded shapes and parameters (xorshift64).
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Self {
        Rng(
            (seed ^ stream.wrapping_mul(0xD134_2543_DE82_EF95)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                | 1,
        )
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `lo..=hi`.
    fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    /// Uniform in `[lo, hi)`.
    fn float(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.int(0, xs.len() - 1)]
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

/// The same input on the CPU and on the test device: seeded values in [-scale, scale) of
/// `shape`, rounded to `dtype` on the CPU. With `strided`, both are the transpose of a
/// contiguous tensor with the last two dimensions swapped (non-contiguous when both are > 1).
fn input(
    s: &Setup,
    shape: &[usize],
    seed: u64,
    scale: f32,
    dtype: DType,
    strided: bool,
) -> Res<(Tensor, Tensor)> {
    let n = shape.len();
    let v: Vec<f32> = values(shape.iter().product(), seed)
        .into_iter()
        .map(|x| x * scale)
        .collect();
    let strided = strided && n >= 2;
    let mut base_shape = shape.to_vec();
    if strided {
        base_shape.swap(n - 2, n - 1);
    }
    let cpu = Tensor::from_vec(v, base_shape, &Device::Cpu)?.to_dtype(dtype)?;
    let dev = cpu.to_device(&s.dev)?;
    if strided {
        Ok((cpu.transpose(n - 2, n - 1)?, dev.transpose(n - 2, n - 1)?))
    } else {
        Ok((cpu, dev))
    }
}

/// `|got − want| ≤ atol + rtol·|want|`.
#[derive(Clone, Copy, Debug)]
struct Tol {
    atol: f32,
    rtol: f32,
}

/// Outputs in `dtype`.
fn fwd_tol(dtype: DType) -> Tol {
    match dtype {
        DType::F16 => Tol {
            atol: 1e-3,
            rtol: 2e-3,
        },
        DType::BF16 => Tol {
            atol: 8e-3,
            rtol: 1.6e-2,
        },
        _ => Tol {
            atol: 1e-5,
            rtol: 1e-5,
        },
    }
}

/// Gradients in `dtype` (long f32 sums: a looser f32 tolerance).
fn grad_tol(dtype: DType) -> Tol {
    match dtype {
        DType::F32 => Tol {
            atol: 1e-4,
            rtol: 1e-4,
        },
        other => fwd_tol(other),
    }
}

fn flat(t: &Tensor) -> Res<Vec<f32>> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?)
}

/// The checks of one test: one line per comparison on stderr, failures kept for the end.
struct Report {
    test: &'static str,
    checks: usize,
    failures: Vec<String>,
}

impl Report {
    fn new(test: &'static str) -> Self {
        Self {
            test,
            checks: 0,
            failures: Vec::new(),
        }
    }

    fn fail(&mut self, what: &str, why: String) {
        eprintln!("  {what}: {why} FAIL");
        self.failures.push(format!("{what}: {why}"));
    }

    /// Records an error of a case (the op failed rather than differed).
    fn error(&mut self, what: &str, r: Res<()>) {
        if let Err(e) = r {
            self.fail(what, format!("error: {e}"));
        }
    }

    /// Compares `got` (any device, any float dtype) with `want` elementwise.
    fn compare(&mut self, what: &str, got: &Tensor, want: &Tensor, tol: Tol) -> Res<()> {
        self.checks += 1;
        if got.dims() != want.dims() {
            self.fail(
                what,
                format!("shape {:?} vs reference {:?}", got.dims(), want.dims()),
            );
            return Ok(());
        }
        let (g, w) = (flat(got)?, flat(want)?);
        let (mut max_abs, mut worst, mut at) = (0f32, 0f32, 0usize);
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            let d = if a == b || (a.is_nan() && b.is_nan()) {
                0.0
            } else {
                let d = (a - b).abs();
                if d.is_nan() {
                    f32::INFINITY
                } else {
                    d
                }
            };
            let ratio = d / (tol.atol + tol.rtol * b.abs());
            max_abs = max_abs.max(d);
            if ratio > worst || ratio.is_nan() {
                worst = ratio;
                at = i;
            }
        }
        let line = format!(
            "max |Δ| = {max_abs:.2e}, worst |Δ|/tol = {worst:.2} (atol {:e}, rtol {:e})",
            tol.atol, tol.rtol
        );
        if worst <= 1.0 {
            eprintln!("  {what}: {line} ok");
        } else {
            let detail = format!("{line}; at element {at}: {} vs {}", g[at], w[at]);
            self.fail(what, detail);
        }
        Ok(())
    }

    /// Binary masks: equal except where the reference logit is within 1e-4 of zero.
    fn compare_masks(&mut self, what: &str, got: &[u8], want: &[u8], logits: &[f32]) {
        self.checks += 1;
        if got.len() != want.len() {
            self.fail(what, format!("{} values vs {}", got.len(), want.len()));
            return;
        }
        let (mut near_zero, mut wrong) = (0usize, 0usize);
        for ((g, w), l) in got.iter().zip(want).zip(logits) {
            if g != w {
                if l.abs() < 1e-4 {
                    near_zero += 1;
                } else {
                    wrong += 1;
                }
            }
        }
        let line = format!("{wrong} pixels differ, {near_zero} more where |logit| < 1e-4");
        if wrong == 0 {
            eprintln!("  {what}: {line} ok");
        } else {
            self.fail(what, line);
        }
    }

    fn skip(&self, what: &str, why: &str) {
        eprintln!("  {what}: SKIP: {why}");
    }

    fn finish(self) {
        eprintln!(
            "{}: {} comparisons, {} failed",
            self.test,
            self.checks,
            self.failures.len()
        );
        assert!(
            self.failures.is_empty(),
            "{}: {} failures:\n{}",
            self.test,
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

fn name(d: DType) -> &'static str {
    match d {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "f32",
    }
}

fn layout(strided: bool) -> &'static str {
    if strided {
        "strided"
    } else {
        "contiguous"
    }
}
