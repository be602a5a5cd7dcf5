//! The synthetic evaluation's proposal modes, box-fill baselines and held-out phrasing.

use candle_core::{DType, Device};
use unires::eval::box_fill::{fill_boxes, oracle_selection};
use unires::eval::synthetic::{evaluate_model, SyntheticEvalOptions};
use unires::synthetic::{
    detector_proposals, episode, DetectorConfig, Phrasing, ProposalMode, SplitMix64,
    SyntheticConfig,
};
use unires::types::Proposals;
use unires::{load, Granularity, Source};

/// With the exact ground-truth boxes as proposals (plus false ones), the oracle picks exactly
/// the targets' boxes, of the right kind, for every sample.
#[test]
fn oracle_selects_the_target_boxes_among_exact_proposals() {
    let cfg = SyntheticConfig::mixed_sizes();
    let (mut checked, mut multi) = (0usize, 0usize);
    for i in 0..40 {
        let ep = episode(55, i, &cfg);
        let s = &ep.scene;
        // Exact boxes, with the detector's false boxes mixed in (no jitter, no misses).
        let exact = DetectorConfig {
            jitter: 0.0,
            miss_rate: 0.0,
            ..DetectorConfig::default()
        };
        let p = detector_proposals(s, &mut SplitMix64::stream(55, &[i, 2]), &exact);
        for sample in &ep.samples {
            let mut got = oracle_selection(&p, sample);
            let mut want: Vec<_> = sample.targets.iter().map(|t| t.bbox).collect();
            let key = |b: &unires::BoxXyxy| (b.x1.to_bits(), b.y1.to_bits());
            got.sort_by_key(key);
            want.sort_by_key(key);
            want.dedup();
            assert_eq!(got, want, "{:?}", sample.expression);
            checked += 1;
            multi += usize::from(sample.granularity == Granularity::MultiObject && want.len() > 1);
        }
        // A part query's oracle never takes an object box, and the reverse.
        let only_objects = Proposals::new(p.objects.clone(), Vec::new());
        for sample in ep
            .samples
            .iter()
            .filter(|x| x.granularity == Granularity::Part)
        {
            assert!(oracle_selection(&only_objects, sample).is_empty());
        }
    }
    assert!(
        checked > 250 && multi > 20,
        "{checked} samples, {multi} multi"
    );
}

/// The box fill of a target's own box covers its whole mask (the box is tight).
#[test]
fn box_fill_of_a_tight_box_covers_the_mask() {
    let cfg = SyntheticConfig::default();
    for i in 0..10 {
        let ep = episode(56, i, &cfg);
        let (h, w) = (
            ep.scene.image.height() as usize,
            ep.scene.image.width() as usize,
        );
        for o in &ep.scene.objects {
            let fill = fill_boxes(&[o.bbox], h, w);
            assert_eq!(fill.intersection_area(&o.mask).unwrap(), o.area);
            let (bw, bh) = (o.bbox.width().round(), o.bbox.height().round());
            assert_eq!(fill.area(), (bw * bh) as u64);
        }
    }
}

/// The report of each mode and phrasing says what it ran, the model beats both box-fill
/// baselines on objects (the decoder adds to the boxes), the model's own box selection is
/// close to the oracle's with clean proposals, and the noisy detector costs the oracle.
#[test]
fn modes_and_baselines_on_the_embedded_model() {
    let model = load(&Source::Embedded, &Device::Cpu, DType::F32).unwrap();
    let run = |proposals, phrasing| {
        let opts = SyntheticEvalOptions {
            proposals,
            phrasing,
            ..SyntheticEvalOptions::new(7_200_000, 20)
        };
        let r = evaluate_model(&model, &opts).unwrap();
        assert_eq!(r.proposals, proposals.name());
        assert_eq!(r.phrasing, phrasing.name());
        eprintln!("{}", r.table());
        r
    };
    let sim = run(ProposalMode::Simulated, Phrasing::Trained);
    let noisy = run(ProposalMode::Noisy, Phrasing::Trained);
    let get = |r: &unires::eval::synthetic::SyntheticReport, b: &str, k: &str| {
        if b == "model" {
            r.metrics[k]
        } else {
            r.baselines[b][k]
        }
    };
    for r in [&sim, &noisy] {
        let m = get(r, "model", "mIoU_object");
        let oracle = get(r, "oracle_box_fill", "mIoU_object");
        assert!(
            m > oracle + 10.0,
            "model {m:.1} vs oracle box fill {oracle:.1}"
        );
    }
    let (own, oracle) = (
        get(&sim, "box_fill", "mIoU_object"),
        get(&sim, "oracle_box_fill", "mIoU_object"),
    );
    assert!(
        own <= oracle + 1e-9 + 5.0 && own > oracle - 8.0,
        "{own:.1} vs {oracle:.1}"
    );
    assert!(
        get(&noisy, "oracle_box_fill", "gIoU") < get(&sim, "oracle_box_fill", "gIoU") - 5.0,
        "missed boxes must cost the oracle"
    );
    // The same scenes and targets whatever the phrasing.
    let held = run(ProposalMode::Simulated, Phrasing::Heldout);
    assert_eq!(held.counts.part, sim.counts.part);
    assert_eq!(held.counts.no_target, sim.counts.no_target);
    assert_eq!(
        held.baselines["oracle_box_fill"]["gIoU"],
        sim.baselines["oracle_box_fill"]["gIoU"]
    );
}
