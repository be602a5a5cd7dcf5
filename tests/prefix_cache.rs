//! The prompt-prefix cache (`pipeline::unires::prefix`): a query prefilled after an image's
//! cached prefix gives the states of a full prefill, and the same masks; a requested
//! granularity answered in the same pass as the prompt gives the `[SEG]` state of the
//! two-pass answer; `segment_many` gives what one `segment` per expression gives.
//!
//! Tolerance 1e-5 on last-layer states of magnitude ~1 (RMS-normed): a prefix at the wrong
//! positions (RoPE offset), a missing or doubled cached token, or a causal mask aligned to
//! the wrong corner moves them by 1e-2 or more.

mod common;

use candle_core::{DType, IndexOp, Tensor};
use common::tensors::max_abs_diff;
use unires::model::unires::UniRes;
use unires::pipeline::unires::{prompt_query, query, PromptPrefix};
use unires::pipeline::Segmenter;
use unires::{load, Error, Granularity, Source};

const TOL: f32 = 1e-5;

const ALL: [Granularity; 4] = [
    Granularity::Auto,
    Granularity::Part,
    Granularity::Object,
    Granularity::MultiObject,
];

fn embedded() -> UniRes {
    load(&Source::Embedded, &common::device(), DType::F32).unwrap()
}

/// The embedded model and a model of the same configuration with seeded random weights
/// (states without the structure training gave them).
fn models() -> Vec<(&'static str, UniRes)> {
    let trained = embedded();
    let fresh = UniRes::seeded(
        trained.config(),
        trained.prompt_builder().clone(),
        11,
        DType::F32,
    )
    .unwrap();
    vec![("embedded", trained), ("seeded", fresh)]
}

#[test]
fn cached_prefill_gives_the_states_of_a_full_prefill() {
    let mut worst = 0f32;
    let mut checked = 0;
    for (name, model) in models() {
        for scene in common::scenes::all() {
            let enc = model.encode(&scene.image, &scene.proposals).unwrap();
            let prefix = enc
                .prefix
                .as_ref()
                .expect("the prefix cache is on by default");
            let counts = (enc.proposals.objects.len(), enc.proposals.parts.len());
            for q in scene.queries.iter().take(3) {
                let qp = prompt_query(
                    &model,
                    &enc.image_tokens,
                    &enc.region_tokens,
                    &q.expression,
                    counts,
                )
                .unwrap();
                let s = qp.seq_len().unwrap();
                assert!(
                    prefix.matches(&qp.prompt, s),
                    "{}: prefix unused",
                    scene.name
                );
                assert!(
                    s - prefix.len() < s / 2,
                    "the query's own part is the shorter one"
                );
                for g in ALL {
                    let a = query::answer_query(&model, &qp, g, Some(prefix)).unwrap();
                    let b = query::answer_query(&model, &qp, g, None).unwrap();
                    assert_eq!(a.chosen, b.chosen, "{name} {} {g:?}", scene.name);
                    let d = [
                        max_abs_diff(&a.hidden, &b.hidden),
                        max_abs_diff(&a.seg, &b.seg),
                        (0..3)
                            .map(|i| (a.probs[i] - b.probs[i]).abs())
                            .fold(0f32, f32::max),
                    ];
                    for (what, v) in ["states", "[SEG]", "granularity"].iter().zip(d) {
                        assert!(v <= TOL, "{name} {} {g:?} {what}: {v:e}", scene.name);
                        worst = worst.max(v);
                    }
                    checked += 1;
                }
            }
        }
    }
    eprintln!("{checked} queries, max |cached − full| {worst:e}");
}

/// Answering a requested granularity in the prompt's own pass equals prefilling the prompt
/// and appending `<g_*> [SEG]` through the KV cache.
#[test]
fn one_pass_answer_equals_the_two_pass_answer() {
    let model = embedded();
    let scene = common::scenes::scene("parts");
    let enc = model.encode(&scene.image, &scene.proposals).unwrap();
    let counts = (enc.proposals.objects.len(), enc.proposals.parts.len());
    let qp = prompt_query(
        &model,
        &enc.image_tokens,
        &enc.region_tokens,
        &scene.queries[0].expression,
        counts,
    )
    .unwrap();
    for (i, g) in ALL[1..].iter().enumerate() {
        let one = query::answer_query(&model, &qp, *g, None).unwrap();
        let (hidden, mut cache) = query::prefill(&model, &qp).unwrap();
        let seg = query::answer(&model, &mut cache, i).unwrap();
        let d = max_abs_diff(&one.seg, &seg).max(max_abs_diff(&one.hidden, &hidden));
        assert!(d <= TOL, "{g:?}: {d:e}");
        assert_eq!(one.chosen, i);
    }
}

#[test]
fn masks_are_the_same_with_and_without_the_cache() {
    let cached = embedded();
    let mut plain = embedded();
    plain.set_prefix_cache(false);
    let mut n = 0;
    for scene in common::scenes::all() {
        let a = Segmenter::encode(&cached, &scene.image, &scene.proposals).unwrap();
        let b = Segmenter::encode(&plain, &scene.image, &scene.proposals).unwrap();
        assert!(
            a.bytes() > b.bytes(),
            "the cache is counted in the encoding's bytes"
        );
        for q in &scene.queries {
            for g in [Granularity::Auto, q.granularity] {
                let x = Segmenter::segment(&cached, &a, &q.expression, g).unwrap();
                let y = Segmenter::segment(&plain, &b, &q.expression, g).unwrap();
                let what = format!("{} {:?} {g:?}", scene.name, q.expression);
                assert_eq!(x.granularity, y.granularity, "{what}");
                assert!((x.score - y.score).abs() <= TOL, "{what}: score");
                assert!(x.mask == y.mask, "{what}: masks differ");
                assert_eq!(x.instances.len(), y.instances.len(), "{what}");
                n += 1;
            }
        }
    }
    assert_eq!(n, 96);
}

#[test]
fn segment_many_gives_one_segment_per_expression() {
    let model = embedded();
    let scene = common::scenes::scene("multi");
    let enc = Segmenter::encode(&model, &scene.image, &scene.proposals).unwrap();
    let mut exprs: Vec<&str> = scene
        .queries
        .iter()
        .map(|q| q.expression.as_str())
        .collect();
    exprs.insert(2, "   ");
    let many = Segmenter::segment_many(&model, &enc, &exprs, Granularity::Auto);
    assert_eq!(many.len(), exprs.len());
    for (e, got) in exprs.iter().zip(many) {
        if e.trim().is_empty() {
            assert!(matches!(got, Err(Error::EmptyExpression)), "{got:?}");
            continue;
        }
        let got = got.unwrap();
        let one = Segmenter::segment(&model, &enc, e, Granularity::Auto).unwrap();
        assert!(
            got.mask == one.mask && got.granularity == one.granularity,
            "{e}"
        );
        assert_eq!(got.score, one.score, "{e}");
    }
}

/// A prefix that does not start the query's prompt (here: built for one object fewer) is
/// not used: the query gets a full prefill and exactly its result.
#[test]
fn a_prefix_that_does_not_match_is_not_used() {
    let model = embedded();
    let scene = common::scenes::scene("colour");
    let enc = model.encode(&scene.image, &scene.proposals).unwrap();
    let (n_obj, n_part) = (enc.proposals.objects.len(), enc.proposals.parts.len());
    assert!(n_obj >= 2);
    let fewer: Vec<Tensor> = (0..n_obj + n_part)
        .filter(|&i| i != 0)
        .map(|i| enc.region_tokens.i(i..i + 1).unwrap())
        .collect();
    let fewer = Tensor::cat(&fewer, 0).unwrap();
    let wrong = PromptPrefix::new(&model, &enc.image_tokens, &fewer, (n_obj - 1, n_part)).unwrap();
    let qp = prompt_query(
        &model,
        &enc.image_tokens,
        &enc.region_tokens,
        &scene.queries[0].expression,
        (n_obj, n_part),
    )
    .unwrap();
    assert!(!wrong.matches(&qp.prompt, qp.seq_len().unwrap()));
    let a = query::answer_query(&model, &qp, Granularity::Auto, Some(&wrong)).unwrap();
    let b = query::answer_query(&model, &qp, Granularity::Auto, None).unwrap();
    assert_eq!(max_abs_diff(&a.hidden, &b.hidden), 0.0);
    assert_eq!(max_abs_diff(&a.seg, &b.seg), 0.0);
}
