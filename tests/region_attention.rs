//! `region.bidirectional_regions`: the region tokens attend to each other inside an otherwise
//! causal LLM. The mask, the prefix cache under it (cached = full prefill), the training
//! prefill (= the inference prefill), and that a region's state then depends on the regions
//! after it (and does not without the option).
//!
//! Tolerance 1e-5 on last-layer states of magnitude ~1, as in `tests/prefix_cache.rs`: a span
//! off by one position or a mask applied to the wrong sequence moves them by 1e-2 or more.

mod common;

use candle_core::{DType, Device, IndexOp};
use common::tensors::max_abs_diff;
use unires::model::llm::span_mask;
use unires::model::unires::UniRes;
use unires::pipeline::unires::{prompt_query, query};
use unires::types::Proposals;
use unires::{load, BoxXyxy, Granularity, Source};

const TOL: f32 = 1e-5;

/// A model of the embedded configuration with seeded weights, with or without the option.
fn seeded(bidirectional: bool) -> UniRes {
    let base = load(&Source::Embedded, &common::device(), DType::F32).unwrap();
    let mut cfg = base.config().clone();
    cfg.region.bidirectional_regions = bidirectional;
    UniRes::seeded(&cfg, base.prompt_builder().clone(), 5, DType::F32).unwrap()
}

#[test]
fn span_mask_is_causal_outside_the_span() {
    // Two sequences of 6 new positions after 2 cached ones; the first has regions at 3..=5.
    let m = span_mask(&[Some((3, 5)), None], 2, 6, &Device::Cpu).unwrap();
    assert_eq!(m.dims(), [2, 1, 6, 8]);
    let v: Vec<Vec<f32>> = m.i((0, 0)).unwrap().to_vec2().unwrap();
    let w: Vec<Vec<f32>> = m.i((1, 0)).unwrap().to_vec2().unwrap();
    for i in 0..6 {
        let q = i + 2;
        for k in 0..8 {
            let causal = k <= q;
            let span = (3..=5).contains(&q) && (3..=5).contains(&k);
            assert_eq!(v[i][k] == 0.0, causal || span, "query {q} key {k}");
            assert!(v[i][k] == 0.0 || v[i][k] == f32::NEG_INFINITY);
            assert_eq!(w[i][k] == 0.0, causal, "no span: causal, query {q} key {k}");
        }
    }
}

#[test]
fn a_region_sees_the_regions_after_it_only_with_the_option() {
    let scene = common::scenes::scene("relation");
    let moved = {
        let mut objects = scene.proposals.objects.clone();
        let last = objects.len() - 1;
        let b = objects[last];
        objects[last] = BoxXyxy::new(b.x1 * 0.5, b.y1 * 0.5, b.x2 * 0.5 + 8.0, b.y2 * 0.5 + 8.0);
        Proposals::new(objects, scene.proposals.parts.clone())
    };
    assert!(scene.proposals.objects.len() >= 2);
    for (on, want_change) in [(false, false), (true, true)] {
        let model = seeded(on);
        let states = |p: &Proposals| {
            let enc = model.encode(&scene.image, p).unwrap();
            let counts = (enc.proposals.objects.len(), enc.proposals.parts.len());
            let qp = prompt_query(
                &model,
                &enc.image_tokens,
                &enc.region_tokens,
                "the car",
                counts,
            )
            .unwrap();
            let first = qp.region_positions[0];
            let a = query::answer_query(&model, &qp, Granularity::Object, None).unwrap();
            a.hidden.i((.., first, ..)).unwrap()
        };
        let d = max_abs_diff(&states(&scene.proposals), &states(&moved));
        if want_change {
            assert!(
                d > 1e-3,
                "bidirectional: the first region ignores the last ({d:e})"
            );
        } else {
            assert!(
                d <= 1e-6,
                "causal: the first region moved with the last ({d:e})"
            );
        }
    }
}

#[test]
fn prefix_cache_and_training_prefill_agree_with_the_full_prefill() {
    let model = seeded(true);
    let mut worst = 0f32;
    for scene in common::scenes::all() {
        let enc = model.encode(&scene.image, &scene.proposals).unwrap();
        let prefix = enc.prefix.as_ref().expect("the prefix cache is on");
        let counts = (enc.proposals.objects.len(), enc.proposals.parts.len());
        let prompts: Vec<_> = scene
            .queries
            .iter()
            .take(3)
            .map(|q| {
                prompt_query(
                    &model,
                    &enc.image_tokens,
                    &enc.region_tokens,
                    &q.expression,
                    counts,
                )
                .unwrap()
            })
            .collect();
        for qp in &prompts {
            assert!(qp.region_span().is_some());
            let a = query::answer_query(&model, qp, Granularity::Object, Some(prefix)).unwrap();
            let b = query::answer_query(&model, qp, Granularity::Object, None).unwrap();
            let d = max_abs_diff(&a.hidden, &b.hidden).max(max_abs_diff(&a.seg, &b.seg));
            assert!(d <= TOL, "{}: cached vs full {d:e}", scene.name);
            worst = worst.max(d);
        }
        // The training prefill (right-padded batch, answers teacher-forced, one mask per
        // sequence) gives each prompt's `[SEG]` state as inference does.
        let batch: Vec<_> = prompts.iter().map(|q| (q, 1usize)).collect();
        let pre = query::prefill_answered(&model, &batch).unwrap();
        for (i, qp) in prompts.iter().enumerate() {
            let a = query::answer_query(&model, qp, Granularity::Object, None).unwrap();
            let d = max_abs_diff(&pre.seg.i(i).unwrap().unsqueeze(0).unwrap(), &a.seg);
            assert!(
                d <= TOL,
                "{}: training vs inference [SEG] {d:e}",
                scene.name
            );
            worst = worst.max(d);
        }
    }
    eprintln!("max difference {worst:e}");
}
