//! Properties of the synthetic benchmark: determinism, seed independence, visible-pixel masks,
//! unambiguous expressions (checked by a resolver written here from the vocabulary and the
//! scene metadata alone), the sample mix, and the simulated detector's error statistics.

use std::collections::{BTreeSet, HashMap};

use unires::synthetic::{
    detector_proposals, episode, episodes, scene, vocabulary, Class, Colour, DetectorConfig,
    Episode, PartKind, Scene, SplitMix64, SyntheticConfig,
};
use unires::{BoxXyxy, Granularity};

/// Training uses small seeds; tests use their own.
const SEED: u64 = 123_456;

fn eps(n: u64, cfg: &SyntheticConfig) -> Vec<Episode> {
    (0..n).map(|i| episode(SEED, i, cfg)).collect()
}

#[test]
fn same_seed_gives_identical_bytes() {
    let cfg = SyntheticConfig::mixed_sizes();
    for i in [0, 1, 17, 999] {
        let (a, b) = (episode(SEED, i, &cfg), episode(SEED, i, &cfg));
        assert_eq!(a.scene.image.as_raw(), b.scene.image.as_raw());
        assert_eq!(a.scene.objects.len(), b.scene.objects.len());
        for (x, y) in a.scene.objects.iter().zip(&b.scene.objects) {
            assert_eq!(x.mask, y.mask);
            assert_eq!((x.class, x.colour), (y.class, y.colour));
        }
        let ea: Vec<_> = a.samples.iter().map(|s| (&s.expression, &s.mask)).collect();
        let eb: Vec<_> = b.samples.iter().map(|s| (&s.expression, &s.mask)).collect();
        assert_eq!(ea, eb);
        assert_eq!(a.proposals, b.proposals);
    }
    // The iterator yields the same episodes as direct indexing.
    for (i, e) in episodes(SEED, &cfg).take(3).enumerate() {
        assert_eq!(
            e.scene.image.as_raw(),
            episode(SEED, i as u64, &cfg).scene.image.as_raw()
        );
    }
}

/// A fingerprint of the layout (classes, colours and boxes) of a scene.
fn layout(s: &Scene) -> Vec<(Class, Colour, [i32; 4])> {
    s.objects
        .iter()
        .map(|o| {
            let b = o.bbox;
            (
                o.class,
                o.colour,
                [b.x1, b.y1, b.x2, b.y2].map(|v| v as i32),
            )
        })
        .collect()
}

#[test]
fn different_seeds_and_indices_are_independent() {
    let cfg = SyntheticConfig::default();
    let n = 60;
    let mut same_layout = 0;
    let mut same_first_class = 0;
    for i in 0..n {
        let a = scene(SEED, i, &cfg);
        let b = scene(SEED + 1, i, &cfg);
        let c = scene(SEED, i + n, &cfg);
        assert_ne!(a.image.as_raw(), b.image.as_raw());
        assert_ne!(a.image.as_raw(), c.image.as_raw());
        same_layout += usize::from(layout(&a) == layout(&b));
        same_first_class += usize::from(a.objects[0].class == b.objects[0].class);
    }
    assert_eq!(same_layout, 0);
    // Five classes: independent streams agree on the first class about a fifth of the time.
    assert!(
        same_first_class < n as usize / 2,
        "{same_first_class} of {n} scenes of two seeds start with the same class"
    );
}

#[test]
fn masks_are_disjoint_visible_pixels_with_learnable_parts() {
    let cfg = SyntheticConfig::mixed_sizes();
    let mut sizes = BTreeSet::new();
    let mut classes = BTreeSet::new();
    for e in eps(150, &cfg) {
        let s = &e.scene;
        let (w, h) = (s.image.width() as usize, s.image.height() as usize);
        sizes.insert((w, h));
        assert!(
            (2..=6).contains(&s.objects.len()),
            "{} objects",
            s.objects.len()
        );
        let mut owner = vec![usize::MAX; w * h];
        for (k, o) in s.objects.iter().enumerate() {
            classes.insert(o.class);
            assert_eq!((o.mask.width(), o.mask.height()), (w, h));
            assert_eq!(o.mask.area(), o.area);
            assert!(o.area <= o.amodal_area);
            assert!(o.area as f32 >= (1.0 - cfg.max_occlusion) * o.amodal_area as f32 - 1.0);
            assert_eq!(o.mask.bbox(), Some(o.bbox));
            let kinds: Vec<PartKind> = o.parts.iter().map(|p| p.kind).collect();
            assert_eq!(kinds, o.class.parts());
            // Parts partition the object.
            let mut union = unires::Mask::zeros(h, w);
            for p in &o.parts {
                assert!(p.area > 0, "{:?} of a {:?} vanished", p.kind, o.class);
                assert_eq!(union.intersection_area(&p.mask).unwrap(), 0);
                union.union_with(&p.mask).unwrap();
                assert_eq!(p.mask.bbox(), Some(p.bbox));
                assert!(
                    p.bbox.width() >= 6.0 && p.bbox.height() >= 6.0,
                    "{:?} of a {:?}: {:?}",
                    p.kind,
                    o.class,
                    p.bbox
                );
            }
            assert_eq!(union, o.mask);
            for (i, &v) in o.mask.as_slice().iter().enumerate() {
                if v != 0 {
                    assert_eq!(owner[i], usize::MAX, "pixel {i} in two objects");
                    owner[i] = k;
                }
            }
        }
    }
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    assert_eq!(classes.len(), Class::ALL.len());
}

#[test]
fn named_colours_are_what_the_main_part_shows() {
    let cfg = SyntheticConfig::default();
    let mut n = 0;
    for i in 0..80 {
        let s = scene(SEED, i, &cfg);
        for o in &s.objects {
            let main = o
                .parts
                .iter()
                .find(|p| p.kind == o.class.main_part())
                .unwrap();
            let mut sum = [0f64; 3];
            for (idx, &v) in main.mask.as_slice().iter().enumerate() {
                if v != 0 {
                    let p = s.image.as_raw();
                    for c in 0..3 {
                        sum[c] += p[3 * idx + c] as f64;
                    }
                }
            }
            let mean = sum.map(|v| v / main.area as f64);
            let nearest = Colour::ALL
                .iter()
                .min_by(|a, b| {
                    let d = |c: &Colour| {
                        let r = c.rgb();
                        (0..3).map(|i| (r[i] as f64 - mean[i]).powi(2)).sum::<f64>()
                    };
                    d(a).total_cmp(&d(b))
                })
                .unwrap();
            assert_eq!(*nearest, o.colour, "mean {mean:?}");
            n += 1;
        }
    }
    assert!(n > 200);
}

// ------------------------------------------------------------------ independent resolver

/// What an expression denotes, parsed back from its words.
#[derive(Debug)]
enum Parsed {
    /// One object (`part: None`) or a part of it, singled out by the description.
    Single {
        part: Option<String>,
        class: Class,
        colour: Option<Colour>,
        relation: Option<String>,
    },
    /// "all …" or "the two/three …".
    Group {
        class: Option<Class>,
        colour: Option<Colour>,
        count: Option<usize>,
    },
}

fn class_of(word: &str) -> Option<(Class, bool)> {
    Class::ALL.into_iter().find_map(|c| {
        if c.name() == word {
            Some((c, false))
        } else if c.plural() == word {
            Some((c, true))
        } else {
            None
        }
    })
}

fn colour_of(word: &str) -> Option<Colour> {
    Colour::ALL.into_iter().find(|c| c.name() == word)
}

fn parse(expr: &str) -> Parsed {
    let w: Vec<&str> = expr.split(' ').collect();
    if w[0] == "all" {
        let (colour, rest) = match colour_of(w[1]) {
            Some(c) => (Some(c), &w[2..]),
            None => (None, &w[1..]),
        };
        assert_eq!(rest.len(), 1, "{expr}");
        let class = if rest[0] == "objects" {
            None
        } else {
            let (c, plural) = class_of(rest[0]).unwrap_or_else(|| panic!("{expr}"));
            assert!(plural, "{expr}");
            Some(c)
        };
        return Parsed::Group {
            class,
            colour,
            count: None,
        };
    }
    assert_eq!(w[0], "the", "{expr}");
    if let Some(n) = ["two", "three"].iter().position(|&x| x == w[1]) {
        let (colour, rest) = match colour_of(w[2]) {
            Some(c) => (Some(c), &w[3..]),
            None => (None, &w[2..]),
        };
        assert_eq!(rest.len(), 1, "{expr}");
        let (class, plural) = class_of(rest[0]).unwrap_or_else(|| panic!("{expr}"));
        assert!(plural);
        return Parsed::Group {
            class: Some(class),
            colour,
            count: Some(n + 2),
        };
    }
    let (part, desc) = if w.get(2) == Some(&"of") {
        (Some(w[1].to_string()), &w[3..])
    } else {
        (None, &w[..])
    };
    assert_eq!(desc[0], "the", "{expr}");
    let mut i = 1;
    let mut relation = None;
    if desc[i] == "biggest" || desc[i] == "smallest" {
        relation = Some(desc[i].to_string());
        i += 1;
    }
    let colour = colour_of(desc[i]);
    if colour.is_some() {
        i += 1;
    }
    let (class, plural) = class_of(desc[i]).unwrap_or_else(|| panic!("{expr}"));
    assert!(!plural, "{expr}");
    i += 1;
    let tail = desc[i..].join(" ");
    match tail.as_str() {
        "" => {}
        "on the left" | "on the right" | "at the top" | "at the bottom" => {
            assert!(relation.is_none(), "{expr}");
            relation = Some(tail.clone());
        }
        _ => panic!("unparsed tail {tail:?} in {expr:?}"),
    }
    Parsed::Single {
        part,
        class,
        colour,
        relation,
    }
}

/// Margins the resolver demands (looser than the generator's, so a pass means a clear winner).
const MIN_GAP_PX: f32 = 8.0;
const MIN_AREA_RATIO: f64 = 1.3;

/// The referents (object, part) of an expression; `Err` when it is ambiguous.
fn resolve(s: &Scene, expr: &str) -> Result<Vec<(usize, Option<usize>)>, String> {
    match parse(expr) {
        Parsed::Group {
            class,
            colour,
            count,
        } => {
            let set: Vec<usize> = (0..s.objects.len())
                .filter(|&k| {
                    class.is_none_or(|c| s.objects[k].class == c)
                        && colour.is_none_or(|c| s.objects[k].colour == c)
                })
                .collect();
            if set.len() == 1 {
                return Err(format!("{expr:?} names a group but matches one object"));
            }
            if let Some(n) = count {
                if !set.is_empty() && set.len() != n {
                    return Err(format!("{expr:?}: {} objects match", set.len()));
                }
            }
            Ok(set.into_iter().map(|k| (k, None)).collect())
        }
        Parsed::Single {
            part,
            class,
            colour,
            relation,
        } => {
            let cands: Vec<usize> = (0..s.objects.len())
                .filter(|&k| {
                    s.objects[k].class == class && colour.is_none_or(|c| s.objects[k].colour == c)
                })
                .collect();
            let chosen = match (cands.len(), relation) {
                (0, _) => return Ok(Vec::new()),
                (1, None) => cands[0],
                (_, None) => return Err(format!("{expr:?}: {} candidates", cands.len())),
                (_, Some(rel)) => {
                    let centre = |k: usize| {
                        let b = s.objects[k].bbox;
                        ((b.x1 + b.x2) / 2.0, (b.y1 + b.y2) / 2.0)
                    };
                    let mut keyed: Vec<(f64, usize)> = cands
                        .iter()
                        .map(|&k| {
                            let (cx, cy) = centre(k);
                            let a = s.objects[k].area as f64;
                            let key = match rel.as_str() {
                                "on the left" => -cx as f64,
                                "on the right" => cx as f64,
                                "at the top" => -cy as f64,
                                "at the bottom" => cy as f64,
                                "biggest" => a.ln(),
                                "smallest" => -a.ln(),
                                _ => unreachable!(),
                            };
                            (key, k)
                        })
                        .collect();
                    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
                    let gap = keyed[0].0 - keyed[1].0;
                    let need = if rel == "biggest" || rel == "smallest" {
                        MIN_AREA_RATIO.ln()
                    } else {
                        MIN_GAP_PX as f64
                    };
                    if gap < need {
                        return Err(format!("{expr:?}: relation margin {gap:.2}"));
                    }
                    keyed[0].1
                }
            };
            let part_index = match part {
                None => None,
                Some(p) => Some(
                    s.objects[chosen]
                        .parts
                        .iter()
                        .position(|q| q.kind.name() == p)
                        .ok_or_else(|| format!("{expr:?}: no part {p}"))?,
                ),
            };
            Ok(vec![(chosen, part_index)])
        }
    }
}

#[test]
fn every_expression_resolves_to_exactly_its_targets() {
    let cfg = SyntheticConfig::mixed_sizes();
    let mut n = 0;
    for e in eps(300, &cfg) {
        for smp in &e.samples {
            let got = resolve(&e.scene, &smp.expression).unwrap_or_else(|err| {
                panic!("scene {}: {err}", e.scene.index);
            });
            let mut want: Vec<(usize, Option<usize>)> =
                smp.targets.iter().map(|t| (t.object, t.part)).collect();
            want.sort();
            let mut got = got;
            got.sort();
            assert_eq!(got, want, "scene {}: {:?}", e.scene.index, smp.expression);
            // Granularity from the phrase's form.
            let g = if smp.expression.starts_with("all ")
                || smp.expression.starts_with("the two ")
                || smp.expression.starts_with("the three ")
            {
                Granularity::MultiObject
            } else if smp.expression.contains(" of ") {
                Granularity::Part
            } else {
                Granularity::Object
            };
            assert_eq!(smp.granularity, g, "{:?}", smp.expression);
            n += 1;
        }
    }
    assert!(n > 2000);
}

#[test]
fn targets_and_union_masks_match_the_scene() {
    let cfg = SyntheticConfig::default();
    for e in eps(120, &cfg) {
        let s = &e.scene;
        let mut seen = BTreeSet::new();
        for smp in &e.samples {
            assert!(seen.insert(smp.expression.clone()), "duplicate expression");
            if smp.targets.is_empty() {
                assert!(smp.mask.is_none() && smp.is_no_target());
                continue;
            }
            let mask = smp.mask.as_ref().expect("positive sample without a mask");
            assert!(!mask.is_empty());
            let mut union = unires::Mask::zeros(mask.height(), mask.width());
            for t in &smp.targets {
                let o = &s.objects[t.object];
                let (m, b) = match t.part {
                    Some(p) => (&o.parts[p].mask, o.parts[p].bbox),
                    None => (&o.mask, o.bbox),
                };
                assert_eq!(&t.mask, m);
                assert_eq!(t.bbox, b);
                union.union_with(m).unwrap();
            }
            assert_eq!(&union, mask);
            match smp.granularity {
                Granularity::MultiObject => assert!(smp.targets.len() >= 2),
                _ => assert_eq!(smp.targets.len(), 1),
            }
        }
    }
}

#[test]
fn vocabulary_covers_every_generated_word() {
    let vocab = vocabulary();
    let set: BTreeSet<&str> = vocab.iter().copied().collect();
    assert_eq!(set.len(), vocab.len(), "duplicates in the vocabulary");
    for w in &vocab {
        assert!(
            !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()),
            "{w:?}"
        );
    }
    let mut used = BTreeSet::new();
    for e in eps(300, &SyntheticConfig::default()) {
        for smp in &e.samples {
            assert_eq!(smp.expression, smp.expression.trim());
            for w in smp.expression.split(' ') {
                assert!(
                    set.contains(w),
                    "{w:?} of {:?} not in the vocabulary",
                    smp.expression
                );
                used.insert(w.to_string());
            }
        }
    }
    // And the vocabulary has no dead words.
    let unused: Vec<&&str> = vocab.iter().filter(|w| !used.contains(**w)).collect();
    assert!(unused.is_empty(), "never generated: {unused:?}");
}

#[test]
fn sample_mix_and_disambiguation_rates() {
    let cfg = SyntheticConfig::default();
    let mut count: HashMap<&str, usize> = HashMap::new();
    let (mut obj, mut obj_attr, mut part_attr, mut parts, mut near_miss) = (0, 0, 0, 0, 0);
    let mut total = 0;
    for e in eps(300, &cfg) {
        for smp in &e.samples {
            total += 1;
            let kind = match (smp.is_no_target(), smp.granularity) {
                (true, _) => "none",
                (false, Granularity::Part) => "part",
                (false, Granularity::Object) => "object",
                _ => "multi",
            };
            *count.entry(kind).or_default() += 1;
            if kind == "object" {
                obj += 1;
                obj_attr += usize::from(smp.cue.needs_attribute());
            }
            if kind == "part" {
                parts += 1;
                part_attr += usize::from(smp.cue.needs_attribute());
            }
            if kind == "none" && smp.cue == unires::synthetic::Cue::AbsentColour {
                near_miss += 1;
            }
        }
    }
    let frac = |k: &str| count.get(k).copied().unwrap_or(0) as f64 / total as f64;
    let m = &cfg.mix;
    // Small scenes run out of distinct object/multi queries, so their share sits a little low.
    for (k, want, tol) in [
        ("part", m.part, 0.08),
        ("object", m.object, 0.05),
        ("multi", m.multi, 0.05),
        ("none", m.no_target, 0.02),
    ] {
        assert!(
            (frac(k) - want as f64).abs() < tol,
            "{k}: {:.3} vs {want}",
            frac(k)
        );
    }
    assert!(total >= 300 * cfg.samples_per_scene * 95 / 100);
    assert!(obj_attr as f64 >= 0.4 * obj as f64, "{obj_attr} of {obj}");
    assert!(
        part_attr as f64 >= 0.4 * parts as f64,
        "{part_attr} of {parts}"
    );
    // Near misses ("the green car" next to a red one) are a large share of no-target samples.
    assert!(near_miss as f64 >= 0.3 * count["none"] as f64);
}

// ------------------------------------------------------------------ simulated detector

fn best_iou(gt: &BoxXyxy, props: &[BoxXyxy]) -> f32 {
    props.iter().map(|p| p.iou(gt)).fold(0.0, f32::max)
}

#[test]
fn detector_jitter_miss_and_false_box_statistics() {
    let cfg = SyntheticConfig::default();
    let det = DetectorConfig::default();
    let (mut gt, mut missed, mut ious, mut extra) = (0usize, 0usize, Vec::new(), 0usize);
    let n = 300;
    for i in 0..n {
        let s = scene(SEED, i, &cfg);
        let mut rng = SplitMix64::stream(SEED, &[i, 2]);
        let p = detector_proposals(&s, &mut rng, &det);
        p.validate(s.image.width(), s.image.height()).unwrap();
        assert!(p.objects.len() <= det.max_objects && p.parts.len() <= det.max_parts);
        let gts: Vec<(BoxXyxy, &[BoxXyxy])> = s
            .objects
            .iter()
            .map(|o| (o.bbox, p.objects.as_slice()))
            .chain(
                s.objects
                    .iter()
                    .flat_map(|o| o.parts.iter().map(|q| (q.bbox, p.parts.as_slice()))),
            )
            .collect();
        let mut matched = 0;
        for (b, props) in &gts {
            gt += 1;
            let iou = best_iou(b, props);
            if iou >= 0.6 {
                ious.push(iou);
                matched += 1;
            } else {
                missed += 1;
            }
        }
        extra += (p.objects.len() + p.parts.len()).saturating_sub(matched);
    }
    let miss_rate = missed as f64 / gt as f64;
    assert!(
        (miss_rate - det.miss_rate as f64).abs() < 0.025,
        "miss rate {miss_rate:.3}"
    );
    let mean_iou = ious.iter().map(|&v| v as f64).sum::<f64>() / ious.len() as f64;
    // 3% corner jitter: boxes move, but stay close.
    assert!((0.80..0.97).contains(&mean_iou), "mean IoU {mean_iou:.3}");
    let per_scene = extra as f64 / n as f64;
    // 1–2 false objects and 0–2 false parts: 2.5 on average.
    assert!(
        (1.8..3.2).contains(&per_scene),
        "{per_scene:.2} false boxes per scene"
    );

    // Clean evaluation: nothing is missed.
    for i in 0..60 {
        let s = scene(SEED, i, &cfg);
        let mut rng = SplitMix64::stream(SEED, &[i, 2]);
        let p = detector_proposals(&s, &mut rng, &DetectorConfig::clean());
        for o in &s.objects {
            assert!(best_iou(&o.bbox, &p.objects) >= 0.6);
            for q in &o.parts {
                assert!(best_iou(&q.bbox, &p.parts) >= 0.5);
            }
        }
    }
}
