//! The EVF-SAM graph asks for exactly the tensors of the published checkpoint
//! (`YxZhang/evf-sam`), with their shapes: `tests/fixtures/evf_sam/checkpoint-keys.tsv` lists
//! its 1569 keys as `name<TAB>(d0, d1, …)`. Shapes only: no weights are read.

mod common;

use std::collections::{BTreeMap, HashSet};

use unires::config::SamImageEncoderConfig;
use unires::model::sam_image_encoder::SamImageEncoder;
use unires::weights::validate::requested_tensors;

/// The checkpoint's keys under `prefix` (prefix removed) and their shapes.
fn checkpoint_keys(prefix: &str) -> BTreeMap<String, Vec<usize>> {
    let path = common::fixtures("evf_sam/checkpoint-keys.tsv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (name, shape) = line.split_once('\t').unwrap();
        let Some(rel) = name.strip_prefix(prefix) else {
            continue;
        };
        let dims = shape
            .trim_matches(|c| c == '(' || c == ')')
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(out.insert(rel.to_string(), dims).is_none(), "{name} twice");
    }
    out
}

#[test]
fn sam_vit_h_asks_for_the_checkpoint_image_encoder_tensors() {
    let want = checkpoint_keys("visual_model.image_encoder.");
    assert_eq!(want.len(), 457, "image-encoder keys in the list");
    let cfg = SamImageEncoderConfig::vit_h();
    let got = requested_tensors(HashSet::new(), |vb| {
        SamImageEncoder::new(&cfg, vb).map(drop)
    })
    .unwrap();
    let mut asked = BTreeMap::new();
    for r in got {
        assert!(
            asked.insert(r.name.clone(), r.shape).is_none(),
            "{} asked twice",
            r.name
        );
    }
    let missing: Vec<_> = want.keys().filter(|k| !asked.contains_key(*k)).collect();
    let extra: Vec<_> = asked.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(missing.is_empty(), "not asked for: {missing:?}");
    assert!(extra.is_empty(), "not in the checkpoint: {extra:?}");
    for (name, shape) in &want {
        assert_eq!(&asked[name], shape, "{name}");
    }
}
