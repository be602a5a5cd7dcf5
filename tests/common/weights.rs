//! Helpers of the weights tests: the fixture paths, the "micro" configuration the fixture
//! checkpoints are sized for (tests/fixtures/gen/fixtures_weights.py), the two layout sets,
//! one-call assembly, and a stand-in for the hub's HTTP API.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use unires::config::{
    Activation, ClipVisionConfig, LlamaConfig, SamMaskDecoderConfig, UniResConfig,
};
use unires::model::unires::assemble::{assemble, AssembleOptions, AssembleReport, GlueSource};
use unires::{BoxXyxy, Proposals};

/// `tests/fixtures/weights/<rel>`.
pub fn fx(rel: &str) -> PathBuf {
    super::fixtures("weights").join(rel)
}

/// The unires configuration matching the fixture components (CLIP, LLaMA and SAM sizes are
/// also in their config.json files; the ConvNeXt sizes are inferred from its tensors).
pub fn micro_config() -> UniResConfig {
    let mut c = UniResConfig::tiny();
    c.name = "micro".into();
    c.vision.clip = ClipVisionConfig {
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        num_channels: 3,
        image_size: 16,
        patch_size: 4,
        hidden_act: Activation::QuickGelu,
        layer_norm_eps: 1e-5,
    };
    c.hires.convnext.hidden_sizes = vec![8, 12, 16, 24];
    c.hires.convnext.depths = vec![1, 1, 2, 1];
    c.hires.image_size = 64;
    c.region.dim = 8;
    c.region.select_dim = 8;
    c.region.box_freqs = 2;
    c.region.pool_size = 2;
    c.llm = LlamaConfig {
        vocab_size: 32,
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        num_key_value_heads: Some(1),
        head_dim: Some(8),
        max_position_embeddings: 128,
        rms_norm_eps: 1e-5,
        ..LlamaConfig::default()
    };
    c.decoder.sam = SamMaskDecoderConfig {
        hidden_size: 16,
        mlp_dim: 32,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        num_multimask_outputs: 2,
        iou_head_hidden_dim: 16,
        ..SamMaskDecoderConfig::default()
    };
    c
}

/// The published layouts, in two sets that hold the same weights.
pub struct Set {
    pub clip: &'static str,
    pub convnext: &'static str,
    pub sam: &'static str,
}

/// open_clip / CLIPModel / segment-anything.
pub const SET_A: Set = Set {
    clip: "clip_model",
    convnext: "convnext_open_clip",
    sam: "sam_vit_micro.pth",
};
/// HF CLIPVisionModel / HF ConvNextModel / HF SamModel.
pub const SET_B: Set = Set {
    clip: "clip_vision",
    convnext: "convnext_hf",
    sam: "sam_hf",
};

pub fn options(out: &Path, set: &Set, glue: GlueSource) -> AssembleOptions {
    AssembleOptions {
        out: out.to_path_buf(),
        config: micro_config(),
        clip: vec![fx(set.clip)],
        convnext: vec![fx(set.convnext)],
        llm: vec![fx("llama")],
        sam: Some(vec![fx(set.sam)]),
        glue,
        tokenizer: fx("tokenizer.json"),
        dtype: None,
        max_shard_bytes: u64::MAX,
        progress: false,
    }
}

/// Assembles set A with fresh glue (seed 5) into `out`.
pub fn assemble_a(out: &Path) -> AssembleReport {
    assemble(&options(out, &SET_A, GlueSource::Fresh { seed: 5 })).unwrap()
}

pub fn image() -> image::RgbImage {
    image::RgbImage::from_fn(48, 36, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 7) as u8, ((x + y) * 3) as u8])
    })
}

pub fn proposals() -> Proposals {
    Proposals::new(
        vec![
            BoxXyxy::new(2.0, 3.0, 20.0, 30.0),
            BoxXyxy::new(24.0, 4.0, 46.0, 34.0),
        ],
        vec![BoxXyxy::new(4.0, 5.0, 12.0, 14.0)],
    )
}

/// All tensors of a checkpoint directory (single file or shards), as f32.
pub fn read_all(dir: &Path) -> std::collections::BTreeMap<String, Tensor> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) == Some("safetensors") {
            for (k, v) in candle_core::safetensors::load(&p, &Device::Cpu).unwrap() {
                out.insert(k, v.to_dtype(DType::F32).unwrap());
            }
        }
    }
    out
}

/// The commit every served repository is at.
pub const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// A stand-in for the hub's HTTP API on localhost: repository info and file downloads
/// (with the headers `hf-hub` reads) for one repository; 404 for anything else.
pub fn serve(repos: Vec<(&'static str, PathBuf)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut range = None;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(r) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    let (a, b) = r.trim().split_once('-').unwrap_or(("0", ""));
                    range = Some((a.parse::<usize>().unwrap_or(0), b.parse::<usize>().ok()));
                }
            }
            let found = repos.iter().find_map(|(repo, dir)| {
                let info = format!("/api/models/{repo}/revision/main");
                let files = format!("/{repo}/resolve/main/");
                if path == info {
                    Some((dir.clone(), None))
                } else {
                    path.strip_prefix(&files)
                        .filter(|n| dir.join(n).is_file())
                        .map(|n| (dir.clone(), Some(n.to_string())))
                }
            });
            let (status, headers, body): (&str, Vec<String>, Vec<u8>) = if let Some((dir, None)) =
                &found
            {
                let sib: Vec<serde_json::Value> = std::fs::read_dir(dir)
                    .unwrap()
                    .map(|e| serde_json::json!({"rfilename": e.unwrap().file_name().to_str().unwrap()}))
                    .collect();
                let body = serde_json::json!({"sha": SHA, "siblings": sib}).to_string();
                (
                    "200 OK",
                    vec!["Content-Type: application/json".into()],
                    body.into_bytes(),
                )
            } else if let Some((dir, Some(name))) = &found {
                let mut data = Vec::new();
                std::fs::File::open(dir.join(name))
                    .unwrap()
                    .read_to_end(&mut data)
                    .unwrap();
                let size = data.len();
                let (a, b) = match range {
                    Some((a, Some(b))) => (a, b.min(size - 1)),
                    Some((a, None)) => (a, size - 1),
                    None => (0, size - 1),
                };
                let etag = format!(
                    "{:x}{:08x}",
                    size,
                    name.bytes()
                        .fold(0u32, |h, c| h.wrapping_mul(31).wrapping_add(c as u32))
                );
                (
                    if range.is_some() {
                        "206 Partial Content"
                    } else {
                        "200 OK"
                    },
                    vec![
                        format!("x-repo-commit: {SHA}"),
                        format!("etag: \"{etag}\""),
                        format!("content-range: bytes {a}-{b}/{size}"),
                    ],
                    data[a..=b].to_vec(),
                )
            } else {
                ("404 Not Found", vec![], b"Repository not found".to_vec())
            };
            let mut out = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for h in headers {
                out.push_str(&h);
                out.push_str("\r\n");
            }
            out.push_str("\r\n");
            let _ = stream.write_all(out.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    format!("http://{addr}")
}
