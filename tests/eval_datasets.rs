//! Benchmark loaders against tiny datasets in each published layout, made by
//! tests/fixtures/gen/fixtures_eval.py: sample metadata as written, ground-truth masks equal
//! to those pycocotools builds (RefCOCO family as `annToMask`, gRefCOCO as ReLA's loader,
//! RefCOCOm from the PNGs), counts, and the errors for missing files and unknown splits.

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::eval::{expected, root, CASES};
use common::TempDir;
use serde::Deserialize;
use unires::eval::{self, DatasetKind, SplitBy};
use unires::io::rle::Rle;
use unires::{Error, Granularity};

#[derive(Deserialize)]
struct ExpectedSample {
    sent_id: i64,
    ref_id: i64,
    sentence: String,
    file_name: String,
    height: usize,
    width: usize,
    no_target: bool,
    n_targets: usize,
    gt: String,
}

#[derive(Deserialize)]
struct Expected {
    dataset: String,
    split: String,
    n: usize,
    samples: Vec<ExpectedSample>,
}

#[test]
fn samples_and_ground_truth_match_the_reference_loaders() {
    for c in &CASES {
        let (case, kind) = (c.name, c.kind);
        let want: Expected = expected(case);
        let ds = eval::load_dataset(kind, &root(), c.split, c.split_by).unwrap();
        assert_eq!(ds.name(), want.dataset);
        assert_eq!(ds.split(), want.split);
        assert_eq!(ds.len(), want.n, "{case}");
        assert_eq!(ds.metric_family(), kind.metric_family());
        for (i, w) in want.samples.iter().enumerate() {
            let s = ds.sample(i).unwrap();
            assert_eq!(s.index, i);
            assert_eq!(s.sent_id, w.sent_id, "{case} #{i}");
            assert_eq!(ds.sent_id(i).unwrap(), w.sent_id);
            assert_eq!(s.ref_id, w.ref_id, "{case} #{i}");
            assert_eq!(s.sentence, w.sentence, "{case} #{i}");
            assert_eq!(
                s.image_path,
                root().join("images/train2014").join(&w.file_name)
            );
            assert_eq!((s.height, s.width), (w.height, w.width), "{case} #{i}");
            assert_eq!(s.no_target, w.no_target, "{case} #{i}");
            assert_eq!(s.n_targets, w.n_targets, "{case} #{i}");
            let (iw, ih) = image::image_dimensions(&s.image_path).unwrap();
            assert_eq!((ih as usize, iw as usize), (s.height, s.width));
            let gt = ds.gt_mask(i).unwrap();
            let want_gt = Rle::from_compressed(w.height, w.width, &w.gt)
                .unwrap()
                .decode()
                .unwrap();
            assert_eq!(gt, want_gt, "{case} #{i} ({}): ground truth", w.sentence);
            if w.no_target {
                assert!(gt.is_empty());
            }
        }
        assert!(ds.sample(want.n).is_err());
        assert!(ds.gt_mask(want.n).is_err());

        let sum = ds.summary();
        assert_eq!(sum.sentences, want.n);
        let images: HashSet<&str> = want.samples.iter().map(|s| s.file_name.as_str()).collect();
        let refs: HashSet<i64> = want.samples.iter().map(|s| s.ref_id).collect();
        assert_eq!(sum.images, images.len(), "{case}");
        assert_eq!(sum.refs, refs.len(), "{case}");
        assert_eq!(
            sum.no_target,
            want.samples.iter().filter(|s| s.no_target).count()
        );
        assert_eq!(
            sum.multi_target,
            want.samples.iter().filter(|s| s.n_targets > 1).count()
        );
        assert!(sum.images_found);
    }
}

/// The table loads RefCOCO with the default scheme; naming it (`unc`) must load the same
/// samples, and the other scheme (`google`, which has no testB) must be refused.
#[test]
fn refcoco_split_by_unc_is_the_default() {
    let default = eval::load_dataset(DatasetKind::RefCoco, &root(), "testB", None).unwrap();
    let unc =
        eval::load_dataset(DatasetKind::RefCoco, &root(), "testB", Some(SplitBy::Unc)).unwrap();
    let want: Expected = expected("refcoco_testB");
    assert_eq!(default.len(), want.n);
    assert_eq!(unc.len(), want.n);
    for (i, w) in want.samples.iter().enumerate() {
        assert_eq!(default.sent_id(i).unwrap(), w.sent_id);
        assert_eq!(unc.sent_id(i).unwrap(), w.sent_id);
        assert_eq!(unc.gt_mask(i).unwrap(), default.gt_mask(i).unwrap());
    }
    match eval::load_dataset(
        DatasetKind::RefCoco,
        &root(),
        "testB",
        Some(SplitBy::Google),
    ) {
        Err(Error::UnknownSplit { known, .. }) => assert_eq!(known, "train, val, test"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("google testB loaded"),
    }
}

#[test]
fn granularity_hints() {
    let ds = eval::load_dataset(DatasetKind::RefCocoM, &root(), "val_part_only", None).unwrap();
    assert_eq!(ds.sample(0).unwrap().granularity, Some(Granularity::Part));
    let ds = eval::load_dataset(DatasetKind::RefCocoM, &root(), "val_object_part", None).unwrap();
    assert_eq!(ds.sample(0).unwrap().granularity, None);
    let ds = eval::load_dataset(DatasetKind::RefCoco, &root(), "val", None).unwrap();
    assert_eq!(ds.sample(0).unwrap().granularity, Some(Granularity::Object));
}

/// Position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn refs_pickle_is_python2_style_and_decodes() {
    // The generator asserts the opcodes with pickletools; check the bytes here as well:
    // protocol 2, a key as SHORT_BINSTRING ('U', length byte), a long sentence as BINSTRING
    // ('T', little-endian u32 length).
    let bytes = std::fs::read(root().join("refcoco/refs(unc).p")).unwrap();
    assert_eq!(&bytes[..2], &[0x80, 2]);
    assert!(find(&bytes, b"U\x07sent_id").is_some());
    let want: Expected = expected("refcoco_val");
    let long = want
        .samples
        .iter()
        .find(|s| s.sentence.len() >= 256)
        .unwrap();
    let at = find(&bytes, long.sentence.as_bytes()).unwrap();
    let mut header = vec![b'T'];
    header.extend_from_slice(&(long.sentence.len() as u32).to_le_bytes());
    assert_eq!(&bytes[at - 5..at], &header[..]);
    // Non-ASCII (UTF-8 bytes of a Python 2 str) and a Python 2 unicode sentence.
    let ds = eval::load_dataset(DatasetKind::RefCoco, &root(), "val", None).unwrap();
    let sentences: Vec<String> = (0..ds.len())
        .map(|i| ds.sample(i).unwrap().sentence)
        .collect();
    assert!(sentences.iter().any(|s| s == "café chair"));
    assert!(sentences.iter().any(|s| s == "unicode sentence"));
}

#[test]
fn unknown_splits_list_the_known_ones() {
    for (kind, split, by, known) in [
        (
            DatasetKind::RefCoco,
            "test",
            None,
            "train, val, testA, testB",
        ),
        (DatasetKind::RefCocoG, "testA", None, "train, val, test"),
        (
            DatasetKind::RefCocoG,
            "test",
            Some(SplitBy::Google),
            "train, val",
        ),
        (
            DatasetKind::GRefCoco,
            "testC",
            None,
            "train, val, testA, testB",
        ),
    ] {
        match eval::load_dataset(kind, &root(), split, by) {
            Err(Error::UnknownSplit { known: k, .. }) => assert_eq!(k, known),
            Err(e) => panic!("{kind} {split}: {e}"),
            Ok(_) => panic!("{kind} {split}: loaded"),
        }
    }
    match eval::load_dataset(DatasetKind::RefCocoM, &root(), "val", None) {
        Err(Error::UnknownSplit { known, .. }) => {
            assert!(known.contains("val_part_only") && known.contains("testB_object_part"))
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("loaded"),
    }
    assert!(matches!(
        eval::load_dataset(DatasetKind::RefCocoPlus, &root(), "val", Some(SplitBy::Umd)),
        Err(Error::UnknownSplit { .. })
    ));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn missing_files_name_the_paths_looked_for() {
    let tmp = TempDir::new("eval-missing");
    // No refs file at all.
    let err = eval::load_dataset(DatasetKind::RefCoco, &tmp.0, "val", None)
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(msg.contains("refcoco/refs(unc).p"), "{msg}");
    // RefCOCOm annotations without masks.
    copy_dir(&root().join("anns"), &tmp.0.join("anns"));
    let err = eval::load_dataset(DatasetKind::RefCocoM, &tmp.0, "val_part_only", None)
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("masks/refcocom/9001.png") && msg.contains("masks/9001.png"),
        "{msg}"
    );
    // A root that does not exist.
    assert!(matches!(
        eval::load_dataset(DatasetKind::GRefCoco, &tmp.0.join("nope"), "val", None),
        Err(Error::FileNotFound { .. })
    ));
}

#[test]
fn refcocom_accepts_folders_without_the_name_level() {
    let tmp = TempDir::new("eval-flat");
    copy_dir(&root().join("anns/refcocom"), &tmp.0.join("anns"));
    copy_dir(&root().join("masks/refcocom"), &tmp.0.join("masks"));
    let ds = eval::load_dataset(DatasetKind::RefCocoM, &tmp.0, "val_object_part", None).unwrap();
    let reference =
        eval::load_dataset(DatasetKind::RefCocoM, &root(), "val_object_part", None).unwrap();
    assert_eq!(ds.len(), reference.len());
    for i in 0..ds.len() {
        assert_eq!(ds.gt_mask(i).unwrap(), reference.gt_mask(i).unwrap());
    }
    // Images are not needed to load (or to score predictions).
    assert!(!ds.summary().images_found);
}

#[test]
fn root_may_be_the_dataset_folder_itself() {
    let ds = eval::load_dataset(
        DatasetKind::RefCocoG,
        &root().join("refcocog"),
        "test",
        None,
    )
    .unwrap();
    let want: Expected = expected("refcocog_test");
    assert_eq!(ds.len(), want.n);
    assert_eq!(ds.sample(0).unwrap().sent_id, want.samples[0].sent_id);
}
