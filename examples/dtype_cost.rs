//! Time and memory of the compute dtypes on the CPU: f32, f16 and bf16 side by side, each in
//! a fresh child process, on the showcase scenes (`examples/scenes`).
//!
//! Two models: the embedded `tiny` one, and `mid`, the `tiny` graph widened to a ViT-B/14 at
//! 224, a ConvNeXt [128, 256, 512, 1024] at 512, a 1024-wide 8-layer LLaMA with a 32000-token
//! vocabulary and a 256-wide SAM decoder (~300 M parameters, fresh seeded weights written to
//! a temporary checkpoint in bf16 and loaded as the command line loads one: the masks mean
//! nothing, the cost is real). Per dtype: the weights' resident size after building the
//! model, the fastest of `--reps` passes over the scenes (encode each image once, then every
//! query under `Auto`), and the peak resident set (`VmHWM`, reset once the model is built) of
//! the passes: weights plus activations and the process's own ~15 MiB.
//!
//! ```text
//! cargo run --release --example dtype_cost                 # both models, 2 passes
//! cargo run --release --example dtype_cost -- mid --scenes 2 --queries 3 --reps 1
//! ```
//!
//! Linux only (reads /proc/self/status).

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use common::status_kb;
use unires::config::UniResConfig;
use unires::io::boxes::load_boxes;
use unires::model::unires::prompt::word_level_prompt;
use unires::{Granularity, Source, UniRes};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const SCENES: [&str; 6] = ["colour", "multi", "no_target", "parts", "relation", "tall"];

fn mid_config() -> UniResConfig {
    let mut c = UniResConfig::tiny();
    c.name = "mid".into();
    let v = &mut c.vision.clip;
    (v.hidden_size, v.intermediate_size, v.num_hidden_layers) = (768, 3072, 12);
    (v.num_attention_heads, v.image_size, v.patch_size) = (12, 224, 14);
    let h = &mut c.hires;
    h.convnext.hidden_sizes = vec![128, 256, 512, 1024];
    h.convnext.depths = vec![2, 2, 6, 2];
    h.image_size = 512;
    c.region.dim = 256;
    let l = &mut c.llm;
    (l.vocab_size, l.hidden_size, l.intermediate_size) = (32000, 1024, 2816);
    (
        l.num_hidden_layers,
        l.num_attention_heads,
        l.num_key_value_heads,
    ) = (8, 16, Some(16));
    let d = &mut c.decoder.sam;
    (
        d.hidden_size,
        d.mlp_dim,
        d.num_attention_heads,
        d.iou_head_hidden_dim,
    ) = (256, 2048, 8, 256);
    c
}

/// The scenes' images, proposals and queries (at most `queries` per scene).
type Scene = (image::RgbImage, unires::Proposals, Vec<String>);

fn scenes(n: usize, queries: usize) -> Res<Vec<Scene>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scenes");
    let mut out = Vec::new();
    for name in SCENES.iter().take(n) {
        let img = image::open(dir.join(format!("{name}.png")))?.to_rgb8();
        let json = dir.join(format!("{name}.json"));
        let (boxes, _) = load_boxes(&json, img.width(), img.height(), &Default::default())?;
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
        let q = v["queries"]
            .as_array()
            .ok_or("no queries")?
            .iter()
            .filter_map(|q| q["expression"].as_str().map(String::from))
            .take(queries)
            .collect();
        out.push((img, boxes, q));
    }
    Ok(out)
}

/// Writes the `mid` checkpoint (fresh seeded weights, stored in bf16) to `dir`.
fn write_mid(dir: &Path, scenes: &[Scene]) -> Res<()> {
    let cfg = mid_config();
    let words: Vec<&str> = scenes
        .iter()
        .flat_map(|s| s.2.iter().flat_map(|q| q.split_whitespace()))
        .collect();
    let (prompt, json) = word_level_prompt(&cfg.prompt, &cfg.tokens, &cfg.limits, &words)?;
    let (_, vars) = UniRes::fresh(&cfg, prompt, 1, DType::F32)?;
    let data = vars.data().lock().map_err(|e| e.to_string())?;
    let map = data
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().to_dtype(DType::BF16)?)))
        .collect::<Res<HashMap<String, Tensor>>>()?;
    std::fs::create_dir_all(dir)?;
    candle_core::safetensors::save(&map, dir.join("model.safetensors"))?;
    std::fs::write(dir.join("config.json"), cfg.to_json_string())?;
    std::fs::write(dir.join("tokenizer.json"), json)?;
    Ok(())
}

/// The model as the command line loads it (plain tensors, no gradient tracking).
fn build(model: &str, dtype: DType) -> Res<UniRes> {
    let source = match model {
        "tiny" => Source::Embedded,
        dir => Source::Dir(dir.into()),
    };
    Ok(unires::load(&source, &Device::Cpu, dtype)?)
}

/// One pass: every scene encoded once, each of its queries segmented.
fn pass(model: &UniRes, scenes: &[Scene]) -> Res<(f64, f64)> {
    let (mut enc_s, mut seg_s) = (0f64, 0f64);
    for (img, boxes, queries) in scenes {
        let t = Instant::now();
        let enc = model.encode(img, boxes)?;
        enc_s += t.elapsed().as_secs_f64();

        let t = Instant::now();
        for q in queries {
            model.segment(&enc, q, Granularity::Auto)?;
        }
        seg_s += t.elapsed().as_secs_f64();
    }
    Ok((enc_s, seg_s))
}

/// In the child: prints `weights_kib encode_s segment_s hwm_kib`.
fn child(model: &str, dtype: DType, n: usize, queries: usize, reps: usize) -> Res<()> {
    let scenes = scenes(n, queries)?;
    let before = status_kb("VmRSS:");
    let m = build(model, dtype)?;
    let weights = status_kb("VmRSS:").saturating_sub(before);
    // Reset the peak to the current resident set ("5" to clear_refs), so that the peak
    // printed is that of the inference, not of building the model.
    std::fs::write("/proc/self/clear_refs", "5")?;

    let mut best = (f64::INFINITY, f64::INFINITY);
    for _ in 0..reps {
        let (e, s) = pass(&m, &scenes)?;
        best = (best.0.min(e), best.1.min(s));
    }
    println!("{weights} {} {} {}", best.0, best.1, status_kb("VmHWM:"));
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str, default: usize| -> Res<usize> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args.get(i + 1).ok_or("missing value")?.parse()?),
            None => Ok(default),
        }
    };
    let (n, queries, reps) = (opt("--scenes", 6)?, opt("--queries", 8)?, opt("--reps", 2)?);
    if args.first().map(String::as_str) == Some("--child") {
        let (Some(model), Some(dtype)) = (args.get(1), args.get(2)) else {
            return Err("--child MODEL DTYPE".into());
        };
        return child(
            model,
            unires::weights::parse_dtype(dtype)?,
            n,
            queries,
            reps,
        );
    }
    let models: Vec<&str> = match args.first().map(String::as_str) {
        Some(m @ ("tiny" | "mid")) => vec![m],
        _ => vec!["tiny", "mid"],
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{} scenes, ≤ {queries} queries each, fastest of {reps} passes; load before: {}",
        n.min(SCENES.len()),
        load.trim()
    );
    println!("| model | dtype | weights RSS (MiB) | encode (s) | segment (s) | per query (ms) | peak RSS (MiB) | time / f32 | peak / f32 |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe()?;
    let total_queries = scenes(n, queries)?.iter().map(|s| s.2.len()).sum::<usize>();
    let mid_dir: PathBuf = std::env::temp_dir().join(format!("unires-mid-{}", std::process::id()));
    for model in models {
        let source = if model == "mid" {
            write_mid(&mid_dir, &scenes(n, queries)?)?;
            mid_dir.to_string_lossy().into_owned()
        } else {
            model.to_string()
        };
        let mut f32_row = None;
        for dt in ["f32", "f16", "bf16"] {
            let o = Command::new(&exe)
                .args(["--child", &source, dt])
                .args([
                    "--scenes",
                    &n.to_string(),
                    "--queries",
                    &queries.to_string(),
                ])
                .args(["--reps", &reps.to_string()])
                .output()?;
            if !o.status.success() {
                println!(
                    "| {model} | {dt} | failed: {} |",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                continue;
            }
            let v: Vec<f64> = String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()?;
            let [w, e, s, hwm] = v[..] else {
                return Err("bad child output".into());
            };
            let total = e + s;
            let (t0, h0) = *f32_row.get_or_insert((total, hwm));
            println!(
                "| {model} | {dt} | {:.1} | {e:.2} | {s:.2} | {:.1} | {:.1} | {:.2} | {:.2} |",
                w / 1024.0,
                s * 1e3 / total_queries as f64,
                hwm / 1024.0,
                total / t0,
                hwm / h0
            );
        }
    }
    let _ = std::fs::remove_dir_all(&mid_dir);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load after: {}", load.trim());
    Ok(())
}
