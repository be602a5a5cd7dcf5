//! End-to-end timing of UniRES++ at paper width: the `base` preset (CLIP ViT-L/14-336,
//! ConvNeXt-L at 768, a LLaMA-7B-wide LLM cut to 2 layers, 256-wide decoder) with seeded
//! random weights, on a 640×480 image with 12 object and 24 part proposals (a ~660-token
//! prompt).
//!
//! ```text
//! cargo run --release --example bench_e2e -- [--dtype f32|f16|bf16] [--json FILE]
//!     [--quantize q8_0|q4k] [--layers N] [--rounds R]
//! ```
//!
//! Each round encodes the image (vision blocks, region tokens and the prompt prefix through
//! the LLM), then asks three expressions: the first is the cold query (it follows the
//! encoding), the other two are cached queries; then the same image is encoded without the
//! prefix cache and asked once (a query that prefills its whole prompt). Every figure is the
//! fastest of the rounds (default 2); stage times come from `unires::pipeline::profile`.
//! `peak_rss_mb` is the peak resident set after the weights are in place (inference: the
//! weights plus the largest activations), `rss_after_init_mb` the weights alone.
//! `tools/bench_torch_e2e.py` times the same stages in PyTorch eager.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use candle_core::DType;
use image::RgbImage;
use serde_json::json;
use unires::config::UniResConfig;
use unires::model::unires::prompt::word_level_prompt;
use unires::model::unires::UniRes;
use unires::pipeline::profile;
use unires::pipeline::unires::EncodedImage;
use unires::types::BoxXyxy;
use unires::weights::parse_dtype;
use unires::{Granularity, Proposals, Quantization};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const EXPRESSIONS: [&str; 3] = [
    "the red car on the left",
    "the handle of the mug",
    "all the cars",
];

struct Args {
    dtype: DType,
    quantize: Option<Quantization>,
    json: Option<String>,
    layers: usize,
    rounds: usize,
}

fn args() -> Res<Args> {
    let mut a = Args {
        dtype: DType::F32,
        quantize: None,
        json: None,
        layers: 2,
        rounds: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--dtype" => a.dtype = parse_dtype(&v()?)?,
            "--json" => a.json = Some(v()?),
            "--quantize" => a.quantize = Some(v()?.parse()?),
            "--layers" => a.layers = v()?.parse()?,
            "--rounds" => a.rounds = v()?.parse::<usize>()?.max(1),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

/// A 640×480 image with some structure (gradients and blocks).
fn image() -> RgbImage {
    RgbImage::from_fn(640, 480, |x, y| {
        let block = ((x / 80) + (y / 60)) % 3;
        image::Rgb([
            (x * 255 / 640) as u8,
            (y * 255 / 480) as u8,
            (block * 100 + (x ^ y) % 50) as u8,
        ])
    })
}

/// 12 object boxes on a grid and two part boxes inside each.
fn proposals() -> Proposals {
    let mut objects = Vec::new();
    let mut parts = Vec::new();
    for i in 0..12u32 {
        let (x, y) = ((i % 4) as f32 * 160.0, (i / 4) as f32 * 160.0);
        objects.push(BoxXyxy::new(x + 10.0, y + 10.0, x + 150.0, y + 150.0));
        parts.push(BoxXyxy::new(x + 20.0, y + 20.0, x + 80.0, y + 70.0));
        parts.push(BoxXyxy::new(x + 70.0, y + 80.0, x + 140.0, y + 140.0));
    }
    Proposals::new(objects, parts)
}

/// A `/proc/self/status` memory field (`VmHWM:` peak resident set, `VmRSS:` now) in MiB.
fn status_mb(field: &str) -> f64 {
    common::status_kb(field) as f64 / 1024.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Adds the recorded stages to `into`, keeping the smaller time per stage.
fn keep_min(into: &mut BTreeMap<&'static str, f64>, stages: Vec<(&'static str, Duration)>) {
    let mut sum: BTreeMap<&'static str, f64> = BTreeMap::new();
    for (n, d) in stages {
        *sum.entry(n).or_default() += ms(d);
    }
    for (n, v) in sum {
        let e = into.entry(n).or_insert(f64::INFINITY);
        *e = e.min(v);
    }
}

fn main() -> Res<()> {
    let a = args()?;
    let mut cfg = UniResConfig::base();
    cfg.name = "bench-e2e".into();
    cfg.llm.num_hidden_layers = a.layers;
    let words: Vec<&str> = EXPRESSIONS
        .iter()
        .flat_map(|e| e.split_whitespace())
        .collect();
    let (prompt, _) = word_level_prompt(&cfg.prompt, &cfg.tokens, &cfg.limits, &words)?;
    let t = Instant::now();
    let mut model = UniRes::seeded(&cfg, prompt, 5, a.dtype)?;
    if let Some(q) = a.quantize {
        let r = model.quantize_llm(q)?;
        eprintln!(
            "LLM quantised to {q}: {} layers, {:.0} MiB -> {:.0} MiB",
            r.layers,
            r.bytes_before as f64 / 1048576.0,
            r.bytes_after as f64 / 1048576.0
        );
    }
    let init_ms = ms(t.elapsed());
    let weights_mb = status_mb("VmRSS:");
    let threads = rayon::current_num_threads();
    eprintln!(
        "base preset, LLM {} layers, hires {}, {:?}, {threads} threads; weights initialised in \
         {:.1} s, RSS {weights_mb:.0} MiB (peak {:.0} MiB)",
        a.layers,
        cfg.hires.image_size,
        a.dtype,
        init_ms / 1e3,
        status_mb("VmHWM:")
    );
    // From here on the peak resident set is that of inference, not of drawing the weights
    // (Linux: writing 5 to clear_refs resets VmHWM to the current RSS).
    let init_peak_mb = status_mb("VmHWM:");
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (img, props) = (image(), proposals());
    profile::enable(true);
    let mut best: BTreeMap<&'static str, f64> = BTreeMap::new();
    let mut stages: BTreeMap<&'static str, f64> = BTreeMap::new();
    let mut prompt_tokens = 0;
    let mut put = |k: &'static str, v: f64| {
        let e = best.entry(k).or_insert(f64::INFINITY);
        *e = e.min(v);
    };
    for round in 0..a.rounds {
        model.set_prefix_cache(true);
        let _ = profile::take();
        let t = Instant::now();
        let enc: EncodedImage = model.encode(&img, &props)?;
        let encode = ms(t.elapsed());
        prompt_tokens = enc.prefix.as_ref().map_or(0, |p| p.len());
        let mut query_ms = Vec::new();
        for e in EXPRESSIONS {
            let t = Instant::now();
            let _ = model.segment(&enc, e, Granularity::Auto)?;
            query_ms.push(ms(t.elapsed()));
        }
        // Stages of the encoding and of the last (cached) query.
        let rec = profile::take();
        let n_q = rec.iter().filter(|(n, _)| *n == "prompt").count();
        let mut seen_prompts = 0;
        let kept: Vec<_> = rec
            .into_iter()
            .filter(|(n, _)| {
                seen_prompts += usize::from(*n == "prompt");
                seen_prompts == 0 || seen_prompts == n_q
            })
            .collect();
        keep_min(&mut stages, kept);
        drop(enc);
        model.set_prefix_cache(false);
        let plain = model.encode(&img, &props)?;
        let t = Instant::now();
        let _ = model.segment(&plain, EXPRESSIONS[0], Granularity::Auto)?;
        let uncached = ms(t.elapsed());
        let _ = profile::take();
        let cached = (query_ms[1] + query_ms[2]) / 2.0;
        eprintln!(
            "  RSS now {:.0} MiB, peak {:.0} MiB",
            status_mb("VmRSS:"),
            status_mb("VmHWM:")
        );
        eprintln!(
            "round {round}: encode {encode:.0} ms, first query {:.0} ms, cached {cached:.0} ms, \
             without the prefix cache {uncached:.0} ms",
            query_ms[0]
        );
        put("encode_ms", encode);
        put("cold_query_ms", encode + query_ms[0]);
        put("first_query_ms", query_ms[0]);
        put("cached_query_ms", cached);
        put("uncached_query_ms", uncached);
    }
    let rss = status_mb("VmHWM:");
    println!("stage            ms");
    for (k, v) in &stages {
        println!("{k:<14} {v:>8.1}");
    }
    for (k, v) in &best {
        println!("{k:<18} {v:>8.1}");
    }
    let ratio = best["cached_query_ms"] / best["cold_query_ms"];
    let ratio_plain = best["cached_query_ms"] / best["uncached_query_ms"];
    println!(
        "cached / cold query {ratio:.3}; cached / uncached query {ratio_plain:.3}; \
         prompt prefix {prompt_tokens} positions; peak RSS {rss:.0} MiB"
    );
    if let Some(path) = &a.json {
        let dtype = match a.dtype {
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            _ => "f32",
        };
        let v = json!({
            "dtype": dtype,
            "quantize": a.quantize.map(|q| q.as_str()),
            "threads": threads,
            "llm_layers": a.layers,
            "hires": cfg.hires.image_size,
            "prefix_positions": prompt_tokens,
            "rounds": a.rounds,
            "init_ms": init_ms,
            "encode_ms": best["encode_ms"],
            "cold_query_ms": best["cold_query_ms"],
            "first_query_ms": best["first_query_ms"],
            "cached_query_ms": best["cached_query_ms"],
            "uncached_query_ms": best["uncached_query_ms"],
            "cached_over_cold": ratio,
            "cached_over_uncached": ratio_plain,
            "stages_ms": stages,
            "peak_rss_mb": rss,
            "rss_after_init_mb": weights_mb,
            "init_peak_rss_mb": init_peak_mb,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")?;
    }
    Ok(())
}
