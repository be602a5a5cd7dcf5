//! Scoring against an independent Python implementation of the official definitions (ReLA's
//! `ReferEvaluator` for gRefCOCO, LAVT's `test.py` for the others), computed by
//! tests/fixtures/gen/fixtures_eval.py on the same prediction files; equal to 1e-9.

mod common;

use std::collections::BTreeMap;

use common::eval::{expected, preds_path, root, CASES};
use serde::Deserialize;
use unires::eval::{self, DatasetKind, EvalOptions, Predictions};
use unires::io::rle::Rle;
use unires::{Error, Mask};

const TOL: f64 = 1e-9;

#[derive(Deserialize)]
struct Expected {
    n: usize,
    missing: usize,
    metrics: BTreeMap<String, f64>,
    head: usize,
    metrics_head: Option<BTreeMap<String, f64>>,
}

const GENERALIZED: [&str; 7] = [
    "gIoU", "cIoU", "N-acc", "T-acc", "Pr@0.7", "Pr@0.8", "Pr@0.9",
];
const CLASSIC: [&str; 7] = [
    "oIoU", "mIoU", "Pr@0.5", "Pr@0.6", "Pr@0.7", "Pr@0.8", "Pr@0.9",
];

fn assert_metrics(
    case: &str,
    got: &eval::Metrics,
    want: &BTreeMap<String, f64>,
    kind: DatasetKind,
) {
    let names: Vec<&str> = got.iter().map(|(n, _)| n).collect();
    let order: &[&str] = if kind == DatasetKind::GRefCoco {
        &GENERALIZED
    } else {
        &CLASSIC
    };
    assert_eq!(names, order, "{case}");
    assert_eq!(want.len(), order.len(), "{case}");
    for (name, value) in got.iter() {
        let w = want[name];
        assert!(
            (value - w).abs() <= TOL,
            "{case} {name}: got {value}, reference {w}"
        );
    }
}

#[test]
fn prediction_files_score_like_the_reference_evaluators() {
    for c in &CASES {
        let (case, kind, split) = (c.name, c.kind, c.split);
        let want: Expected = expected(case);
        let ds = eval::load_dataset(kind, &root(), split, c.split_by).unwrap();
        let preds = Predictions::from_path(preds_path(case)).unwrap();
        let report = eval::score_predictions(ds.as_ref(), &preds, &EvalOptions::default()).unwrap();
        assert_eq!(report.n, want.n, "{case}");
        assert_eq!(report.missing_predictions, want.missing, "{case}");
        assert_eq!(report.dataset, kind.as_str());
        assert_eq!(report.split, split);
        assert_metrics(case, &report.metrics, &want.metrics, kind);

        // `--limit`: the first samples only.
        let opts = EvalOptions {
            limit: Some(want.head),
            progress: false,
        };
        let head = eval::score_predictions(ds.as_ref(), &preds, &opts).unwrap();
        assert_eq!(head.n, want.head);
        if let Some(m) = &want.metrics_head {
            assert_metrics(case, &head.metrics, m, kind);
        }
    }
}

#[test]
fn model_runs_score_like_prediction_files() {
    // `evaluate` with a function that returns the file's masks (empty where none) must give
    // the same numbers; it also reads each image, as a model would.
    for c in &CASES {
        let (case, kind, split) = (c.name, c.kind, c.split);
        let want: Expected = expected(case);
        let ds = eval::load_dataset(kind, &root(), split, c.split_by).unwrap();
        let preds = Predictions::from_path(preds_path(case)).unwrap();
        let mut calls = 0;
        let report = eval::evaluate(ds.as_ref(), &EvalOptions::default(), |s| {
            calls += 1;
            let img = image::open(&s.image_path).map_err(|e| Error::BadImage {
                what: s.image_path.display().to_string(),
                reason: e.to_string(),
            })?;
            assert_eq!(
                (img.height() as usize, img.width() as usize),
                (s.height, s.width)
            );
            match preds.get(s.sent_id).flatten() {
                Some(rle) => rle.decode(),
                None => Ok(Mask::zeros(s.height, s.width)),
            }
        })
        .unwrap();
        assert_eq!(calls, want.n);
        assert_eq!(report.missing_predictions, 0);
        assert_metrics(case, &report.metrics, &want.metrics, kind);
    }
}

#[test]
fn report_serialises_to_the_documented_shape() {
    let ds = eval::load_dataset(DatasetKind::GRefCoco, &root(), "val", None).unwrap();
    let preds = Predictions::from_path(preds_path("grefcoco_val")).unwrap();
    let report = eval::score_predictions(ds.as_ref(), &preds, &EvalOptions::default()).unwrap();
    let js = serde_json::to_value(&report).unwrap();
    let keys: Vec<&str> = js.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        ["dataset", "metrics", "missing_predictions", "n", "split"]
    );
    assert_eq!(js["dataset"], "grefcoco");
    assert_eq!(js["split"], "val");
    let text = serde_json::to_string(&report).unwrap();
    assert!(text.contains("\"metrics\":{\"gIoU\":"), "{text}");
    let back: eval::EvalReport = serde_json::from_str(&text).unwrap();
    assert_eq!(back, report);
}

fn grefcoco_val() -> Box<dyn eval::Dataset> {
    eval::load_dataset(DatasetKind::GRefCoco, &root(), "val", None).unwrap()
}

#[test]
fn bad_prediction_files_are_rejected() {
    let ds = grefcoco_val();
    let s0 = ds.sample(0).unwrap();
    let opts = EvalOptions::default();

    // A sentence the split does not hold.
    let text = r#"[{"sent_id": 999999, "rle": null}]"#;
    let preds = Predictions::from_json_str(text, "p.json").unwrap();
    let err = eval::score_predictions(ds.as_ref(), &preds, &opts).unwrap_err();
    assert!(
        matches!(&err, Error::Dataset { reason, .. } if reason.contains("999999")),
        "{err}"
    );

    // The same sentence twice.
    let text = format!(
        r#"[{{"sent_id": {0}, "rle": null}}, {{"sent_id": {0}}}]"#,
        s0.sent_id
    );
    assert!(matches!(
        Predictions::from_json_str(&text, "p.json"),
        Err(Error::Dataset { .. })
    ));

    // A mask of the wrong size.
    let mut preds = Predictions::new("mem");
    preds
        .insert(
            s0.sent_id,
            Some(Rle::encode(&Mask::zeros(s0.height + 1, s0.width))),
        )
        .unwrap();
    assert!(matches!(
        eval::score_predictions(ds.as_ref(), &preds, &opts),
        Err(Error::SizeMismatch { .. })
    ));

    // Counts that do not cover the image.
    let text = format!(
        r#"[{{"sent_id": {}, "rle": {{"size": [{}, {}], "counts": "0:"}}}}]"#,
        s0.sent_id, s0.height, s0.width
    );
    let err = Predictions::from_json_str(&text, "p.json").unwrap_err();
    assert!(
        matches!(&err, Error::BadRle { reason } if reason.contains(&s0.sent_id.to_string())),
        "{err}"
    );

    // Not JSON.
    assert!(matches!(
        Predictions::from_json_str("{", "p.json"),
        Err(Error::Json { .. })
    ));

    // A model returning a mask of the wrong size.
    let err = eval::evaluate(ds.as_ref(), &opts, |s| {
        Ok(Mask::zeros(s.height, s.width + 2))
    })
    .unwrap_err();
    assert!(matches!(err, Error::SizeMismatch { .. }));
}

#[test]
fn no_predictions_mean_no_target_everywhere() {
    // With nothing predicted, every no-target sample is right and every targeted one wrong.
    let ds = grefcoco_val();
    let report = eval::score_predictions(
        ds.as_ref(),
        &Predictions::new("none"),
        &EvalOptions::default(),
    )
    .unwrap();
    assert_eq!(report.missing_predictions, ds.len());
    assert_eq!(report.metrics.get("N-acc"), Some(100.0));
    assert_eq!(report.metrics.get("T-acc"), Some(0.0));
    assert_eq!(report.metrics.get("cIoU"), Some(0.0));
    let nt = (0..ds.len())
        .filter(|&i| ds.sample(i).unwrap().no_target)
        .count();
    let g = report.metrics.get("gIoU").unwrap();
    assert!((g - 100.0 * nt as f64 / ds.len() as f64).abs() < TOL);
}

#[test]
fn predictions_round_trip_through_json() {
    let preds = Predictions::from_path(preds_path("refcoco_val")).unwrap();
    let text = serde_json::to_string(&preds.to_json()).unwrap();
    let back = Predictions::from_json_str(&text, "mem").unwrap();
    assert_eq!(back.len(), preds.len());
    let ds = eval::load_dataset(DatasetKind::RefCoco, &root(), "val", None).unwrap();
    let a = eval::score_predictions(ds.as_ref(), &preds, &EvalOptions::default()).unwrap();
    let b = eval::score_predictions(ds.as_ref(), &back, &EvalOptions::default()).unwrap();
    assert_eq!(a, b);
}
