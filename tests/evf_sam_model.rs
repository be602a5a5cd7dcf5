//! A tiny EVF-SAM checkpoint in the published layout (fp16 `pytorch_model.bin`, config.json,
//! `sentencepiece.bpe.model`, the multitask `added_tokens.json`), made by
//! tests/fixtures/gen/fixtures_evf_checkpoint.py together with what the reference
//! (hustvl/EVF-SAM's tokenizer, preprocessing and `EvfSamModel.inference`) computes for three
//! queries. Loaded through the family seam from a directory, from safetensors (single and
//! sharded) and from a local stand-in for the hub, it must give the reference's token ids,
//! mask logits (≤ 1e-4) and hence masks.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::TempDir;
use unires::model::evf_sam::load::{load_dir, EvfSamModel};
use unires::pipeline::{load_segmenter, load_segmenter_with, Family, Segmenter};
use unires::types::connected_components;
use unires::weights::hub::HubOptions;
use unires::{Error, Granularity, Mask, Source};

#[derive(serde::Deserialize)]
struct Query {
    expression: String,
    granularity: String,
    text: String,
}

struct Expected {
    queries: Vec<Query>,
    tensors: HashMap<String, Tensor>,
    image: image::RgbImage,
}

fn expected() -> Expected {
    let dir = common::fixtures("evf_sam/tiny");
    let queries =
        serde_json::from_str(&std::fs::read_to_string(dir.join("queries.json")).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let image = image::open(dir.join("image.png")).unwrap().to_rgb8();
    Expected {
        queries,
        tensors,
        image,
    }
}

fn logits_mask(logits: &Tensor) -> (Mask, Vec<f32>) {
    let (h, w) = logits.dims2().unwrap();
    let v = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let data = v.iter().map(|&x| u8::from(x > 0.0)).collect();
    (Mask::from_vec(h, w, data).unwrap(), v)
}

/// The segmentation of every query equals the reference's mask (pixels whose reference logit
/// is within 1e-3 of zero may go either way), its score is the mean probability over the
/// mask, and multi splits into the reference mask's connected components.
fn check_segmenter(seg: &dyn Segmenter, ex: &Expected) {
    assert_eq!(seg.family(), Family::EvfSam);
    assert!(!seg.uses_proposals());
    let enc = seg.encode(&ex.image, &Default::default()).unwrap();
    for (i, q) in ex.queries.iter().enumerate() {
        let g: Granularity = q.granularity.parse().unwrap();
        let got = seg.segment(&enc, &q.expression, g).unwrap();
        let logits = ex.tensors[&format!("logits.{i}")].clone();
        let (want, v) = logits_mask(&logits);
        let (h, w) = (want.height(), want.width());
        let mut differ = 0;
        for y in 0..h {
            for x in 0..w {
                if got.mask.get(y, x) != want.get(y, x) && v[y * w + x].abs() > 1e-3 {
                    differ += 1;
                }
            }
        }
        assert_eq!(differ, 0, "{}: {differ} pixels differ", q.text);
        assert_eq!(got.granularity, g);
        let (s, n) = v
            .iter()
            .filter(|&&x| x > 0.0)
            .fold((0f64, 0usize), |(s, n), &x| {
                (s + 1.0 / (1.0 + (-x as f64).exp()), n + 1)
            });
        let score = (s / n as f64) as f32;
        assert!(
            (got.score - score).abs() < 1e-4,
            "{}: score {} vs {score}",
            q.text,
            got.score
        );
        assert!(!got.is_empty());
        let instances = if g == Granularity::MultiObject {
            connected_components(&want).len()
        } else {
            1
        };
        assert_eq!(got.instances.len(), instances, "{}", q.text);
    }
}

#[test]
fn the_published_layout_gives_the_reference_ids_logits_and_masks() {
    let ex = expected();
    let t = TempDir::new("evf-bin");
    let dir = common::evf_checkpoint(&t, true);
    let model: EvfSamModel = load_dir(&dir, &Device::Cpu, DType::F32).unwrap();
    assert!(model.multitask);
    let enc = model.encode_image(&ex.image).unwrap();
    for (i, q) in ex.queries.iter().enumerate() {
        let g: Granularity = q.granularity.parse().unwrap();
        let query = model.query(&q.expression, g).unwrap();
        assert_eq!(query.text, q.text);
        let ids = model.token_ids(&query.text).unwrap();
        let want: Vec<u32> = ex.tensors[&format!("ids.{i}")]
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|v| v as u32)
            .collect();
        assert_eq!(ids, want, "{}", q.text);
        let got = model.mask_logits(&enc, &ids).unwrap().squeeze(0).unwrap();
        let want = &ex.tensors[&format!("logits.{i}")];
        let diff = common::tensors::max_abs_diff(&got, want);
        eprintln!("{}: max |Δ logit| = {diff:.2e}", q.text);
        assert!(diff <= 1e-4, "{}: max |Δ logit| = {diff}", q.text);
    }
    let seg = load_segmenter(&Source::Dir(dir), &Device::Cpu, DType::F32).unwrap();
    check_segmenter(seg.as_ref(), &ex);
}

/// Writes the `.bin`'s tensors as one safetensors file or as two shards with an index.
fn to_safetensors(bin_dir: &Path, out: &Path, shards: bool) {
    std::fs::create_dir_all(out).unwrap();
    for f in [
        "config.json",
        "sentencepiece.bpe.model",
        "added_tokens.json",
    ] {
        std::fs::copy(bin_dir.join(f), out.join(f)).unwrap();
    }
    let pk = unires::weights::pickle::PickleFile::open(&bin_dir.join("pytorch_model.bin")).unwrap();
    let all: Vec<(String, Tensor)> = pk
        .tensors()
        .keys()
        .map(|k| (k.clone(), pk.tensor(k).unwrap()))
        .collect();
    if !shards {
        candle_core::safetensors::save(
            &all.into_iter().collect::<HashMap<_, _>>(),
            out.join("model.safetensors"),
        )
        .unwrap();
        return;
    }
    let mut map = serde_json::Map::new();
    let half = all.len() / 2;
    for (s, part) in [&all[..half], &all[half..]].into_iter().enumerate() {
        let name = format!("model-0000{}-of-00002.safetensors", s + 1);
        let tensors: HashMap<_, _> = part.iter().cloned().collect();
        candle_core::safetensors::save(&tensors, out.join(&name)).unwrap();
        for (k, _) in part {
            map.insert(k.clone(), serde_json::Value::String(name.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(out.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

#[test]
fn safetensors_single_and_sharded_load_like_the_pickle() {
    let ex = expected();
    let t = TempDir::new("evf-st");
    let dir = common::evf_checkpoint(&t, true);
    for shards in [false, true] {
        let out = t.join(if shards { "sharded" } else { "single" });
        to_safetensors(&dir, &out, shards);
        let seg = load_segmenter(&Source::Dir(out), &Device::Cpu, DType::F32).unwrap();
        check_segmenter(seg.as_ref(), &ex);
    }
}

#[test]
fn the_hub_layout_is_fetched_and_loaded() {
    let ex = expected();
    let t = TempDir::new("evf-hub");
    let dir = common::evf_checkpoint(&t, true);
    let endpoint = common::weights::serve(vec![("acme/evf-sam-tiny", dir)]);
    let opts = HubOptions {
        cache_dir: Some(t.join("cache")),
        offline: false,
        progress: false,
        endpoint: Some(endpoint),
        token: None,
    };
    let seg = load_segmenter_with(
        &Source::hub("acme/evf-sam-tiny"),
        &opts,
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    check_segmenter(seg.as_ref(), &ex);
}

#[test]
fn the_plain_checkpoint_refuses_parts_and_sends_multi_as_a_plain_expression() {
    let ex = expected();
    let t = TempDir::new("evf-plain");
    let dir = common::evf_checkpoint(&t, false);
    let model = load_dir(&dir, &Device::Cpu, DType::F32).unwrap();
    assert!(!model.multitask);
    assert!(matches!(
        model.query("zebra head", Granularity::Part),
        Err(Error::UnsupportedGranularity { .. })
    ));
    let q = model
        .query("all the zebras", Granularity::MultiObject)
        .unwrap();
    assert_eq!(q.text, "all the zebras");
    let q = model.query("  the zebra ", Granularity::Auto).unwrap();
    assert_eq!(
        (q.text.as_str(), q.granularity),
        ("the zebra", Granularity::Object)
    );
    let enc = model.encode(&ex.image, &Default::default()).unwrap();
    assert!(matches!(
        model.segment(&enc, "zebra head", Granularity::Part),
        Err(Error::UnsupportedGranularity { .. })
    ));
}

#[test]
fn bad_expressions_and_foreign_encodings_are_typed_errors() {
    let ex = expected();
    let t = TempDir::new("evf-bad");
    let model = load_dir(&common::evf_checkpoint(&t, true), &Device::Cpu, DType::F32).unwrap();
    let enc = model.encode(&ex.image, &Default::default()).unwrap();
    let g = Granularity::Object;
    assert!(matches!(
        model.segment(&enc, "  ", g),
        Err(Error::EmptyExpression)
    ));
    for special in ["the <mask> dog", "[semantic] dog", "a </s> b"] {
        assert!(
            matches!(
                model.segment(&enc, special, g),
                Err(Error::ExpressionHasSpecialToken { .. })
            ),
            "{special}"
        );
    }
    let long = "zebra ".repeat(100);
    assert!(matches!(
        model.segment(&enc, &long, g),
        Err(Error::ExpressionTooLong { .. }) | Err(Error::PromptTooLong { .. })
    ));
    let unires = unires::load(&Source::Embedded, &Device::Cpu, DType::F32).unwrap();
    let foreign = Segmenter::encode(&unires, &ex.image, &Default::default()).unwrap();
    assert!(matches!(
        model.segment(&foreign, "the zebra", g),
        Err(Error::WrongFamily { .. })
    ));
}

#[test]
fn missing_files_are_typed_errors() {
    let t = TempDir::new("evf-missing");
    let dir = common::evf_checkpoint(&t, true);
    std::fs::remove_file(dir.join("sentencepiece.bpe.model")).unwrap();
    let e = load_segmenter(&Source::Dir(dir.clone()), &Device::Cpu, DType::F32)
        .err()
        .unwrap();
    assert!(
        matches!(&e, Error::FileNotFound { path } if path.ends_with("sentencepiece.bpe.model")),
        "{e}"
    );
    let t2 = TempDir::new("evf-missing-w");
    let dir = common::evf_checkpoint(&t2, true);
    std::fs::remove_file(dir.join("pytorch_model.bin")).unwrap();
    let e = load_segmenter(&Source::Dir(dir), &Device::Cpu, DType::F32)
        .err()
        .unwrap();
    assert!(matches!(&e, Error::BadCheckpoint { .. }), "{e}");
}

#[cfg(feature = "cli")]
#[test]
fn the_cli_segments_with_an_evf_sam_directory() {
    let ex = expected();
    let t = TempDir::new("evf-cli");
    let dir = common::evf_checkpoint(&t, true);
    let out = t.join("mask.png");
    let json = t.join("out.json");
    let status = common::bin()
        .args(["segment", "--weights"])
        .arg(&dir)
        .arg("--image")
        .arg(common::fixtures("evf_sam/tiny/image.png"))
        .args([
            "--expression",
            "zebra head",
            "--granularity",
            "part",
            "--out",
        ])
        .arg(&out)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["granularity"], "part");
    let (want, v) = logits_mask(&ex.tensors["logits.1"]);
    let png = image::open(&out).unwrap().to_luma8();
    assert_eq!(
        png.dimensions(),
        (want.width() as u32, want.height() as u32)
    );
    for (i, p) in png.pixels().enumerate() {
        let (y, x) = (i / want.width(), i % want.width());
        if v[i].abs() > 1e-3 {
            assert_eq!(
                p.0[0] > 127,
                want.get(y, x) == Some(true),
                "pixel ({y}, {x})"
            );
        }
    }
}
