//! Referring expressions over a scene: structured queries, their text, the referent
//! resolution rules, and the sampler that draws a balanced mix of positive and no-target
//! queries with minimal (unambiguous) descriptions.

use std::collections::HashSet;

use super::catalog::{Class, Colour, PartKind};
use super::{Sample, Scene, SceneObject, SyntheticConfig, Target};
use crate::rng::SplitMix64;
use crate::types::{Granularity, Mask};

/// Positional relations need the referent's box centre to lead every other candidate's by at
/// least this fraction of the image side…
pub const POSITION_MARGIN_FRAC: f32 = 0.1;
/// …and by at least this many pixels.
pub const POSITION_MARGIN_MIN: f32 = 12.0;
/// Size relations need the referent's visible area to differ from every other candidate's by
/// at least this factor.
pub const SIZE_RATIO: f32 = 1.5;

/// A relation that singles out one object among those of its class (and colour).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relation {
    Left,
    Right,
    Top,
    Bottom,
    Biggest,
    Smallest,
}

impl Relation {
    pub const ALL: [Relation; 6] = [
        Relation::Left,
        Relation::Right,
        Relation::Top,
        Relation::Bottom,
        Relation::Biggest,
        Relation::Smallest,
    ];

    /// Words before the class noun ("the biggest mug") or after it ("the mug on the left").
    pub(crate) fn words(self) -> (&'static str, &'static str) {
        match self {
            Relation::Left => ("", "on the left"),
            Relation::Right => ("", "on the right"),
            Relation::Top => ("", "at the top"),
            Relation::Bottom => ("", "at the bottom"),
            Relation::Biggest => ("biggest", ""),
            Relation::Smallest => ("smallest", ""),
        }
    }
}

/// A description of one object: its class, optionally its colour and a relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Description {
    pub class: Class,
    pub colour: Option<Colour>,
    pub relation: Option<Relation>,
}

impl Description {
    fn text(&self) -> String {
        let (pre, post) = self.relation.map_or(("", ""), Relation::words);
        let colour = self.colour.map_or("", Colour::name);
        join(&["the", pre, colour, self.class.name(), post])
    }
}

/// A structured referring query; [`Query::text`] renders it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Query {
    /// "the red car", "the mug on the left".
    Object(Description),
    /// "the roof of the red house".
    Part { part: PartKind, of: Description },
    /// "all houses", "all red objects", "all red cars" (`class: None` means any class).
    All {
        class: Option<Class>,
        colour: Option<Colour>,
    },
    /// "the two cars", "the three red mugs".
    Count {
        n: usize,
        class: Class,
        colour: Option<Colour>,
    },
}

/// Number words usable in [`Query::Count`] (index = count).
pub const COUNT_WORDS: [&str; 4] = ["", "", "two", "three"];

impl Query {
    /// The expression: lowercase words separated by single spaces.
    pub fn text(&self) -> String {
        match self {
            Query::Object(d) => d.text(),
            Query::Part { part, of } => format!("the {} of {}", part.name(), of.text()),
            Query::All { class, colour } => join(&[
                "all",
                colour.map_or("", Colour::name),
                class.map_or("objects", Class::plural),
            ]),
            Query::Count { n, class, colour } => join(&[
                "the",
                COUNT_WORDS.get(*n).copied().unwrap_or(""),
                colour.map_or("", Colour::name),
                class.plural(),
            ]),
        }
    }

    /// The granularity the phrase asks for (also for no-target phrases).
    pub fn granularity(&self) -> Granularity {
        match self {
            Query::Object(_) => Granularity::Object,
            Query::Part { .. } => Granularity::Part,
            Query::All { .. } | Query::Count { .. } => Granularity::MultiObject,
        }
    }
}

/// The non-empty words, separated by single spaces.
pub(crate) fn join(words: &[&str]) -> String {
    words
        .iter()
        .filter(|w| !w.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// How a sample's phrase singles out its referent (or why it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cue {
    /// The class noun alone ("the tree").
    Class,
    /// A colour the class alone would not need ("the red tree" with one tree).
    RedundantColour,
    /// The colour is needed: other objects of the class have other colours.
    Colour,
    /// A relation is needed among objects of the class.
    Relation,
    /// Colour and relation are both needed.
    ColourRelation,
    /// A set of objects (multi-object query).
    Group,
    /// No object of the named class is in the scene.
    AbsentClass,
    /// Objects of the class (or of any class) exist, but none of the named colour.
    AbsentColour,
}

impl Cue {
    /// True for the cues whose phrase needs colour or a relation to find the referent.
    pub fn needs_attribute(self) -> bool {
        matches!(self, Cue::Colour | Cue::Relation | Cue::ColourRelation)
    }
}

/// Outcome of resolving a description against a scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    None,
    One(usize),
    Ambiguous,
}

fn centre(o: &SceneObject) -> (f32, f32) {
    (0.5 * (o.bbox.x1 + o.bbox.x2), 0.5 * (o.bbox.y1 + o.bbox.y2))
}

/// The object among `cands` that `rel` singles out, if it does so with a clear margin.
pub fn apply_relation(scene: &Scene, cands: &[usize], rel: Relation) -> Option<usize> {
    let (w, h) = scene.image.dimensions();
    let key = |k: usize| -> f32 {
        let o = &scene.objects[k];
        let (cx, cy) = centre(o);
        match rel {
            Relation::Left => -cx,
            Relation::Right => cx,
            Relation::Top => -cy,
            Relation::Bottom => cy,
            Relation::Biggest => o.area as f32,
            Relation::Smallest => -(o.area as f32),
        }
    };
    let mut order: Vec<(f32, usize)> = cands.iter().map(|&k| (key(k), k)).collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (best, k) = *order.first()?;
    let Some(&(second, _)) = order.get(1) else {
        return Some(k);
    };
    let clear = match rel {
        Relation::Left | Relation::Right => {
            best - second >= POSITION_MARGIN_MIN.max(POSITION_MARGIN_FRAC * w as f32)
        }
        Relation::Top | Relation::Bottom => {
            best - second >= POSITION_MARGIN_MIN.max(POSITION_MARGIN_FRAC * h as f32)
        }
        Relation::Biggest => best >= SIZE_RATIO * second,
        Relation::Smallest => -second >= SIZE_RATIO * -best,
    };
    clear.then_some(k)
}

/// Which object (if exactly one) a description refers to.
pub fn resolve(scene: &Scene, d: &Description) -> Resolved {
    let cands: Vec<usize> = scene
        .objects
        .iter()
        .enumerate()
        .filter(|(_, o)| o.class == d.class && d.colour.is_none_or(|c| o.colour == c))
        .map(|(k, _)| k)
        .collect();
    match (cands.len(), d.relation) {
        (0, _) => Resolved::None,
        (1, None) => Resolved::One(cands[0]),
        (_, None) => Resolved::Ambiguous,
        (_, Some(rel)) => {
            apply_relation(scene, &cands, rel).map_or(Resolved::Ambiguous, Resolved::One)
        }
    }
}

/// The objects a multi-object query covers.
pub fn group(scene: &Scene, class: Option<Class>, colour: Option<Colour>) -> Vec<usize> {
    scene
        .objects
        .iter()
        .enumerate()
        .filter(|(_, o)| class.is_none_or(|c| o.class == c) && colour.is_none_or(|c| o.colour == c))
        .map(|(k, _)| k)
        .collect()
}

/// The minimal description of object `k` (class; else colour; else a relation among the
/// class; else colour and relation), or `None` when nothing in the vocabulary singles it out.
/// With probability `redundant_colour_prob` a class-unique object also gets its colour.
pub fn describe(
    scene: &Scene,
    k: usize,
    rng: &mut SplitMix64,
    cfg: &SyntheticConfig,
) -> Option<(Description, Cue)> {
    let o = scene.objects.get(k)?;
    let plain = Description {
        class: o.class,
        colour: None,
        relation: None,
    };
    let siblings = group(scene, Some(o.class), None);
    if siblings.len() == 1 {
        return Some(if rng.chance(cfg.redundant_colour_prob) {
            (
                Description {
                    colour: Some(o.colour),
                    ..plain
                },
                Cue::RedundantColour,
            )
        } else {
            (plain, Cue::Class)
        });
    }
    let coloured = Description {
        colour: Some(o.colour),
        ..plain
    };
    if resolve(scene, &coloured) == Resolved::One(k) {
        return Some((coloured, Cue::Colour));
    }
    for (base, cue) in [(plain, Cue::Relation), (coloured, Cue::ColourRelation)] {
        let valid: Vec<Description> = Relation::ALL
            .iter()
            .map(|&r| Description {
                relation: Some(r),
                ..base
            })
            .filter(|d| resolve(scene, d) == Resolved::One(k))
            .collect();
        if let Some(&d) = rng.pick(&valid) {
            return Some((d, cue));
        }
    }
    None
}

/// The four kinds of sample the mix is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Part,
    Object,
    Multi,
    NoTarget,
}

fn object_target(scene: &Scene, k: usize, part: Option<usize>) -> Option<Target> {
    let o = scene.objects.get(k)?;
    let (mask, bbox) = match part {
        Some(p) => {
            let part = o.parts.get(p)?;
            (part.mask.clone(), part.bbox)
        }
        None => (o.mask.clone(), o.bbox),
    };
    Some(Target {
        object: k,
        part,
        mask,
        bbox,
    })
}

fn union(scene: &Scene, targets: &[Target]) -> Mask {
    let (w, h) = scene.image.dimensions();
    let mut m = Mask::zeros(h as usize, w as usize);
    for t in targets {
        // Every target mask has the scene's size, so this cannot fail.
        let _ = m.union_with(&t.mask);
    }
    m
}

/// Picks the object a positive object/part query is about: with probability
/// `sibling_target_prob` one that shares its class with another object.
fn pick_referent<T>(
    scene: &Scene,
    rng: &mut SplitMix64,
    cfg: &SyntheticConfig,
    mut take: impl FnMut(usize, Description, Cue, &mut SplitMix64) -> Option<T>,
) -> Option<T> {
    let n = scene.objects.len();
    let with_siblings: Vec<usize> = (0..n)
        .filter(|&k| group(scene, Some(scene.objects[k].class), None).len() > 1)
        .collect();
    let pool: Vec<usize> = if !with_siblings.is_empty() && rng.chance(cfg.sibling_target_prob) {
        with_siblings
    } else {
        (0..n).collect()
    };
    let mut order = pool;
    rng.shuffle(&mut order);
    order.into_iter().find_map(|k| {
        let (d, c) = describe(scene, k, rng, cfg)?;
        take(k, d, c, rng)
    })
}

fn positive_multi(
    scene: &Scene,
    rng: &mut SplitMix64,
    seen: &HashSet<String>,
) -> Option<(Query, Vec<usize>)> {
    let mut options: Vec<(Query, Vec<usize>)> = Vec::new();
    for class in Class::ALL {
        let all = group(scene, Some(class), None);
        if all.len() >= 2 {
            options.push((
                Query::All {
                    class: Some(class),
                    colour: None,
                },
                all.clone(),
            ));
        }
        if (2..COUNT_WORDS.len()).contains(&all.len()) {
            options.push((
                Query::Count {
                    n: all.len(),
                    class,
                    colour: None,
                },
                all.clone(),
            ));
        }
        for colour in Colour::ALL {
            let sub = group(scene, Some(class), Some(colour));
            if sub.len() >= 2 && sub.len() < all.len() {
                if sub.len() < COUNT_WORDS.len() && rng.chance(0.5) {
                    let q = Query::Count {
                        n: sub.len(),
                        class,
                        colour: Some(colour),
                    };
                    options.push((q, sub.clone()));
                }
                options.push((
                    Query::All {
                        class: Some(class),
                        colour: Some(colour),
                    },
                    sub,
                ));
            }
        }
    }
    for colour in Colour::ALL {
        let all = group(scene, None, Some(colour));
        let classes: HashSet<Class> = all.iter().map(|&k| scene.objects[k].class).collect();
        if all.len() >= 2 && classes.len() >= 2 {
            options.push((
                Query::All {
                    class: None,
                    colour: Some(colour),
                },
                all,
            ));
        }
    }
    options.retain(|(q, _)| !seen.contains(&q.text()));
    let i = rng.below(options.len());
    (!options.is_empty()).then(|| options.swap_remove(i))
}

/// A description that matches nothing in the scene: a present class with an absent colour
/// (a near miss), or an absent class.
fn absent_description(scene: &Scene, rng: &mut SplitMix64) -> Option<(Description, Cue)> {
    let present: Vec<Class> = Class::ALL
        .into_iter()
        .filter(|&c| !group(scene, Some(c), None).is_empty())
        .collect();
    let absent: Vec<Class> = Class::ALL
        .into_iter()
        .filter(|c| !present.contains(c))
        .collect();
    let scene_colours: Vec<Colour> = scene.objects.iter().map(|o| o.colour).collect();
    let near_miss = !present.is_empty() && (absent.is_empty() || rng.chance(0.55));
    if near_miss {
        let class = *rng.pick(&present)?;
        let missing: Vec<Colour> = Colour::ALL
            .into_iter()
            .filter(|&c| group(scene, Some(class), Some(c)).is_empty())
            .collect();
        // Prefer a colour some other object has: the phrase then matches *something* in part.
        let elsewhere: Vec<Colour> = missing
            .iter()
            .copied()
            .filter(|c| scene_colours.contains(c))
            .collect();
        let colour = if !elsewhere.is_empty() && rng.chance(0.5) {
            *rng.pick(&elsewhere)?
        } else {
            *rng.pick(&missing)?
        };
        return Some((
            Description {
                class,
                colour: Some(colour),
                relation: None,
            },
            Cue::AbsentColour,
        ));
    }
    let class = *rng.pick(&absent)?;
    let colour = if rng.chance(0.5) {
        rng.pick(&scene_colours).copied()
    } else {
        None
    };
    Some((
        Description {
            class,
            colour,
            relation: None,
        },
        Cue::AbsentClass,
    ))
}

fn negative(scene: &Scene, rng: &mut SplitMix64, cfg: &SyntheticConfig) -> Option<(Query, Cue)> {
    let g = rng.weighted(&[cfg.mix.part, cfg.mix.object, cfg.mix.multi])?;
    match g {
        0 => {
            let (d, cue) = absent_description(scene, rng)?;
            let part = *rng.pick(d.class.parts())?;
            Some((Query::Part { part, of: d }, cue))
        }
        1 => absent_description(scene, rng).map(|(d, cue)| (Query::Object(d), cue)),
        _ => {
            let (d, cue) = absent_description(scene, rng)?;
            let colour_only = cue == Cue::AbsentColour && rng.chance(0.3);
            let colour_absent_everywhere = d
                .colour
                .is_some_and(|c| group(scene, None, Some(c)).is_empty());
            if colour_only && colour_absent_everywhere {
                Some((
                    Query::All {
                        class: None,
                        colour: d.colour,
                    },
                    Cue::AbsentColour,
                ))
            } else {
                Some((
                    Query::All {
                        class: Some(d.class),
                        colour: d.colour,
                    },
                    cue,
                ))
            }
        }
    }
}

/// One sample of `kind` whose expression is not in `seen`: its query, cue, targets and
/// target union mask.
fn draw(
    kind: Kind,
    scene: &Scene,
    rng: &mut SplitMix64,
    cfg: &SyntheticConfig,
    seen: &HashSet<String>,
) -> Option<(Query, Cue, Vec<Target>, Mask)> {
    let (q, cue, targets) = draw_targets(kind, scene, rng, cfg, seen)?;
    let mask = union(scene, &targets);
    Some((q, cue, targets, mask))
}

fn draw_targets(
    kind: Kind,
    scene: &Scene,
    rng: &mut SplitMix64,
    cfg: &SyntheticConfig,
    seen: &HashSet<String>,
) -> Option<(Query, Cue, Vec<Target>)> {
    match kind {
        Kind::Object => pick_referent(scene, rng, cfg, |k, d, cue, _| {
            let q = Query::Object(d);
            if seen.contains(&q.text()) {
                return None;
            }
            Some((q, cue, vec![object_target(scene, k, None)?]))
        }),
        Kind::Part => pick_referent(scene, rng, cfg, |k, d, cue, rng| {
            let parts = scene.objects.get(k)?.class.parts();
            let fresh: Vec<usize> = (0..parts.len())
                .filter(|&p| {
                    !seen.contains(
                        &Query::Part {
                            part: parts[p],
                            of: d,
                        }
                        .text(),
                    )
                })
                .collect();
            let p = *rng.pick(&fresh)?;
            let q = Query::Part {
                part: parts[p],
                of: d,
            };
            Some((q, cue, vec![object_target(scene, k, Some(p))?]))
        }),
        Kind::Multi => {
            let (q, ks) = positive_multi(scene, rng, seen)?;
            let targets = ks
                .iter()
                .filter_map(|&k| object_target(scene, k, None))
                .collect();
            Some((q, Cue::Group, targets))
        }
        Kind::NoTarget => negative(scene, rng, cfg).map(|(q, cue)| (q, cue, Vec::new())),
    }
}

/// Draws up to `n` distinct samples from `scene`: positive kinds in the proportions of
/// `cfg.mix` (a kind the scene cannot supply, e.g. multi-object with no repeated class or
/// colour, is redrawn), then no-target samples in proportion to the positives drawn, so that
/// their share stays `cfg.mix.no_target` however many positives a small scene allows.
/// The samples come out shuffled.
pub fn draw_samples(
    scene: &Scene,
    rng: &mut SplitMix64,
    n: usize,
    cfg: &SyntheticConfig,
) -> Vec<Sample> {
    let m = &cfg.mix;
    let total = (m.part + m.object + m.multi + m.no_target).max(f32::MIN_POSITIVE);
    let neg_share = (m.no_target / total).clamp(0.0, 1.0);
    let n_neg = stochastic_round(n as f32 * neg_share, rng).min(n);
    let n_pos = n - n_neg;
    let mut out = Vec::with_capacity(n);
    let mut seen = HashSet::new();
    let positive = [Kind::Part, Kind::Object, Kind::Multi];
    let mut weights = [m.part, m.object, m.multi];
    let mut failures = [0usize; 3];
    let mut budget = 8 * n + 8;
    while out.len() < n_pos && budget > 0 {
        budget -= 1;
        let Some(i) = rng.weighted(&weights) else {
            break;
        };
        let drawn = draw(positive[i], scene, rng, cfg, &seen);
        if !push(&mut out, &mut seen, drawn) {
            failures[i] += 1;
            if failures[i] >= 4 {
                weights[i] = 0.0;
            }
        }
    }
    // With fewer positives than planned, fewer no-target samples keep their share.
    let want = if out.len() < n_pos && neg_share < 1.0 {
        n_neg.min(stochastic_round(
            out.len() as f32 * neg_share / (1.0 - neg_share),
            rng,
        ))
    } else {
        n_neg
    };
    let mut added = 0;
    let mut tries = 4 * want + 4;
    while added < want && tries > 0 {
        tries -= 1;
        let drawn = draw(Kind::NoTarget, scene, rng, cfg, &seen);
        if push(&mut out, &mut seen, drawn) {
            added += 1;
        }
    }
    rng.shuffle(&mut out);
    out
}

/// `x` rounded down or up with probabilities that make the expectation `x`.
fn stochastic_round(x: f32, rng: &mut SplitMix64) -> usize {
    let floor = x.max(0.0).floor();
    floor as usize + usize::from(rng.chance(x - floor))
}

/// Appends a drawn sample unless it failed or its expression was already used.
fn push(
    out: &mut Vec<Sample>,
    seen: &mut HashSet<String>,
    drawn: Option<(Query, Cue, Vec<Target>, Mask)>,
) -> bool {
    let Some((query, cue, targets, mask)) = drawn else {
        return false;
    };
    let expression = query.text();
    if !seen.insert(expression.clone()) {
        return false;
    }
    out.push(Sample {
        expression,
        query,
        granularity: query.granularity(),
        mask: (!targets.is_empty()).then_some(mask),
        targets,
        cue,
    });
    true
}
