//! Benchmark of the custom ops, side by side with the plain candle compositions and
//! (optionally) PyTorch on the same shapes and device, and of the model's dense convolutions
//! (`model::nn::Conv2d`) per dtype against the other routes. Prints one table; BENCHMARKS.md
//! records it.
//!
//! ```text
//! cargo bench --bench ops                        # unires and candle only, on the CPU
//! UNIRES_BENCH_PYTHON=/path/to/python cargo bench --bench ops   # + tools/bench_torch.py
//! cargo bench --bench ops -- attention           # rows whose name contains "attention"
//! UNIRES_DEVICE=cuda cargo bench --features cuda --bench ops    # on a GPU (PyTorch too)
//! ```
//!
//! Timing: one warm-up call, then calls until 2 s have passed (3 to 30 calls); the fastest.
//! The machine this runs on is shared, so the minimum (the least disturbed call) is the
//! figure that repeats; tools/bench_torch.py times PyTorch the same way. On a GPU every call
//! ends with a device synchronisation, so a time covers the kernels, not just their launch.
//!
//! `UNIRES_DEVICE`: `cpu` (default), `cuda[:N]` or `metal`. `UNIRES_BENCH_SCRIPT`: another
//! copy of tools/bench_torch.py (the path compiled in is this checkout's).

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use unires::model::nn::{conv2d_im2col, Conv2d};
use unires::ops::attention::{attention_fused, attention_plain, AttnMask};
use unires::ops::dwconv::{depthwise_conv2d, depthwise_conv2d_backward, depthwise_conv2d_shifted};
use unires::ops::roi_align::{roi_align, roi_align_backward, RoiAlign};
use unires::ops::upsample::{
    upsample_masks, upsample_masks_and_probs, upsample_masks_plain, MaskResize,
};
use unires::weights::parse_device;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Seeded normal-ish values (sum of uniforms), so every run times the same data; on the CPU.
fn randn(shape: &[usize], seed: u64) -> Res<Tensor> {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let v: Vec<f32> = (0..n)
        .map(|_| (next() + next() + next() - 1.5) * 2.0)
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

struct Table {
    filter: Option<String>,
    torch: HashMap<String, f64>,
    /// Where the ops run.
    dev: Device,
}

impl Table {
    /// Fastest call of `f`, in milliseconds (each call synchronises the device).
    fn timed(&self, mut f: impl FnMut() -> Res<()>) -> Res<f64> {
        f()?;
        self.dev.synchronize()?;
        let mut best = f64::INFINITY;
        let mut calls = 0;
        let start = Instant::now();
        while calls < 3 || (start.elapsed().as_secs_f64() < 2.0 && calls < 30) {
            let t = Instant::now();
            f()?;
            self.dev.synchronize()?;
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
            calls += 1;
        }
        Ok(best)
    }

    /// [`randn`] on the benchmark's device.
    fn randn(&self, shape: &[usize], seed: u64) -> Res<Tensor> {
        Ok(randn(shape, seed)?.to_device(&self.dev)?)
    }

    fn wants(&self, key: &str) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| key.contains(f.as_str()))
    }

    /// One row: ours, the candle alternatives, and the PyTorch rows named `torch_keys`.
    fn row(&self, key: &str, ours: f64, candle: &[(&str, f64)], torch_keys: &[(&str, String)]) {
        let mut line = format!("| {key} | {ours:.2} |");
        let mut others = Vec::new();
        for (name, t) in candle {
            others.push(format!("{name} {t:.2} ({:.2}×)", t / ours));
        }
        for (name, k) in torch_keys {
            if let Some(t) = self.torch.get(k) {
                others.push(format!("torch {name} {t:.2} ({:.2}×)", t / ours));
            }
        }
        line.push_str(&format!(" {} |", others.join(", ")));
        println!("{line}");
    }
}

fn attention_rows(t: &Table) -> Res<()> {
    let shapes = [
        (32, 128, 577, false),
        (32, 128, 1024, false),
        (32, 128, 1024, true),
        (32, 128, 2048, false),
        (32, 128, 2048, true),
        (8, 32, 4096, false),
    ];
    for (h, d, s, causal) in shapes {
        let key = format!(
            "attention h{h} d{d} s{s} {}",
            if causal { "causal" } else { "full" }
        );
        if !t.wants(&key) {
            continue;
        }
        let (q, k, v) = (
            t.randn(&[1, h, s, d], 1)?,
            t.randn(&[1, h, s, d], 2)?,
            t.randn(&[1, h, s, d], 3)?,
        );
        let mask = if causal {
            AttnMask::Causal
        } else {
            AttnMask::None
        };
        let scale = 1.0 / (d as f64).sqrt();
        let fused = t.timed(|| {
            attention_fused(&q, &k, &v, mask, scale)?;
            Ok(())
        })?;
        let plain = t.timed(|| {
            attention_plain(&q, &k, &v, mask, scale)?;
            Ok(())
        })?;
        t.row(
            &key,
            fused,
            &[("plain", plain)],
            &[
                ("sdpa", format!("{key} sdpa")),
                ("eager", format!("{key} eager")),
            ],
        );
    }
    Ok(())
}

/// Small and lopsided shapes that decide where `attention` dispatches to the fused kernel:
/// `(name, heads, kv heads, Sq, Sk, D, causal)`.
fn dispatch_rows(t: &Table) -> Res<()> {
    let shapes = [
        ("tiny", 4, 4, 16, 16, 32, false),
        ("small", 8, 8, 64, 64, 64, false),
        ("small", 8, 8, 128, 128, 64, false),
        ("CLIP ViT-L/14-336", 16, 16, 577, 577, 64, false),
        ("SAM token->image", 8, 8, 7, 4096, 16, false),
        ("SAM image->token", 8, 8, 4096, 7, 16, false),
        ("LLM decode", 32, 8, 1, 1024, 128, true),
        ("LLM append 16", 32, 8, 16, 1024, 128, true),
    ];
    for (name, h, hkv, sq, sk, d, causal) in shapes {
        let key = format!("attention-dispatch {name} h{h}/{hkv} sq{sq} sk{sk} d{d}");
        if !t.wants(&key) {
            continue;
        }
        let (q, k, v) = (
            t.randn(&[1, h, sq, d], 1)?,
            t.randn(&[1, hkv, sk, d], 2)?,
            t.randn(&[1, hkv, sk, d], 3)?,
        );
        let mask = if causal {
            AttnMask::Causal
        } else {
            AttnMask::None
        };
        let scale = 1.0 / (d as f64).sqrt();
        let fused = t.timed(|| {
            attention_fused(&q, &k, &v, mask, scale)?;
            Ok(())
        })?;
        let plain = t.timed(|| {
            attention_plain(&q, &k, &v, mask, scale)?;
            Ok(())
        })?;
        t.row(&key, fused, &[("plain", plain)], &[]);
    }
    Ok(())
}

fn upsample_rows(t: &Table) -> Res<()> {
    for n in [1, 8] {
        for (orig, valid) in [((480, 640), (768, 1024)), ((1080, 1920), (576, 1024))] {
            let key = format!("upsample n{n} 256->{}x{}", orig.0, orig.1);
            if !t.wants(&key) {
                continue;
            }
            let x = t.randn(&[n, 256, 256], 4)?;
            let r = MaskResize {
                padded: (1024, 1024),
                valid,
                orig,
            };
            let both = t.timed(|| {
                upsample_masks_and_probs(&x, &r)?;
                Ok(())
            })?;
            let masks = t.timed(|| {
                upsample_masks(&x, &r)?;
                Ok(())
            })?;
            let plain = t.timed(|| {
                upsample_masks_plain(&x, &r)?;
                Ok(())
            })?;
            t.row(
                &format!("{key} masks+probs"),
                both,
                &[("plain", plain), ("fused masks only", masks)],
                &[("eager", key.clone())],
            );
        }
    }
    Ok(())
}

fn roi_rows(t: &Table) -> Res<()> {
    let key = "roi_align c1536 48x48 k48 7x7";
    if !t.wants(key) {
        return Ok(());
    }
    let feats = t.randn(&[1, 1536, 48, 48], 5)?;
    let mut rois = Vec::new();
    let mut s = 7u64;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    for _ in 0..48 {
        let (x, y) = (next() * 600.0, next() * 600.0);
        let (w, h) = (next() * 160.0 + 8.0, next() * 160.0 + 8.0);
        rois.extend([0.0, x, y, x + w, y + h]);
    }
    let rois = Tensor::from_vec(rois, (48, 5), &Device::Cpu)?.to_device(&t.dev)?;
    let p = RoiAlign::new((7, 7))
        .with_spatial_scale(1.0 / 16.0)
        .with_sampling_ratio(2);
    let fwd = t.timed(|| {
        roi_align(&feats, &rois, &p)?;
        Ok(())
    })?;
    t.row(
        &format!("{key} fwd"),
        fwd,
        &[],
        &[("torchvision", format!("{key} fwd"))],
    );
    let go = t.randn(&[48, 1536, 7, 7], 6)?;
    let dims = feats.dims4()?;
    let bwd = t.timed(|| {
        roi_align_backward(&go, &rois, &p, dims)?;
        Ok(())
    })?;
    t.row(
        &format!("{key} bwd"),
        bwd,
        &[],
        &[("torchvision", format!("{key} bwd"))],
    );
    Ok(())
}

fn dwconv_rows(t: &Table) -> Res<()> {
    for (c, s) in [(192, 128), (1536, 16)] {
        let key = format!("dwconv c{c} {s}x{s} k7");
        if !t.wants(&key) {
            continue;
        }
        let x = t.randn(&[1, c, s, s], 8)?;
        let w = t.randn(&[c, 1, 7, 7], 9)?;
        let b = t.randn(&[c], 10)?;
        let ours = t.timed(|| {
            depthwise_conv2d(&x, &w, Some(&b), 3)?;
            Ok(())
        })?;
        let grouped = t.timed(|| {
            x.conv2d(&w, 3, 1, 1, c)?
                .broadcast_add(&b.reshape((1, c, 1, 1))?)?;
            Ok(())
        })?;
        let shifted = t.timed(|| {
            depthwise_conv2d_shifted(&x, &w, Some(&b), 3)?;
            Ok(())
        })?;
        t.row(
            &format!("{key} fwd"),
            ours,
            &[
                ("candle grouped conv2d", grouped),
                ("shifted mul-add", shifted),
            ],
            &[("eager", format!("{key} fwd"))],
        );
        let go = t.randn(&[1, c, s, s], 11)?;
        let bwd = t.timed(|| {
            depthwise_conv2d_backward(&x, &w, &go, 3)?;
            Ok(())
        })?;
        t.row(
            &format!("{key} bwd"),
            bwd,
            &[],
            &[("eager", format!("{key} bwd"))],
        );
        // The same gradients through candle's autograd: our backward plus candle's gradient
        // bookkeeping, against the shifted composition's backward.
        let (xv, wv, bv) = (
            Var::from_tensor(&x)?,
            Var::from_tensor(&w)?,
            Var::from_tensor(&b)?,
        );
        let loss = (depthwise_conv2d(&xv, &wv, Some(&bv), 3)? * &go)?.sum_all()?;
        let autograd = t.timed(|| {
            loss.backward()?;
            Ok(())
        })?;
        let loss_ref = (depthwise_conv2d_shifted(&xv, &wv, Some(&bv), 3)? * &go)?.sum_all()?;
        let autograd_ref = t.timed(|| {
            loss_ref.backward()?;
            Ok(())
        })?;
        t.row(
            &format!("{key} loss.backward()"),
            autograd,
            &[("shifted mul-add", autograd_ref)],
            &[("eager", format!("{key} loss.backward"))],
        );
    }
    Ok(())
}

/// The dense convolutions of the UniRES++ heads at `base` scale (`model::nn::Conv2d`): the
/// neck's 1×1 (768 → 256) and 3×3 (256 → 256) on the stride-16 grid of a 768 input, and a
/// stride-4 1×1 projection, in each dtype, against the alternatives for that dtype: candle's
/// `conv2d` where it runs, im2col and one product, or candle's `conv2d` in f32 with casts.
fn conv_rows(t: &Table) -> Res<()> {
    let f32 = DType::F32;
    for (c, o, k, s) in [(768, 256, 1, 48), (192, 32, 1, 192), (256, 256, 3, 48)] {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let key = format!("conv2d {k}x{k} c{c}→{o} {s}x{s} {dtype:?}").to_lowercase();
            if !t.wants(&key) {
                continue;
            }
            let x = t.randn(&[1, c, s, s], 12)?.to_dtype(dtype)?;
            let w = t
                .randn(&[o, c, k, k], 13)?
                .affine(0.05, 0.0)?
                .to_dtype(dtype)?;
            let p = k / 2;
            let conv = Conv2d::from_tensors(w.clone(), None, p)?;
            let ours = t.timed(|| {
                conv.forward(&x)?;
                Ok(())
            })?;
            let im2col = t.timed(|| {
                conv2d_im2col(&x, &w, p)?;
                Ok(())
            })?;
            let via_f32 = t.timed(|| {
                x.to_dtype(f32)?
                    .conv2d(&w.to_dtype(f32)?, p, 1, 1, 1)?
                    .to_dtype(dtype)?;
                Ok(())
            })?;
            let mut others = vec![("im2col + product", im2col)];
            if dtype == f32 {
                others.push(("candle conv2d", via_f32));
            } else {
                others.push(("candle conv2d in f32 + casts", via_f32));
            }
            if dtype == DType::F16 || !t.dev.is_cpu() {
                let direct = t.timed(|| {
                    x.conv2d(&w, p, 1, 1, 1)?;
                    Ok(())
                })?;
                others.push(("candle conv2d", direct));
            }
            t.row(&key, ours, &others, &[]);
            if dtype == f32 && t.wants(&format!("{key} loss.backward()")) {
                // Training: the same gradients through candle's autograd.
                let (xv, wv) = (Var::from_tensor(&x)?, Var::from_tensor(&w)?);
                let go = t.randn(&[1, o, s, s], 14)?;
                let conv = Conv2d::from_tensors(wv.as_tensor().clone(), None, p)?;
                let loss = (conv.forward(&xv)? * &go)?.sum_all()?;
                let ours = t.timed(|| {
                    loss.backward()?;
                    Ok(())
                })?;
                let loss_ref = (xv.conv2d(&wv, p, 1, 1, 1)? * &go)?.sum_all()?;
                let candle = t.timed(|| {
                    loss_ref.backward()?;
                    Ok(())
                })?;
                t.row(
                    &format!("{key} loss.backward()"),
                    ours,
                    &[("candle conv2d", candle)],
                    &[],
                );
            }
        }
    }
    Ok(())
}

/// Runs tools/bench_torch.py with the interpreter named by `UNIRES_BENCH_PYTHON`, on the
/// same kind of device (`--device cuda` for CUDA, `--device mps` for Metal).
fn torch_times(dev: &Device) -> Res<HashMap<String, f64>> {
    let Ok(python) = std::env::var("UNIRES_BENCH_PYTHON") else {
        return Ok(HashMap::new());
    };
    let script = std::env::var("UNIRES_BENCH_SCRIPT").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/tools/bench_torch.py").to_string()
    });
    let device = match dev.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { .. } => "mps".to_string(),
    };
    let out = std::process::Command::new(python)
        .arg(script)
        .args(["--device", &device])
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "bench_torch.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    if let Some(version) = v.get("_torch") {
        println!(
            "PyTorch {version} on {}, {} threads",
            v["_device"], v["_threads"]
        );
    }
    Ok(v.as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, x)| Some((k.clone(), x.as_f64()?)))
                .collect()
        })
        .unwrap_or_default())
}

/// The MLP's first layer with its activation: `Linear::forward_act` (matmul, then bias and
/// activation in one in-place parallel pass) against `activation(forward(x))` (candle's
/// bias add and activation, each a single-threaded pass into a fresh tensor).
fn linear_act_rows(t: &Table) -> Res<()> {
    use unires::config::Activation;
    use unires::model::nn::{activation, Linear};
    let cases = [
        ("ConvNeXt-L stage 1", 192 * 192, 192, 768, Activation::Gelu),
        ("ConvNeXt-L stage 3", 48 * 48, 768, 3072, Activation::Gelu),
        ("CLIP ViT-L/14-336", 577, 1024, 4096, Activation::QuickGelu),
    ];
    for (name, rows, k, n, act) in cases {
        let key = format!("linear+{} {name} {rows}x{k}->{n}", act_name(act));
        if !t.wants(&key) {
            continue;
        }
        let mut map = HashMap::new();
        map.insert("weight".to_string(), (t.randn(&[n, k], 11)? * 0.03)?);
        map.insert("bias".to_string(), t.randn(&[n], 12)?);
        let vb = candle_nn::VarBuilder::from_tensors(map, candle_core::DType::F32, &t.dev);
        let lin = Linear::new(k, n, true, vb)?;
        let x = t.randn(&[1, rows, k], 13)?;
        let ours = t.timed(|| {
            lin.forward_act(&x, act)?;
            Ok(())
        })?;
        let plain = t.timed(|| {
            activation(&lin.forward(&x)?, act)?;
            Ok(())
        })?;
        t.row(
            &key,
            ours,
            &[("linear then activation", plain)],
            &[("eager", key.clone())],
        );
    }
    Ok(())
}

/// The end of a ConvNeXt block: `x + γ · (h W₂ᵀ + b₂)` back to NCHW, with the bare matmul
/// and `ops::scaled_residual_nchw` (one pass) against `Linear::forward` followed by candle's
/// multiply, NHWC → NCHW copy and add; and the epilogue alone.
fn residual_rows(t: &Table) -> Res<()> {
    use unires::model::nn::Linear;
    use unires::ops::{scaled_residual_nchw, scaled_residual_plain};
    let cases = [
        ("ConvNeXt-L stage 1", 192, 192),
        ("ConvNeXt-L stage 3", 768, 48),
    ];
    for (name, c, side) in cases {
        let x = t.randn(&[1, c, side, side], 21)?;
        let y = t.randn(&[1, side, side, c], 22)?;
        let g = (t.randn(&[c], 23)? * 0.1)?;
        let b = t.randn(&[c], 24)?;
        let key = format!("block end {name} c{c} {side}x{side}");
        if t.wants(&key) {
            let ours = t.timed(|| {
                scaled_residual_nchw(&x, &y, Some(&b), Some(&g))?;
                Ok(())
            })?;
            let plain = t.timed(|| {
                scaled_residual_plain(&x, &y, Some(&b), Some(&g))?;
                Ok(())
            })?;
            t.row(
                &key,
                ours,
                &[("composition", plain)],
                &[("eager", key.clone())],
            );
        }
        let key = format!("pwconv2+block end {name} c{c} {side}x{side}");
        if t.wants(&key) {
            let mut map = HashMap::new();
            map.insert("weight".to_string(), (t.randn(&[c, 4 * c], 25)? * 0.03)?);
            map.insert("bias".to_string(), b.clone());
            let vb = candle_nn::VarBuilder::from_tensors(map, candle_core::DType::F32, &t.dev);
            let lin = Linear::new(4 * c, c, true, vb)?;
            let h = t.randn(&[1, side, side, 4 * c], 26)?;
            let ours = t.timed(|| {
                let (y, bias) = lin.forward_unbiased(&h)?;
                scaled_residual_nchw(&x, &y, bias, Some(&g))?;
                Ok(())
            })?;
            let plain = t.timed(|| {
                let y = lin.forward(&h)?.broadcast_mul(&g)?;
                let _ = (&x + y.permute((0, 3, 1, 2))?.contiguous()?)?;
                Ok(())
            })?;
            t.row(
                &key,
                ours,
                &[("composition", plain)],
                &[("eager", key.clone())],
            );
        }
    }
    Ok(())
}

fn act_name(a: unires::config::Activation) -> &'static str {
    match a {
        unires::config::Activation::QuickGelu => "quick_gelu",
        unires::config::Activation::Gelu => "gelu",
        _ => "act",
    }
}

fn main() -> Res<()> {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let dev = parse_device(&std::env::var("UNIRES_DEVICE").unwrap_or_else(|_| "cpu".into()))?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "device: {:?}, threads: {}, load before: {}",
        dev.location(),
        rayon::current_num_threads(),
        load.trim()
    );
    let t = Table {
        filter,
        torch: torch_times(&dev)?,
        dev,
    };
    println!("| case | unires ms | others ms (their time / ours) |");
    println!("|---|---|---|");
    attention_rows(&t)?;
    dispatch_rows(&t)?;
    upsample_rows(&t)?;
    roi_rows(&t)?;
    dwconv_rows(&t)?;
    linear_act_rows(&t)?;
    residual_rows(&t)?;
    conv_rows(&t)?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load after: {}", load.trim());
    Ok(())
}
