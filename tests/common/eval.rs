//! The benchmark fixtures of tests/fixtures/eval (made by tests/fixtures/gen/fixtures_eval.py):
//! one table of cases for the loader tests (eval_datasets.rs) and the scoring tests
//! (eval_scores.rs).

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use unires::eval::{DatasetKind, SplitBy};

/// `tests/fixtures/eval/<rel>`.
pub fn dir(rel: &str) -> PathBuf {
    super::fixtures("eval").join(rel)
}

/// The dataset root (every benchmark's folder side by side).
pub fn root() -> PathBuf {
    dir("root")
}

/// `expected/<case>.json`, read as whichever part of it a test needs.
pub fn expected<T: DeserializeOwned>(case: &str) -> T {
    let path = dir("expected").join(format!("{case}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `preds/<case>.json`.
pub fn preds_path(case: &str) -> PathBuf {
    dir("preds").join(format!("{case}.json"))
}

/// One fixture case: the name of its `expected/` and `preds/` files, and the arguments of
/// `eval::load_dataset` that load it.
pub struct Case {
    pub name: &'static str,
    pub kind: DatasetKind,
    pub split: &'static str,
    pub split_by: Option<SplitBy>,
}

const fn case(
    name: &'static str,
    kind: DatasetKind,
    split: &'static str,
    split_by: Option<SplitBy>,
) -> Case {
    Case {
        name,
        kind,
        split,
        split_by,
    }
}

/// Every case the generator writes. `split_by` is what the generator used: `None` where the
/// benchmark's folder has a single scheme (RefCOCO and RefCOCO+ only `refs(unc).p`,
/// gRefCOCO only `grefs(unc).json`, RefCOCOm none) or where the case is the default one
/// (RefCOCOg `umd`); `Some` only for the Google split of RefCOCOg, which needs it.
pub const CASES: [Case; 11] = [
    case("refcoco_val", DatasetKind::RefCoco, "val", None),
    case("refcoco_testA", DatasetKind::RefCoco, "testA", None),
    case("refcoco_testB", DatasetKind::RefCoco, "testB", None),
    case("refcoco+_val", DatasetKind::RefCocoPlus, "val", None),
    case("refcocog_test", DatasetKind::RefCocoG, "test", None),
    case(
        "refcocog_val_google",
        DatasetKind::RefCocoG,
        "val",
        Some(SplitBy::Google),
    ),
    case("grefcoco_val", DatasetKind::GRefCoco, "val", None),
    case("grefcoco_testA", DatasetKind::GRefCoco, "testA", None),
    case(
        "refcocom_val_part_only",
        DatasetKind::RefCocoM,
        "val_part_only",
        None,
    ),
    case(
        "refcocom_val_object_part",
        DatasetKind::RefCocoM,
        "val_object_part",
        None,
    ),
    case(
        "refcocom_testA_part_only",
        DatasetKind::RefCocoM,
        "testA_part_only",
        None,
    ),
];
