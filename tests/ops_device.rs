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

// ------------------------------------------------------------------------- attention

#[derive(Clone, Copy, Debug, PartialEq)]
enum MaskKind {
    None,
    Causal,
    /// `(B, 1, Sq, Sk)` values in [-2, 2), −inf on the last third of the keys of batch 1+.
    Additive,
}

struct AttnCase {
    b: usize,
    h: usize,
    hkv: usize,
    sq: usize,
    sk: usize,
    d: usize,
    dv: usize,
    mask: MaskKind,
}

impl std::fmt::Display for AttnCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "b{} h{}/{} sq{} sk{} d{} dv{} {:?}",
            self.b, self.h, self.hkv, self.sq, self.sk, self.d, self.dv, self.mask
        )
    }
}

fn attn_case(r: &mut Rng, additive_ok: bool) -> AttnCase {
    let hkv = r.int(1, 3);
    let h = hkv * r.int(1, 3);
    let d = r.pick(&[8, 16, 24, 33, 40, 64, 80, 96, 128, 160]);
    let dv = if r.coin() {
        d
    } else {
        r.pick(&[8, 20, 32, 48, 64])
    };
    let sk = r.pick(&[1, 7, 16, 33, 64, 129, 200, 301]);
    let sq = if r.coin() { sk } else { r.int(1, 97) };
    let mask = match r.int(0, if additive_ok { 2 } else { 1 }) {
        0 => MaskKind::None,
        1 => MaskKind::Causal,
        _ => MaskKind::Additive,
    };
    AttnCase {
        b: r.int(1, 3),
        h,
        hkv,
        sq,
        sk,
        d,
        dv,
        mask,
    }
}

/// The additive mask of `c` (f32) on the CPU.
fn additive_mask(c: &AttnCase, seed: u64) -> Res<Tensor> {
    let mut v: Vec<f32> = values(c.b * c.sq * c.sk, seed)
        .into_iter()
        .map(|x| x * 2.0)
        .collect();
    for bi in 1..c.b {
        for i in 0..c.sq {
            for j in c.sk - c.sk / 3..c.sk {
                v[(bi * c.sq + i) * c.sk + j] = f32::NEG_INFINITY;
            }
        }
    }
    Ok(Tensor::from_vec(v, (c.b, 1, c.sq, c.sk), &Device::Cpu)?)
}

fn attn_mask<'a>(kind: MaskKind, m: &'a Tensor) -> AttnMask<'a> {
    match kind {
        MaskKind::None => AttnMask::None,
        MaskKind::Causal => AttnMask::Causal,
        MaskKind::Additive => AttnMask::Additive(m),
    }
}

/// The op under test: the fused kernel, or with an additive mask the dispatcher (the GPU
/// kernels take none; on the CPU it runs the fused kernel from 16 keys).
fn attn_op(q: &Tensor, k: &Tensor, v: &Tensor, mask: AttnMask, scale: f64) -> Res<Tensor> {
    Ok(match mask {
        AttnMask::Additive(_) => attention(q, k, v, mask, scale)?,
        _ => attention_fused(q, k, v, mask, scale)?,
    })
}

#[test]
fn attention_forward() {
    let s = setup("attention_forward");
    let mut rep = Report::new("attention_forward");
    for (di, dtype) in DTYPES.into_iter().enumerate() {
        let mut r = Rng::new(s.seed, 1 + di as u64);
        for i in 0..s.cases {
            // Additive masks in f32 only: on a GPU they take the plain composition, whose
            // half-precision scores and probabilities are rounded (not a kernel property).
            let c = attn_case(&mut r, dtype == DType::F32);
            let strided = i % 2 == 1;
            let what = format!("attention {c} {} {}", name(dtype), layout(strided));
            let res = (|| -> Res<()> {
                let seed = 1000 * i as u64;
                let (qc, qd) = input(&s, &[c.b, c.h, c.sq, c.d], seed, 2.0, dtype, strided)?;
                let (kc, kd) = input(&s, &[c.b, c.hkv, c.sk, c.d], seed + 1, 2.0, dtype, strided)?;
                let (vc, vd) = input(&s, &[c.b, c.hkv, c.sk, c.dv], seed + 2, 1.0, dtype, strided)?;
                let mc = additive_mask(&c, seed + 3)?;
                let md = mc.to_device(&s.dev)?;
                let scale = 1.0 / (c.d as f64).sqrt();
                let got = attn_op(&qd, &kd, &vd, attn_mask(c.mask, &md), scale)?;
                if got.dtype() != dtype {
                    return Err(format!("output dtype {:?}", got.dtype()).into());
                }
                let want = if s.gpu {
                    attn_op(&qc, &kc, &vc, attn_mask(c.mask, &mc), scale)?
                } else {
                    let f = |t: &Tensor| t.to_dtype(DType::F32);
                    attention_plain(&f(&qc)?, &f(&kc)?, &f(&vc)?, attn_mask(c.mask, &mc), scale)?
                };
                rep.compare(&what, &got, &want, fwd_tol(dtype))
            })();
            rep.error(&what, res);
        }
    }
    rep.finish();
}

/// Gradients of `sum(attention(q, k, v) · g)` with respect to q, k and v: `attention` takes
/// the plain composition when inputs track gradients, so this checks candle's backward of
/// that composition on the device against the CPU.
#[test]
fn attention_backward() {
    let s = setup("attention_backward");
    let mut rep = Report::new("attention_backward");
    if !s.gpu {
        rep.skip(
            "attention gradients",
            "tracked inputs take the plain composition, on the CPU that would be compared with itself",
        );
        rep.finish();
        return;
    }
    let mut r = Rng::new(s.seed, 10);
    for i in 0..s.cases {
        let c = attn_case(&mut r, true);
        let what = format!("attention grads {c} f32");
        let res = (|| -> Res<()> {
            let seed = 2000 * i as u64;
            let f32 = DType::F32;
            let (qc, qd) = input(&s, &[c.b, c.h, c.sq, c.d], seed, 2.0, f32, false)?;
            let (kc, kd) = input(&s, &[c.b, c.hkv, c.sk, c.d], seed + 1, 2.0, f32, false)?;
            let (vc, vd) = input(&s, &[c.b, c.hkv, c.sk, c.dv], seed + 2, 1.0, f32, false)?;
            let (gc, gd) = input(&s, &[c.b, c.h, c.sq, c.dv], seed + 3, 1.0, f32, i % 2 == 1)?;
            let mc = additive_mask(&c, seed + 4)?;
            let md = mc.to_device(&s.dev)?;
            let scale = 1.0 / (c.d as f64).sqrt();
            let grads = |q: &Tensor, k: &Tensor, v: &Tensor, g: &Tensor, m: &Tensor| {
                let (q, k, v) = (
                    Var::from_tensor(q)?,
                    Var::from_tensor(k)?,
                    Var::from_tensor(v)?,
                );
                let y = attention(&q, &k, &v, attn_mask(c.mask, m), scale)?;
                let gs = (y * g)?.sum_all()?.backward()?;
                let get = |x: &Var| gs.get(x).cloned().ok_or("no gradient");
                Res::Ok([get(&q)?, get(&k)?, get(&v)?])
            };
            let got = grads(&qd, &kd, &vd, &gd, &md)?;
            let want = grads(&qc, &kc, &vc, &gc, &mc)?;
            for (n, (a, b)) in ["q", "k", "v"].iter().zip(got.iter().zip(&want)) {
                rep.compare(&format!("{what} ∂{n}"), a, b, grad_tol(f32))?;
            }
            Ok(())
        })();
        rep.error(&what, res);
    }
    rep.finish();
}

// ------------------------------------------------------------------------- ROI Align

struct RoiCase {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    p: RoiAlign,
}

impl std::fmt::Display for RoiCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n{} c{} {}x{} k{} out{}x{} scale{} ratio{} aligned={}",
            self.n,
            self.c,
            self.h,
            self.w,
            self.k,
            self.p.output_size.0,
            self.p.output_size.1,
            self.p.spatial_scale,
            self.p.sampling_ratio,
            self.p.aligned
        )
    }
}

fn roi_case(r: &mut Rng) -> RoiCase {
    let scale = r.pick(&[1.0, 0.5, 0.25, 0.0625]);
    RoiCase {
        n: r.int(1, 3),
        c: r.int(1, 7),
        h: r.int(3, 31),
        w: r.int(3, 37),
        k: r.int(1, 11),
        p: RoiAlign::new((r.int(1, 7), r.int(1, 7)))
            .with_spatial_scale(scale)
            .with_sampling_ratio(r.pick(&[-1, 1, 2, 3]))
            .with_aligned(r.coin()),
    }
}

/// `(K, 5)` boxes in image coordinates (feature size / scale), some reaching past the
/// edges, some smaller than a feature pixel; with `strided` non-contiguous. CPU and device.
fn roi_boxes(s: &Setup, c: &RoiCase, r: &mut Rng, strided: bool) -> Res<(Tensor, Tensor)> {
    let (ih, iw) = (
        c.h as f32 / c.p.spatial_scale,
        c.w as f32 / c.p.spatial_scale,
    );
    let mut v = Vec::with_capacity(c.k * 5);
    for _ in 0..c.k {
        let x1 = r.float(-0.1 * iw, iw);
        let y1 = r.float(-0.1 * ih, ih);
        let bw = r.float(0.1, 0.6 * iw);
        let bh = r.float(0.1, 0.6 * ih);
        v.extend([r.int(0, c.n - 1) as f32, x1, y1, x1 + bw, y1 + bh]);
    }
    let cpu = if strided {
        // Stored as (5, K), seen as (K, 5).
        let mut t = vec![0f32; c.k * 5];
        for (i, x) in v.iter().enumerate() {
            t[(i % 5) * c.k + i / 5] = *x;
        }
        Tensor::from_vec(t, (5, c.k), &Device::Cpu)?.t()?
    } else {
        Tensor::from_vec(v, (c.k, 5), &Device::Cpu)?
    };
    let dev = if strided {
        cpu.t()?.contiguous()?.to_device(&s.dev)?.t()?
    } else {
        cpu.to_device(&s.dev)?
    };
    Ok((cpu, dev))
}

#[test]
fn roi_align_forward() {
    let s = setup("roi_align_forward");
    let mut rep = Report::new("roi_align_forward");
    if !s.gpu {
        rep.skip(
            "roi_align forward",
            "no plain composition to compare with on the CPU (the parity suite checks the CPU op against torchvision)",
        );
        rep.finish();
        return;
    }
    for (di, dtype) in DTYPES.into_iter().enumerate() {
        let mut r = Rng::new(s.seed, 20 + di as u64);
        for i in 0..s.cases {
            let c = roi_case(&mut r);
            let strided = i % 2 == 1;
            let what = format!("roi_align {c} {} {}", name(dtype), layout(strided));
            let res = (|| -> Res<()> {
                let (fc, fd) = input(
                    &s,
                    &[c.n, c.c, c.h, c.w],
                    3000 * i as u64,
                    1.0,
                    dtype,
                    strided,
                )?;
                let (bc, bd) = roi_boxes(&s, &c, &mut r, strided)?;
                let got = roi_align(&fd, &bd, &c.p)?;
                let want = roi_align(&fc, &bc, &c.p)?;
                rep.compare(&what, &got, &want, fwd_tol(dtype))
            })();
            rep.error(&what, res);
        }
    }
    rep.finish();
}

#[test]
fn roi_align_backward_pass() {
    let s = setup("roi_align_backward_pass");
    let mut rep = Report::new("roi_align_backward_pass");
    if s.dev.is_metal() {
        rep.skip(
            "roi_align backward",
            "the Metal build has no backward kernel",
        );
        rep.finish();
        return;
    }
    for (di, dtype) in DTYPES.into_iter().enumerate() {
        let mut r = Rng::new(s.seed, 30 + di as u64);
        for i in 0..s.cases {
            let c = roi_case(&mut r);
            let strided = i % 2 == 1;
            let what = format!("roi_align backward {c} {} {}", name(dtype), layout(strided));
            let res = (|| -> Res<()> {
                let seed = 4000 * i as u64;
                // The CPU reference needs no features: the gradient is linear in g.
                let (_, fd) = input(&s, &[c.n, c.c, c.h, c.w], seed, 1.0, dtype, strided)?;
                let (bc, bd) = roi_boxes(&s, &c, &mut r, strided)?;
                let (oh, ow) = c.p.output_size;
                let (gc, gd) = input(&s, &[c.k, c.c, oh, ow], seed + 1, 1.0, dtype, strided)?;
                let dims = (c.n, c.c, c.h, c.w);
                // Autograd and the explicit function on the device.
                let var = Var::from_tensor(&fd)?;
                let y = roi_align(&var, &bd, &c.p)?;
                let auto = (y * &gd)?
                    .sum_all()?
                    .backward()?
                    .get(&var)
                    .cloned()
                    .ok_or("no gradient for the features")?;
                let direct = roi_align_backward(&gd, &bd, &c.p, dims)?;
                // Adjoint: <roi_align(x), g> = <x, roi_align_backward(g)>, in f32.
                if dtype == DType::F32 {
                    rep.checks += 1;
                    let lhs = dot(&roi_align(&fd, &bd, &c.p)?, &gd);
                    let rhs = dot(&fd, &direct);
                    let line = format!("adjoint <y, g> = {lhs:.6}, <x, ∂x> = {rhs:.6}");
                    if (lhs - rhs).abs() <= 1e-4 * (1.0 + lhs.abs()) {
                        eprintln!("  {what}: {line} ok");
                    } else {
                        rep.fail(&what, line);
                    }
                }
                if s.gpu {
                    let want = roi_align_backward(&gc, &bc, &c.p, dims)?;
                    rep.compare(&format!("{what} autograd"), &auto, &want, grad_tol(dtype))?;
                    rep.compare(&format!("{what} explicit"), &direct, &want, grad_tol(dtype))?;
                } else {
                    // Same kernel on the CPU: autograd must give what the function gives.
                    rep.compare(&format!("{what} autograd"), &auto, &direct, grad_tol(dtype))?;
                }
                Ok(())
            })();
            rep.error(&what, res);
        }
    }
    rep.finish();
}

// ------------------------------------------------------------------------- depthwise conv

struct ConvCase {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    pad: usize,
    bias: bool,
}

impl std::fmt::Display for ConvCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "b{} c{} {}x{} k{}x{} pad{}{}",
            self.b,
            self.c,
            self.h,
            self.w,
            self.kh,
            self.kw,
            self.pad,
            if self.bias { " bias" } else { "" }
        )
    }
}

fn conv_case(r: &mut Rng) -> ConvCase {
    let (kh, kw): (usize, usize) = (r.pick(&[1, 3, 5, 7]), r.pick(&[1, 3, 5, 7]));
    let pad = r.int(0, 3);
    // The padded input must hold the kernel.
    let h = r.int((kh.saturating_sub(2 * pad)).max(1), 29);
    let w = r.int((kw.saturating_sub(2 * pad)).max(1), 41);
    ConvCase {
        b: r.int(1, 3),
        c: r.int(1, 9),
        h,
        w,
        kh,
        kw,
        pad,
        bias: r.coin(),
    }
}

/// `(x, weight, bias)` on the CPU and on the device.
type ConvInputs = ((Tensor, Tensor), (Tensor, Tensor), (Tensor, Tensor));

fn conv_inputs(s: &Setup, c: &ConvCase, seed: u64, dtype: DType, strided: bool) -> Res<ConvInputs> {
    Ok((
        input(s, &[c.b, c.c, c.h, c.w], seed, 1.0, dtype, strided)?,
        input(s, &[c.c, 1, c.kh, c.kw], seed + 1, 1.0, dtype, strided)?,
        input(s, &[c.c], seed + 2, 1.0, dtype, false)?,
    ))
}

#[test]
fn depthwise_conv_forward() {
    let s = setup("depthwise_conv_forward");
    let mut rep = Report::new("depthwise_conv_forward");
    for (di, dtype) in DTYPES.into_iter().enumerate() {
        let mut r = Rng::new(s.seed, 40 + di as u64);
        for i in 0..s.cases {
            let c = conv_case(&mut r);
            let strided = i % 2 == 1;
            let what = format!("depthwise_conv2d {c} {} {}", name(dtype), layout(strided));
            let res = (|| -> Res<()> {
                let ((xc, xd), (wc, wd), (bc, bd)) =
                    conv_inputs(&s, &c, 5000 * i as u64, dtype, strided)?;
                let (bc, bd) = if c.bias {
                    (Some(bc), Some(bd))
                } else {
                    (None, None)
                };
                let got = depthwise_conv2d(&xd, &wd, bd.as_ref(), c.pad)?;
                if got.dtype() != dtype {
                    return Err(format!("output dtype {:?}", got.dtype()).into());
                }
                let want = if s.gpu {
                    depthwise_conv2d(&xc, &wc, bc.as_ref(), c.pad)?
                } else {
                    let f = |t: &Tensor| t.to_dtype(DType::F32);
                    let bf = bc.as_ref().map(f).transpose()?;
                    depthwise_conv2d_shifted(&f(&xc)?, &f(&wc)?, bf.as_ref(), c.pad)?
                };
                rep.compare(&what, &got, &want, fwd_tol(dtype))
            })();
            rep.error(&what, res);
        }
    }
    rep.finish();
}

/// `(∂x, ∂weight, ∂bias)` of `sum(conv(x, w, b) · g)` through autograd, with `conv` the op
/// or the shifted composition.
fn conv_autograd(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    g: &Tensor,
    pad: usize,
    shifted: bool,
) -> Res<[Tensor; 3]> {
    let (x, w, b) = (
        Var::from_tensor(x)?,
        Var::from_tensor(w)?,
        Var::from_tensor(b)?,
    );
    let y = if shifted {
        depthwise_conv2d_shifted(&x, &w, Some(&b), pad)?
    } else {
        depthwise_conv2d(&x, &w, Some(&b), pad)?
    };
    let gs = (y * g)?.sum_all()?.backward()?;
    let get = |v: &Var| gs.get(v).cloned().ok_or("no gradient");
    Ok([get(&x)?, get(&w)?, get(&b)?])
}

#[test]
fn depthwise_conv_backward() {
    let s = setup("depthwise_conv_backward");
    let mut rep = Report::new("depthwise_conv_backward");
    for (di, dtype) in DTYPES.into_iter().enumerate() {
        let mut r = Rng::new(s.seed, 50 + di as u64);
        for i in 0..s.cases {
            let c = conv_case(&mut r);
            let strided = i % 2 == 1;
            let what = format!(
                "depthwise_conv2d backward {c} {} {}",
                name(dtype),
                layout(strided)
            );
            let res = (|| -> Res<()> {
                let seed = 6000 * i as u64;
                let ((xc, xd), (wc, wd), (bc, bd)) = conv_inputs(&s, &c, seed, dtype, strided)?;
                let (ho, wo) = (c.h + 2 * c.pad + 1 - c.kh, c.w + 2 * c.pad + 1 - c.kw);
                let (gc, gd) = input(&s, &[c.b, c.c, ho, wo], seed + 3, 1.0, dtype, strided)?;
                let auto = conv_autograd(&xd, &wd, &bd, &gd, c.pad, false)?;
                let (gx, gw, gb) = depthwise_conv2d_backward(&xd, &wd, &gd, c.pad)?;
                let direct = [gx, gw, gb];
                let want = if s.gpu {
                    let (gx, gw, gb) = depthwise_conv2d_backward(&xc, &wc, &gc, c.pad)?;
                    [gx, gw, gb]
                } else {
                    let f = |t: &Tensor| t.to_dtype(DType::F32);
                    conv_autograd(&f(&xc)?, &f(&wc)?, &f(&bc)?, &f(&gc)?, c.pad, true)?
                };
                for (k, n) in ["x", "weight", "bias"].iter().enumerate() {
                    let tol = grad_tol(dtype);
                    rep.compare(&format!("{what} autograd ∂{n}"), &auto[k], &want[k], tol)?;
                    rep.compare(&format!("{what} explicit ∂{n}"), &direct[k], &want[k], tol)?;
                }
                Ok(())
            })();
            rep.error(&what, res);
        }
    }
    rep.finish();
}

// ------------------------------------------------------------------------- mask upsampling

struct UpCase {
    shape: Vec<usize>,
    r: MaskResize,
}

fn up_case(r: &mut Rng) -> UpCase {
    let (h, w) = (r.int(1, 70), r.int(1, 70));
    let shape = if r.coin() {
        vec![r.int(1, 4), h, w]
    } else {
        vec![r.int(1, 2), r.int(1, 3), h, w]
    };
    let padded = (r.int(1, 200), r.int(1, 200));
    let valid = (r.int(1, padded.0), r.int(1, padded.1));
    let orig = (r.int(1, 300), r.int(1, 300));
    UpCase {
        shape,
        r: MaskResize {
            padded,
            valid,
            orig,
        },
    }
}

/// The plain chain's logits (`upsample_masks_plain` without the sigmoid), on the CPU in f32.
fn plain_logits(x: &Tensor, r: &MaskResize) -> Res<Tensor> {
    let dims = x.dims();
    let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let n: usize = dims[..dims.len() - 2].iter().product();
    let mut out_shape = dims[..dims.len() - 2].to_vec();
    out_shape.extend([r.orig.0, r.orig.1]);
    Ok(x.to_dtype(DType::F32)?
        .reshape((n, 1, h, w))?
        .upsample_bilinear2d(r.padded.0, r.padded.1, false)?
        .narrow(2, 0, r.valid.0)?
        .narrow(3, 0, r.valid.1)?
        .contiguous()?
        .upsample_bilinear2d(r.orig.0, r.orig.1, false)?
        .reshape(out_shape)?)
}

#[test]
fn mask_upsampling() {
    let s = setup("mask_upsampling");
    let mut rep = Report::new("mask_upsampling");
    // The outputs are f32 whatever the input dtype.
    let tol = fwd_tol(DType::F32);
    let prob_tol = Tol {
        atol: 1e-5,
        rtol: 0.0,
    };
    for (di, dtype) in DTYPES.into_iter().enumerate() {
        let mut r = Rng::new(s.seed, 60 + di as u64);
        for i in 0..s.cases {
            let c = up_case(&mut r);
            let strided = i % 2 == 1;
            let what = format!(
                "upsample {:?} {:?} {} {}",
                c.shape,
                c.r,
                name(dtype),
                layout(strided)
            );
            let res = (|| -> Res<()> {
                let (xc, xd) = input(&s, &c.shape, 7000 * i as u64, 8.0, dtype, strided)?;
                let logits = upsample_mask_logits(&xd, &c.r)?;
                let probs = upsample_mask_probs(&xd, &c.r)?;
                let masks = upsample_masks(&xd, &c.r)?.concat();
                let (want_logits, want_probs, want_masks) = if s.gpu {
                    (
                        upsample_mask_logits(&xc, &c.r)?,
                        upsample_mask_probs(&xc, &c.r)?,
                        upsample_masks(&xc, &c.r)?.concat(),
                    )
                } else {
                    let (m, p) = upsample_masks_plain(&xc, &c.r)?;
                    let m: Vec<u8> = m.flatten_all()?.to_vec1()?;
                    (plain_logits(&xc, &c.r)?, p, m)
                };
                rep.compare(&format!("{what} logits"), &logits, &want_logits, tol)?;
                rep.compare(&format!("{what} probs"), &probs, &want_probs, prob_tol)?;
                let reference = flat(&want_logits)?;
                rep.compare_masks(&format!("{what} masks"), &masks, &want_masks, &reference);
                Ok(())
            })();
            rep.error(&what, res);
        }
    }
    rep.finish();
}
