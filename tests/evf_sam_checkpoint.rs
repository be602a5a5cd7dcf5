//! The published EVF-SAM checkpoint's key set: the loader, built from the published
//! `config.json`, asks for exactly the 1569 tensors of `YxZhang/evf-sam`'s
//! `pytorch_model.bin` with their shapes (the list in
//! tests/fixtures/evf_sam/checkpoint-keys.tsv was taken from the reference model class), and
//! checking a checkpoint against it catches a missing, extra or misshapen tensor.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use unires::config::EvfSamConfig;
use unires::model::evf_sam::load::requested;
use unires::weights::checkpoint::{TensorIndex, TensorInfo};
use unires::weights::validate::check_requested;
use unires::Error;

/// The published config.json's fields that the family reads.
const PUBLISHED_CONFIG: &str = r#"{"architectures": ["EvfSamModel"], "hidden_size": 1024,
    "out_dim": 256, "mm_extractor_scale": "large", "sam_scale": "huge",
    "torch_dtype": "float16", "model_type": "evf", "bos_token_id": 0, "eos_token_id": 2,
    "pad_token_id": 1, "tie_word_embeddings": false}"#;

fn published_keys() -> BTreeMap<String, Vec<usize>> {
    let text = std::fs::read_to_string(common::fixtures("evf_sam/checkpoint-keys.tsv")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, shape) = l.split_once('\t').expect("name<TAB>shape");
            let dims = shape
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse::<usize>().expect("dimension"))
                .collect();
            (name.to_string(), dims)
        })
        .collect()
}

fn asked() -> BTreeMap<String, Vec<usize>> {
    let cfg = EvfSamConfig::from_json_str("published config.json", PUBLISHED_CONFIG).unwrap();
    let present: HashSet<String> = published_keys().into_keys().collect();
    let req = requested(&cfg, present).unwrap();
    let n = req.len();
    let map: BTreeMap<_, _> = req.into_iter().map(|r| (r.name, r.shape)).collect();
    assert_eq!(map.len(), n, "a tensor was asked for twice");
    map
}

#[test]
fn the_loader_asks_for_exactly_the_published_tensors() {
    let want = published_keys();
    assert_eq!(want.len(), 1569);
    let got = asked();
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(missing.is_empty(), "not asked for: {missing:?}");
    assert!(extra.is_empty(), "asked for but not published: {extra:?}");
    for (name, shape) in &want {
        assert_eq!(&got[name], shape, "{name}");
    }
    let params: usize = got.values().map(|s| s.iter().product::<usize>()).sum();
    // 1.32 B parameters (the EVF-SAM README's count).
    assert!((1.30e9..1.34e9).contains(&(params as f64)), "{params}");
}

/// A checkpoint's header (names, shapes, F16 as published) without data.
struct Header(BTreeMap<String, TensorInfo>, PathBuf);

impl TensorIndex for Header {
    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.0.get(name)
    }
    fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
    fn file_of(&self, _name: &str) -> PathBuf {
        self.1.clone()
    }
    fn origin(&self) -> &Path {
        &self.1
    }
}

fn header(keys: &BTreeMap<String, Vec<usize>>) -> Header {
    Header(
        keys.iter()
            .map(|(k, s)| (k.clone(), TensorInfo::new("F16", s.clone())))
            .collect(),
        PathBuf::from("pytorch_model.bin"),
    )
}

#[test]
fn checking_catches_missing_extra_and_misshapen_tensors() {
    let cfg = EvfSamConfig::published();
    let keys = published_keys();
    let req = requested(&cfg, keys.keys().cloned().collect()).unwrap();
    check_requested(&req, &header(&keys)).unwrap();

    let mut missing = keys.clone();
    missing.remove("mm_extractor.beit3.encoder.layers.11.ffn.B.fc2.weight");
    assert!(matches!(
        check_requested(&req, &header(&missing)),
        Err(Error::MissingTensor { name, .. }) if name.ends_with("layers.11.ffn.B.fc2.weight")
    ));

    let mut extra = keys.clone();
    extra.insert(
        "visual_model.image_encoder.blocks.32.norm1.weight".into(),
        vec![1280],
    );
    assert!(matches!(
        check_requested(&req, &header(&extra)),
        Err(Error::UnexpectedTensors { count: 1, .. })
    ));

    let mut bent = keys.clone();
    bent.insert(
        "visual_model.image_encoder.blocks.7.attn.rel_pos_h".into(),
        vec![27, 80],
    );
    assert!(matches!(
        check_requested(&req, &header(&bent)),
        Err(Error::ShapeMismatch { name, .. }) if name.ends_with("blocks.7.attn.rel_pos_h")
    ));
}
