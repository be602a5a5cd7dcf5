//! The embedded `tiny` model on scenes it was never trained on (it saw seed 1 only). The
//! floors sit a few points under what the model scores on this machine, so a regression in
//! any block of the graph (preprocessing, either image encoder, ROI Align, region tokens,
//! prompt assembly, LLM, mask decoder, upsampling, the no-target head) fails them, while
//! platform-level float differences do not.

mod common;

use candle_core::{DType, Device};
use unires::eval::synthetic::{evaluate_model, SyntheticEvalOptions};
use unires::{load, Granularity, Source};

/// Seed and scene count of the held-out check (30 scenes, 240 expressions, ~10 s).
const SEED: u64 = 7_100_000;
const SCENES: usize = 30;

/// (metric, floor in percent). Measured on this machine with the shipped weights: part
/// 75.9, object 82.4, multi 89.2, gIoU 83.0, cIoU 80.9, N-acc 94.6 (37 no-target
/// expressions: one miss costs 2.7 points), T-acc 100, granularity 100.
const FLOORS: [(&str, f64); 8] = [
    ("mIoU_part", 67.0),
    ("mIoU_object", 74.0),
    ("mIoU_multi", 80.0),
    ("gIoU", 75.0),
    ("cIoU", 72.0),
    ("N-acc", 85.0),
    ("T-acc", 95.0),
    ("granularity_acc", 95.0),
];

/// Of the 48 showcase expressions: how many must get the empty / non-empty answer of their
/// annotation, and how many the annotated granularity under `Auto` (measured: 48 and 48).
const SHOWCASE_EMPTY_FLOOR: usize = 45;
const SHOWCASE_GRANULARITY_FLOOR: usize = 45;

#[test]
fn embedded_model_meets_iou_floors_on_held_out_scenes() {
    let model = load(&Source::Embedded, &Device::Cpu, DType::F32).unwrap();
    let report = evaluate_model(&model, &SyntheticEvalOptions::new(SEED, SCENES)).unwrap();
    eprintln!("{}", report.table());
    assert_eq!(report.samples, SCENES * 8);
    let mut failed = Vec::new();
    for (name, floor) in FLOORS {
        let v = report.metrics[name];
        if v < floor {
            failed.push(format!("{name} {v:.2} < {floor}"));
        }
    }
    assert!(failed.is_empty(), "below the floors: {failed:?}");
}

/// The f16 compute path gives the same answers as f32 on the held-out scenes, within a
/// stated tolerance of the metrics (f16 rounding moves a few boundary pixels).
#[test]
fn f16_compute_matches_f32() {
    let opts = SyntheticEvalOptions::new(SEED + 1, 6);
    let a = evaluate_model(
        &load(&Source::Embedded, &Device::Cpu, DType::F32).unwrap(),
        &opts,
    )
    .unwrap();
    let b = evaluate_model(
        &load(&Source::Embedded, &Device::Cpu, DType::F16).unwrap(),
        &opts,
    )
    .unwrap();
    for key in ["mIoU_part", "mIoU_object", "mIoU_multi", "gIoU"] {
        let (x, y) = (a.metrics[key], b.metrics[key]);
        assert!((x - y).abs() < 3.0, "{key}: f32 {x:.2} vs f16 {y:.2}");
    }
}

/// The shipped showcase scenes: whether each expression refers to something (the JSON's
/// `empty` flag) and the granularity `Auto` picks.
#[test]
fn showcase_scenes_answer_as_annotated() {
    let model = load(&Source::Embedded, &Device::Cpu, DType::F32).unwrap();
    let (mut total, mut empty_ok, mut gran_ok) = (0, 0, 0);
    for scene in common::scenes::all() {
        let enc = model.encode(&scene.image, &scene.proposals).unwrap();
        for q in &scene.queries {
            let seg = model
                .segment(&enc, &q.expression, Granularity::Auto)
                .unwrap();
            total += 1;
            empty_ok += usize::from(seg.is_empty() == q.empty);
            gran_ok += usize::from(seg.granularity == q.granularity);
        }
    }
    assert_eq!(total, 48);
    eprintln!("showcase: empty flag {empty_ok}/48, granularity {gran_ok}/48");
    assert!(
        empty_ok >= SHOWCASE_EMPTY_FLOOR,
        "empty flag right for {empty_ok}/48"
    );
    assert!(
        gran_ok >= SHOWCASE_GRANULARITY_FLOOR,
        "granularity right for {gran_ok}/48"
    );
}

/// Scoring once without rejection and applying the no-target threshold afterwards
/// (`summarise`, `threshold_sweep`) gives exactly what segmenting with the configured
/// threshold and accumulating the masks gives; and a higher threshold never lowers N-acc
/// nor raises T-acc.
#[test]
fn threshold_applied_after_scoring_matches_segmenting_with_it() {
    use unires::eval::metrics::GeneralizedAccumulator;
    use unires::eval::synthetic::{score_scenes, summarise, threshold_sweep};
    use unires::synthetic::episode;
    use unires::Mask;
    let model = load(&Source::Embedded, &Device::Cpu, DType::F32).unwrap();
    let opts = SyntheticEvalOptions::new(SEED + 2, 6);
    let outcomes = score_scenes(&model, &opts).unwrap();
    let t = model.config().no_target_threshold;
    let report = summarise(opts.scenes, &outcomes, t, 0.0);
    let mut acc = GeneralizedAccumulator::default();
    for i in 0..opts.scenes {
        let ep = episode(opts.seed, i as u64, &opts.config);
        let enc = model.encode(&ep.scene.image, &ep.proposals).unwrap();
        for s in &ep.samples {
            let seg = model.segment(&enc, &s.expression, s.granularity).unwrap();
            let gt = s
                .mask
                .clone()
                .unwrap_or_else(|| Mask::zeros(seg.mask.height(), seg.mask.width()));
            acc.add(&seg.mask, &gt, s.mask.is_none()).unwrap();
        }
    }
    let direct = acc.metrics();
    for key in ["gIoU", "cIoU", "N-acc", "T-acc"] {
        let (x, y) = (report.metrics[key], direct.get(key).unwrap());
        assert!(
            (x - y).abs() < 1e-9,
            "{key}: after scoring {x} vs direct {y}"
        );
    }
    let mut ts: Vec<f32> = (0..=20).map(|i| i as f32 / 20.0).collect();
    ts.push(t);
    ts.sort_by(f32::total_cmp);
    let sweep = threshold_sweep(&outcomes, &ts);
    for w in sweep.windows(2) {
        assert!(
            w[1].n_acc >= w[0].n_acc && w[1].t_acc <= w[0].t_acc,
            "{w:?}"
        );
    }
    let at = sweep
        .iter()
        .find(|r| (r.threshold - t).abs() < 1e-6)
        .unwrap();
    assert!((at.giou - report.metrics["gIoU"]).abs() < 1e-9);
    // Every cue row counts its samples once.
    let n: usize = report.by_cue.iter().map(|r| r.n).sum();
    assert_eq!(n, outcomes.len());
}
