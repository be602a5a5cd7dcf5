//! A procedurally generated multi-granularity referring segmentation benchmark (the data the
//! `tiny` preset is trained and evaluated on), in the spirit of CLEVR-Ref+ / RefCOCOm / gRefCOCO:
//! part, object, multi-object and no-target expressions with exact ground-truth masks.
//!
//! # Scenes
//! A scene ([`scene`]) is a small RGB image (160×128 by default; 128×160 and 144×144 with
//! [`SyntheticConfig::mixed_sizes`]) with a low-contrast textured background (value noise,
//! stripes, gradient or checkerboard in one of six muted palettes) and 2–6 objects of five
//! classes, each made of named parts:
//!
//! | class | parts | colour on |
//! |---|---|---|
//! | house | walls, roof, door | walls |
//! | tree | trunk, crown | crown |
//! | car | body, window, wheels (two discs, one part) | body |
//! | mug | body, handle (a thick "C") | body |
//! | boat | sail, hull | hull |
//!
//! The main part has one of six named colours (red, green, blue, yellow, purple, orange),
//! jittered per object, shaded top to bottom and with pixel noise; other parts get plausible
//! unsaturated colours (the mug's handle a darker shade of its body). Objects are 34–72 px and
//! mirrored half of the time. Later objects occlude earlier ones, but a placement is rejected
//! when it would hide more than `max_occlusion` of an earlier object, more than half of any
//! part, or shrink a part's visible box below 6 px, so every part of every object stays
//! visible and learnable at stride 4 of a 128-px input. All masks are visible pixels; an
//! object's mask is the disjoint union of its parts'. Half of the scenes are planned with one
//! class repeated, and a repeated object shares its sibling's colour 30% of the time, so that
//! colour or a relation is often what tells two objects apart.
//!
//! # Expressions
//! [`samples`] draws template expressions over the fixed word list [`vocabulary`]:
//! * object: `the [biggest|smallest] [colour] class [on the left|on the right|at the top|at the bottom]`,
//! * part: `the <part> of <object description>`,
//! * multi-object: `all plural`, `all colour plural`, `all colour objects`, `the two|three [colour] plural`,
//! * no-target: the same forms naming a class that is absent, or a colour no object of the
//!   class has (a near miss: "the green car" next to a red car).
//!
//! Descriptions are minimal: the class alone when it is unique, else the colour, else a
//! relation among the objects of that class (positions need a margin of 10% of the image side,
//! sizes a factor of 1.5), else colour and relation, else the object is not asked about. A
//! class-unique object is sometimes described with its (redundant) colour so that "colour with a
//! single object" does not become a shortcut for "no target".
//!
//! # Statistics (1000 scenes of seed 9 000 000, mixed sizes, 8 samples each; `cargo run
//! --release --example make_scenes -- --stats 1000`)
//! * Objects per scene 2–6, about uniform (mean 4.0); classes 19–21% each, colours 16–17.5%
//!   each; 32% of objects are partly occluded; 85% of scenes repeat a class, 37% repeat a
//!   class *and* colour.
//! * Samples: part 33.4%, object 34.7%, multi-object 17.0%, no-target 14.9% (small scenes run
//!   out of distinct object and multi-object phrases, so those come out slightly under the
//!   configured 35% / 20%).
//! * Object queries: class alone 25.6%, redundant colour 12.7%, colour needed 39.1%, relation
//!   needed 21.2%, both 1.3%, so 61.7% need colour or a relation (part queries: 67.1%).
//! * Multi-object targets: 2 instances 77%, 3: 19%, 4–5: 4%. No-target: 55% near misses
//!   (the class is present in another colour), 45% absent class; their phrases are object 41%,
//!   part 36%, multi-object 23%.
//! * Speed (release, one core): a 160×128 scene 1.2 ms, its 8 samples 0.16 ms
//!   (`make_scenes -- --bench 300`).
//!
//! # Determinism
//! Everything comes from the crate's SplitMix64 generator ([`crate::rng`]) using only
//! IEEE-exact arithmetic: scene `i` of seed `S` is a function of `hash(S, i)` alone, identical
//! on every platform and independent across seeds and indices. Samples and detector proposals
//! of an [`episode`] use their own streams of the same hash.

pub mod catalog;
pub mod detector;
pub mod phrasing;
pub mod query;
pub mod render;

use image::RgbImage;

pub use crate::rng::SplitMix64;
pub use catalog::{Class, Colour, PartKind};
pub use detector::{detector_proposals, DetectorConfig, ProposalMode};
pub use phrasing::{heldout_text, perturb, Phrasing};
pub use query::{Cue, Description, Query, Relation};
pub use render::Background;

use crate::types::{BoxXyxy, Granularity, Mask, Proposals};

/// Proportions of the sample kinds ([`samples`] normalises them).
#[derive(Debug, Clone, PartialEq)]
pub struct SampleMix {
    pub part: f32,
    pub object: f32,
    pub multi: f32,
    pub no_target: f32,
}

impl Default for SampleMix {
    fn default() -> Self {
        Self {
            part: 0.30,
            object: 0.35,
            multi: 0.20,
            no_target: 0.15,
        }
    }
}

/// Everything that shapes the benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    /// Image sizes `(width, height)`; each scene picks one uniformly.
    pub sizes: Vec<(u32, u32)>,
    /// Objects per scene, inclusive range (fewer when they do not fit).
    pub min_objects: usize,
    pub max_objects: usize,
    /// Probability that a scene is planned with one class repeated (2 or 3 times).
    pub duplicate_prob: f32,
    /// Probability that a repeated object shares its sibling's colour.
    pub same_colour_prob: f32,
    /// Probability that an object may be placed overlapping earlier ones.
    pub overlap_prob: f32,
    /// The largest fraction of an earlier object that a later one may hide.
    pub max_occlusion: f32,
    /// Sample kind proportions.
    pub mix: SampleMix,
    /// Probability that a positive object/part query is about an object whose class repeats.
    pub sibling_target_prob: f32,
    /// Probability that a class-unique object is described with its colour anyway.
    pub redundant_colour_prob: f32,
    /// Samples per scene in [`episode`].
    pub samples_per_scene: usize,
    /// The simulated detector of [`episode`].
    pub detector: DetectorConfig,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            sizes: vec![(160, 128)],
            min_objects: 2,
            max_objects: 6,
            duplicate_prob: 0.5,
            same_colour_prob: 0.3,
            overlap_prob: 0.35,
            max_occlusion: 0.35,
            mix: SampleMix::default(),
            sibling_target_prob: 0.3,
            redundant_colour_prob: 0.3,
            samples_per_scene: 8,
            detector: DetectorConfig::default(),
        }
    }
}

impl SyntheticConfig {
    /// The default with images of 160×128, 128×160 and 144×144 (aspect variation).
    pub fn mixed_sizes() -> Self {
        Self {
            sizes: vec![(160, 128), (128, 160), (144, 144)],
            ..Self::default()
        }
    }

    /// The default with a clean detector (no misses): for evaluation.
    pub fn eval() -> Self {
        Self {
            detector: DetectorConfig::clean(),
            ..Self::default()
        }
    }
}

/// One visible part of a scene object.
#[derive(Debug, Clone)]
pub struct ScenePart {
    pub kind: PartKind,
    /// Visible pixels.
    pub mask: Mask,
    /// Tight box of the visible pixels.
    pub bbox: BoxXyxy,
    /// Number of visible pixels.
    pub area: u64,
}

/// One object of a scene.
#[derive(Debug, Clone)]
pub struct SceneObject {
    pub class: Class,
    /// The named colour of its main part.
    pub colour: Colour,
    /// The size parameter it was drawn with, in pixels.
    pub size: f32,
    /// Visible pixels (the union of its parts' masks).
    pub mask: Mask,
    pub bbox: BoxXyxy,
    /// Number of visible pixels.
    pub area: u64,
    /// Number of pixels it would cover unoccluded.
    pub amodal_area: u64,
    /// Its parts, in [`Class::parts`] order.
    pub parts: Vec<ScenePart>,
}

/// A rendered scene and its ground truth; objects are in drawing order (later on top).
#[derive(Debug, Clone)]
pub struct Scene {
    pub seed: u64,
    pub index: u64,
    pub image: RgbImage,
    pub objects: Vec<SceneObject>,
    pub background: Background,
}

/// One referent of a sample: an object, or a part of one.
#[derive(Debug, Clone)]
pub struct Target {
    /// Index into [`Scene::objects`].
    pub object: usize,
    /// Index into that object's parts for part queries.
    pub part: Option<usize>,
    pub mask: Mask,
    pub bbox: BoxXyxy,
}

/// A referring expression with its ground truth.
#[derive(Debug, Clone)]
pub struct Sample {
    pub expression: String,
    /// The structured form the expression was rendered from.
    pub query: Query,
    /// The granularity the phrase asks for (also for no-target samples).
    pub granularity: Granularity,
    /// Union of the targets' masks; `None` when nothing matches.
    pub mask: Option<Mask>,
    /// One entry per referent (several for multi-object queries, none for no-target ones).
    pub targets: Vec<Target>,
    /// How the phrase singles out its referent.
    pub cue: Cue,
}

impl Sample {
    /// True when the expression refers to nothing in the scene.
    pub fn is_no_target(&self) -> bool {
        self.targets.is_empty()
    }
}

/// Scene `index` of `seed`.
pub fn scene(seed: u64, index: u64, cfg: &SyntheticConfig) -> Scene {
    render::build_scene(seed, index, cfg)
}

/// Up to `n` distinct samples of `scene` in the proportions of `cfg.mix`.
pub fn samples(
    scene: &Scene,
    rng: &mut SplitMix64,
    n: usize,
    cfg: &SyntheticConfig,
) -> Vec<Sample> {
    query::draw_samples(scene, rng, n, cfg)
}

/// A scene with its samples and simulated detector proposals.
#[derive(Debug, Clone)]
pub struct Episode {
    pub scene: Scene,
    pub samples: Vec<Sample>,
    pub proposals: Proposals,
}

/// Episode `index` of `seed`: the scene, `cfg.samples_per_scene` samples and detector
/// proposals, each from its own stream of `hash(seed, index)`.
pub fn episode(seed: u64, index: u64, cfg: &SyntheticConfig) -> Episode {
    let scene = scene(seed, index, cfg);
    let mut srng = SplitMix64::stream(seed, &[index, 1]);
    let samples = samples(&scene, &mut srng, cfg.samples_per_scene, cfg);
    let mut prng = SplitMix64::stream(seed, &[index, 2]);
    let proposals = detector_proposals(&scene, &mut prng, &cfg.detector);
    Episode {
        scene,
        samples,
        proposals,
    }
}

/// An endless iterator over the episodes `0, 1, 2, …` of a seed (use `.take(n)`).
#[derive(Debug, Clone)]
pub struct Episodes {
    seed: u64,
    next: u64,
    cfg: SyntheticConfig,
}

impl Iterator for Episodes {
    type Item = Episode;

    fn next(&mut self) -> Option<Episode> {
        let e = episode(self.seed, self.next, &self.cfg);
        self.next += 1;
        Some(e)
    }
}

/// The episodes of `seed`, starting at index 0.
pub fn episodes(seed: u64, cfg: &SyntheticConfig) -> Episodes {
    Episodes {
        seed,
        next: 0,
        cfg: cfg.clone(),
    }
}

/// Every word an expression can contain (lowercase, sorted, no duplicates).
pub fn vocabulary() -> Vec<&'static str> {
    let mut words: Vec<&'static str> = vec![
        "the", "of", "on", "at", "all", "objects", "left", "right", "top", "bottom", "biggest",
        "smallest",
    ];
    words.extend(query::COUNT_WORDS.iter().filter(|w| !w.is_empty()));
    for c in Class::ALL {
        words.push(c.name());
        words.push(c.plural());
    }
    words.extend(PartKind::ALL.iter().map(|p| p.name()));
    words.extend(Colour::ALL.iter().map(|c| c.name()));
    words.sort_unstable();
    words.dedup();
    words
}
