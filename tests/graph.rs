//! The whole graph end to end on the `tiny` preset with seeded random weights: shapes,
//! determinism, the granularity decision, the KV-cache answer path, and typed input errors.

mod common;

use candle_core::DType;
use common::tensors::max_abs_diff;
use unires::config::UniResConfig;
use unires::model::unires::prompt::word_level_prompt;
use unires::model::unires::{HeadInputs, UniRes};
use unires::{BoxXyxy, Error, Granularity, Proposals};

fn model(seed: u64) -> UniRes {
    model_with_threshold(seed, UniResConfig::tiny().no_target_threshold)
}

fn image() -> image::RgbImage {
    image::RgbImage::from_fn(75, 52, |x, y| {
        image::Rgb([(x * 3) as u8, (y * 4) as u8, ((x + y) * 2) as u8])
    })
}

fn proposals() -> Proposals {
    Proposals::new(
        vec![
            BoxXyxy::new(3.0, 4.0, 30.0, 40.0),
            BoxXyxy::new(35.0, 10.0, 70.0, 50.0),
        ],
        vec![BoxXyxy::new(5.0, 5.0, 15.0, 20.0)],
    )
}

#[test]
fn segment_runs_end_to_end_and_is_deterministic() {
    let m = model(7);
    let img = image();
    let enc = m.encode(&img, &proposals()).unwrap();
    assert_eq!(enc.region_tokens.dims(), &[3, m.config().llm.hidden_size]);
    for g in [
        Granularity::Part,
        Granularity::Object,
        Granularity::MultiObject,
        Granularity::Auto,
    ] {
        let a = m.segment(&enc, "the red mug", g).unwrap();
        let b = m.segment(&enc, "the red mug", g).unwrap();
        assert_eq!(
            (a.mask.height(), a.mask.width()),
            (52, 75),
            "mask has the image size"
        );
        assert_eq!(a.mask, b.mask, "deterministic");
        assert_eq!(a.score, b.score);
        let sum: f32 = a.granularity_probs.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5);
        match g.index() {
            Some(i) => assert_eq!(a.granularity.index(), Some(i), "forced granularity is used"),
            None => {
                let best = unires::types::argmax(&a.granularity_probs);
                assert_eq!(a.granularity.index(), Some(best), "auto takes the argmax");
            }
        }
    }
    // Two encodes of the same image give the same features.
    let enc2 = m.encode(&img, &proposals()).unwrap();
    assert_eq!(max_abs_diff(&enc.dense, &enc2.dense), 0.0);
}

/// [`model`] with `no_target_threshold` set to `threshold` (same seed, so same weights).
fn model_with_threshold(seed: u64, threshold: f32) -> UniRes {
    let mut cfg = UniResConfig::tiny();
    cfg.no_target_threshold = threshold;
    let words = ["the", "red", "mug", "handle", "of", "all", "mugs"];
    let (prompt, _) = word_level_prompt(&cfg.prompt, &cfg.tokens, &cfg.limits, &words).unwrap();
    unires::train::fresh_model(&cfg, prompt, seed, DType::F32)
        .unwrap()
        .0
}

/// The next f32 above / below a positive finite `x`.
fn next_up(x: f32) -> f32 {
    f32::from_bits(x.to_bits() + 1)
}
fn next_down(x: f32) -> f32 {
    f32::from_bits(x.to_bits() - 1)
}

#[test]
fn no_proposals_and_thresholds() {
    let (expr, g) = ("all mugs", Granularity::MultiObject);
    let m = model(3);
    let img = image();
    let enc = m.encode(&img, &Proposals::default()).unwrap();
    // Never rejected by the score: what the head predicts, and the score to threshold.
    let raw = m
        .segment_with_threshold(&enc, expr, g, f32::NEG_INFINITY)
        .unwrap();
    assert_eq!((raw.mask.height(), raw.mask.width()), (52, 75));
    assert!(
        !raw.is_empty() && !raw.instances.is_empty(),
        "the query must predict pixels for the threshold to have something to remove"
    );
    let t = raw.score;
    assert!(t > 0.0 && t < 1.0, "score {t}");

    // The configured threshold, on either side of the score and at it: empty strictly
    // below ("below this target probability the result is empty"), untouched otherwise.
    for (threshold, empty) in [(next_up(t), true), (t, false), (next_down(t), false)] {
        let mt = model_with_threshold(3, threshold);
        assert_eq!(mt.config().no_target_threshold, threshold);
        let enc = mt.encode(&img, &Proposals::default()).unwrap();
        let s = mt.segment(&enc, expr, g).unwrap();
        assert_eq!(s.score, t, "same weights, same score");
        assert_eq!(s.granularity_probs, raw.granularity_probs);
        assert_eq!(s.granularity, raw.granularity);
        assert_eq!((s.mask.height(), s.mask.width()), (52, 75));
        if empty {
            assert!(
                s.is_empty() && s.instances.is_empty(),
                "threshold {threshold} > score {t}: the result must be empty"
            );
        } else {
            assert_eq!(s.mask, raw.mask, "threshold {threshold} ≤ score {t}");
            let boxes =
                |x: &unires::Segmentation| x.instances.iter().map(|i| i.bbox).collect::<Vec<_>>();
            assert_eq!(boxes(&s), boxes(&raw), "threshold {threshold} ≤ score {t}");
        }
        // The explicit-threshold entry point agrees with the configured one.
        let e = m.segment_with_threshold(&enc, expr, g, threshold).unwrap();
        assert_eq!(e.mask, s.mask);
        assert_eq!(e.instances.len(), s.instances.len());
    }
    // And the default configuration applies its own threshold the same way.
    let d = m.segment(&enc, expr, g).unwrap();
    let want_empty = t < m.config().no_target_threshold;
    assert_eq!(d.is_empty(), want_empty);
    if !want_empty {
        assert_eq!(d.mask, raw.mask);
    }
}

#[test]
fn bad_queries_are_typed_errors() {
    let m = model(1);
    let img = image();
    let enc = m.encode(&img, &proposals()).unwrap();
    assert!(matches!(
        m.segment(&enc, " \t ", Granularity::Auto),
        Err(Error::EmptyExpression)
    ));
    assert!(matches!(
        m.segment(&enc, &"mug ".repeat(400), Granularity::Auto),
        Err(Error::ExpressionTooLong { .. })
    ));
    let bad = Proposals::new(vec![BoxXyxy::new(10.0, 10.0, 5.0, 20.0)], vec![]);
    assert!(matches!(m.encode(&img, &bad), Err(Error::BadBox { .. })));
    let tiny = image::RgbImage::new(1, 1);
    assert!(matches!(
        m.encode(&tiny, &Proposals::default()),
        Err(Error::ImageTooSmall { .. })
    ));
}

/// The box-prompt weights of the head: a softmax over the competing regions (part and
/// object queries), independent sigmoids otherwise, and which regions compete by granularity.
#[test]
fn competing_selection_is_a_softmax_over_the_regions_of_the_kind() {
    use candle_core::{Device, Tensor};
    let m = model(5);
    let enc = m.encode(&image(), &proposals()).unwrap();
    assert_eq!(
        m.compete_row(Granularity::Object, 2, 1),
        vec![1.0, 1.0, 0.0]
    );
    assert_eq!(m.compete_row(Granularity::Part, 2, 1), vec![0.0, 0.0, 1.0]);
    assert_eq!(
        m.compete_row(Granularity::MultiObject, 2, 1),
        vec![0.0, 0.0, 0.0]
    );
    let mut cfg = m.config().clone();
    cfg.region.single_target_softmax = false;
    let words = ["the"];
    let (prompt, _) = word_level_prompt(&cfg.prompt, &cfg.tokens, &cfg.limits, &words).unwrap();
    let off = unires::train::fresh_model(&cfg, prompt, 5, DType::F32)
        .unwrap()
        .0;
    assert_eq!(off.compete_row(Granularity::Object, 2, 1), vec![0.0; 3]);

    let dev = Device::Cpu;
    let h = m.config().llm.hidden_size;
    let seg = Tensor::randn(0f32, 1.0, (3, h), &dev).unwrap();
    let regions = Tensor::randn(0f32, 1.0, (3, 3, h), &dev).unwrap();
    let valid = Tensor::ones((3, 3), DType::F32, &dev).unwrap();
    let boxes = enc
        .region_boxes
        .unsqueeze(0)
        .unwrap()
        .repeat((3, 1, 1))
        .unwrap();
    let compete = Tensor::new(&[[1f32, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]], &dev).unwrap();
    let rep = |t: &Tensor| t.repeat((3, 1, 1, 1)).unwrap();
    let (dense, s0, s1) = (rep(&enc.dense), rep(&enc.skips.0), rep(&enc.skips.1));
    let out = m
        .head(&HeadInputs {
            seg_hidden: &seg,
            region_hidden: &regions,
            region_valid: &valid,
            region_boxes: &boxes,
            dense: &dense,
            skips: (&s0, &s1),
            compete: Some(&compete),
            forced: None,
        })
        .unwrap();
    let l = out.select_logits.to_vec2::<f32>().unwrap();
    let w = out.select_weights.to_vec2::<f32>().unwrap();
    let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
    let (e0, e1) = (l[0][0].exp(), l[0][1].exp());
    let want = [
        [e0 / (e0 + e1), e1 / (e0 + e1), 0.0],
        [0.0, 0.0, 1.0],
        [sig(l[2][0]), sig(l[2][1]), sig(l[2][2])],
    ];
    for (row, (got, want)) in w.iter().zip(&want).enumerate() {
        for (a, b) in got.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "row {row}: {got:?} vs {want:?}");
        }
    }
}

/// An image without object proposals (none given, or every box outside the image) is
/// encoded with the whole image as its one object proposal: the same region tokens and the
/// same answers as when that box is given. Part proposals stay as they are; boxes reaching
/// past the border are clipped, not refused.
#[test]
fn an_image_without_object_proposals_gets_the_whole_image_as_one() {
    let m = model(5);
    let img = image(); // 75 × 52
    let whole = Proposals::new(vec![BoxXyxy::new(0.0, 0.0, 75.0, 52.0)], vec![]);
    let given = m.encode(&img, &whole).unwrap();
    let outside = Proposals::new(
        vec![BoxXyxy::new(100.0, 0.0, 120.0, 9.0)],
        vec![BoxXyxy::new(-9.0, -9.0, -1.0, -1.0)],
    );
    for (name, p) in [("none", Proposals::default()), ("all outside", outside)] {
        let enc = m.encode(&img, &p).unwrap();
        assert_eq!(enc.proposals, whole, "{name}");
        assert_eq!(
            max_abs_diff(&enc.region_tokens, &given.region_tokens),
            0.0,
            "{name}"
        );
        for g in [Granularity::Auto, Granularity::MultiObject] {
            let a = m
                .segment_with_threshold(&enc, "the red mug", g, f32::NEG_INFINITY)
                .unwrap();
            let b = m
                .segment_with_threshold(&given, "the red mug", g, f32::NEG_INFINITY)
                .unwrap();
            assert_eq!((a.mask, a.score), (b.mask, b.score), "{name} {g}");
        }
    }
    // Parts only: kept, with the whole image added as the object.
    let parts = Proposals::new(vec![], vec![BoxXyxy::new(5.0, 5.0, 15.0, 20.0)]);
    let enc = m.encode(&img, &parts).unwrap();
    assert_eq!(enc.proposals.objects, whole.objects);
    assert_eq!(enc.proposals.parts, parts.parts);
    assert_eq!(enc.region_tokens.dims(), &[2, m.config().llm.hidden_size]);
    // A box poking past the border is clipped to it.
    let poking = Proposals::new(vec![BoxXyxy::new(-10.0, 40.0, 30.0, 60.0)], vec![]);
    let enc = m.encode(&img, &poking).unwrap();
    assert_eq!(enc.proposals.objects, [BoxXyxy::new(0.0, 40.0, 30.0, 52.0)]);
}
