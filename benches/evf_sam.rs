//! CPU benchmark of EVF-SAM at its real size (BEiT-3 large + SAM ViT-H, 1.32 B parameters)
//! with random weights of the published shapes: the first query on an image (encode: both
//! preprocessing branches and SAM's image encoder, then one query) and a cached query (BEiT-3
//! at 224², projection, prompt encoder, mask decoder, post-processing), in f32 and f16.
//! With `UNIRES_BENCH_PYTHON=<python of tests/fixtures/gen/evf-venv.sh>` and
//! `EVF_SAM_SRC=<checkout of hustvl/EVF-SAM>` it first runs `tools/bench_evf_sam.py`, the
//! reference model in PyTorch on the same machine, threads and image, and prints both.
//!
//! ```text
//! cargo bench --bench evf_sam                      # unires only
//! UNIRES_BENCH_PYTHON=… EVF_SAM_SRC=… cargo bench --bench evf_sam
//! cargo bench --bench evf_sam -- f32               # one dtype
//! ```
//!
//! Timing: one warm-up run, then `UNIRES_BENCH_REPEAT` (default 2) runs; the fastest. A
//! warm-up over a minute is taken as the measurement (both sides).

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use unires::config::EvfSamConfig;
use unires::model::evf_sam::EvfSam;
use unires::ops::upsample::upsample_masks_and_probs;
use unires::pipeline::evf_sam::{preprocess_beit3, preprocess_sam};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Seconds above which a warm-up run is taken as the measurement.
const SLOW: f64 = 60.0;

/// Random weights of realistic scale: matrices N(0, 1/fan_in), norm weights 1, biases 0,
/// embeddings and tokens N(0, 0.02²) (candle's CPU RNG; the values only need to be sane).
struct RandomBackend;

impl candle_nn::var_builder::SimpleBackend for RandomBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let dims = s.dims();
        let t = if dims.len() >= 2 && !(name.contains("embed") || name.contains("token")) {
            let fan_in: usize = dims[1..].iter().product();
            Tensor::randn(0f32, (1.0 / fan_in as f64).sqrt() as f32, s, dev)?
        } else if dims.len() >= 2 || name.contains("rel_pos") {
            Tensor::randn(0f32, 0.02, s, dev)?
        } else if name.ends_with("weight") {
            Tensor::ones(s, DType::F32, dev)?
        } else {
            Tensor::zeros(s, DType::F32, dev)?
        };
        t.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _d: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        Err(candle_core::Error::Msg(format!("{name}: no shape")))
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

fn image(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x ^ y) & 0xff) as u8,
        ])
    })
}

/// Fastest of `repeat` runs after a warm-up; a warm-up longer than [`SLOW`] seconds is the
/// measurement itself (a minute-long run is not disturbed by first-call effects).
fn best(repeat: usize, mut f: impl FnMut() -> Res<()>) -> Res<f64> {
    let t = Instant::now();
    f()?;
    let warm = t.elapsed().as_secs_f64();
    if warm > SLOW {
        return Ok(warm);
    }
    let mut best = f64::INFINITY;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn torch_times() -> HashMap<String, f64> {
    let Ok(py) = std::env::var("UNIRES_BENCH_PYTHON") else {
        return HashMap::new();
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/bench_evf_sam.py");
    match std::process::Command::new(py).arg(script).output() {
        Ok(o) if o.status.success() => {
            eprint!("{}", String::from_utf8_lossy(&o.stderr));
            // {"version": "…", "threads": n, "<dtype> <stage>": seconds, …}
            match serde_json::from_slice::<serde_json::Value>(&o.stdout) {
                Ok(serde_json::Value::Object(m)) => {
                    if let Some(v) = m.get("version") {
                        println!("PyTorch {v}, {} threads", m["threads"]);
                    }
                    m.iter()
                        .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
                        .collect()
                }
                _ => {
                    eprintln!("bench_evf_sam.py: unreadable output");
                    HashMap::new()
                }
            }
        }
        Ok(o) => {
            eprintln!(
                "bench_evf_sam.py failed:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
            HashMap::new()
        }
        Err(e) => {
            eprintln!("cannot run the reference benchmark: {e}");
            HashMap::new()
        }
    }
}

fn main() -> Res<()> {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let repeat: usize = std::env::var("UNIRES_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let torch = torch_times();
    let cfg = EvfSamConfig::published();
    let dev = Device::Cpu;
    let img = image(640, 480);
    let ids: Vec<u32> = vec![0, 70, 7244, 4, 70, 25553, 2];
    println!(
        "EVF-SAM (BEiT-3 large + SAM ViT-H), random weights, 640×480 image, {} threads, seconds (fastest of {repeat} after a warm-up)\n",
        rayon::current_num_threads()
    );
    println!("| dtype | stage | unires | PyTorch (ratio = PyTorch / unires) |");
    println!("|---|---|---|---|");
    for (name, dtype) in [("f32", DType::F32), ("f16", DType::F16)] {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let vb = VarBuilder::from_backend(Box::new(RandomBackend), dtype, dev.clone());
        let model = EvfSam::new(&cfg, vb)?;
        let encode = || -> Res<(Tensor, Tensor, unires::pipeline::evf_sam::SamInput)> {
            let sam = preprocess_sam(&img, 1024, &dev)?;
            let emb = model.image_embeddings(&sam.pixels)?;
            let evf = preprocess_beit3(&img, 224, &dev)?;
            Ok((emb, evf, sam))
        };
        let query =
            |emb: &Tensor, evf: &Tensor, sam: &unires::pipeline::evf_sam::SamInput| -> Res<()> {
                let t = Tensor::from_slice(&ids, (1, ids.len()), &dev)?;
                let text = model.text_embeds(evf, &t)?;
                let low = model
                    .low_res_masks(emb, &text)?
                    .squeeze(1)?
                    .to_dtype(DType::F32)?;
                upsample_masks_and_probs(&low, &sam.mask_resize())?;
                Ok(())
            };
        let first = best(repeat, || {
            let (emb, evf, sam) = encode()?;
            query(&emb, &evf, &sam)
        })?;
        let (emb, evf, sam) = encode()?;
        let cached = best(repeat.max(3), || query(&emb, &evf, &sam))?;
        for (stage, ours) in [
            ("first query (encode + query)", first),
            ("cached query", cached),
        ] {
            let key = format!(
                "{name} {}",
                if stage.starts_with("first") {
                    "first"
                } else {
                    "cached"
                }
            );
            let theirs = match torch.get(&key) {
                Some(t) if *t >= 0.0 => format!("{t:.2} ({:.2}×)", t / ours),
                Some(t) if *t == -2.0 => "over 10 min".into(),
                Some(_) => "not supported".into(),
                None => "—".into(),
            };
            println!("| {name} | {stage} | {ours:.2} | {theirs} |");
        }
    }
    Ok(())
}
