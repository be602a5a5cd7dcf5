//! Proposals "as a detector would give them": ground-truth object and part boxes with
//! coordinate jitter, occasional misses, merged neighbours and a few false boxes, shuffled and
//! capped; and [`ProposalMode`], the three ways a synthetic scene gets its proposals.

use std::fmt;
use std::str::FromStr;

use super::Scene;
use crate::error::{Error, Result};
use crate::proposals::SelectiveSearch;
use crate::rng::SplitMix64;
use crate::types::{BoxXyxy, ProposalSource, Proposals};

/// How the simulated detector errs.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorConfig {
    /// Standard deviation of each corner's offset, as a fraction of the box's width/height.
    pub jitter: f32,
    /// Probability that a ground-truth object or part gets no box (0 for clean evaluation).
    pub miss_rate: f32,
    /// Inclusive range of false object boxes per scene.
    pub false_objects: (usize, usize),
    /// Inclusive range of false part boxes per scene.
    pub false_parts: (usize, usize),
    /// At most this many object boxes are returned.
    pub max_objects: usize,
    /// At most this many part boxes are returned.
    pub max_parts: usize,
    /// Probability that an object's box is merged with its nearest neighbour's (one box
    /// around both, as a detector gives for two touching objects; 0 = never).
    pub merge_rate: f32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            jitter: 0.03,
            miss_rate: 0.05,
            false_objects: (1, 2),
            false_parts: (0, 2),
            max_objects: 16,
            max_parts: 32,
            merge_rate: 0.0,
        }
    }
}

impl DetectorConfig {
    /// No misses (jitter and false boxes stay): for evaluation.
    pub fn clean() -> Self {
        Self {
            miss_rate: 0.0,
            ..Self::default()
        }
    }

    /// A detector as real ones err: 15 % of objects and parts missed, corners jittered by
    /// σ 8 % of the side, 2–4 false object and 1–3 false part boxes, and one object in ten
    /// merged with its nearest neighbour.
    pub fn noisy() -> Self {
        Self {
            jitter: 0.08,
            miss_rate: 0.15,
            false_objects: (2, 4),
            false_parts: (1, 3),
            merge_rate: 0.1,
            ..Self::default()
        }
    }
}

/// Clamps a box into a `w × h` image keeping it at least one pixel wide and high.
fn clamp_box(x1: f32, y1: f32, x2: f32, y2: f32, w: f32, h: f32) -> BoxXyxy {
    // `max`/`min` rather than `clamp`: they never panic, and map NaN to a bound.
    let x1 = x1.max(0.0).min((w - 1.0).max(0.0));
    let y1 = y1.max(0.0).min((h - 1.0).max(0.0));
    let x2 = x2.min(w).max(x1 + 1.0);
    let y2 = y2.min(h).max(y1 + 1.0);
    BoxXyxy::new(x1, y1, x2, y2)
}

fn jittered(b: &BoxXyxy, rng: &mut SplitMix64, jitter: f32, w: f32, h: f32) -> BoxXyxy {
    let jitter = if jitter.is_finite() {
        jitter.max(0.0)
    } else {
        0.0
    };
    let (bw, bh) = (b.width(), b.height());
    let mut d = || rng.normalish() * jitter;
    let (dx1, dy1, dx2, dy2) = (d() * bw, d() * bh, d() * bw, d() * bh);
    clamp_box(b.x1 + dx1, b.y1 + dy1, b.x2 + dx2, b.y2 + dy2, w, h)
}

fn random_box(rng: &mut SplitMix64, lo: f32, hi: f32, w: f32, h: f32) -> BoxXyxy {
    let hi = hi.max(lo);
    let bw = rng.uniform(lo, hi).min(w);
    let bh = rng.uniform(lo, hi).min(h);
    let x1 = rng.uniform(0.0, (w - bw).max(0.0));
    let y1 = rng.uniform(0.0, (h - bh).max(0.0));
    clamp_box(x1, y1, x1 + bw, y1 + bh, w, h)
}

/// The index of the object nearest to object `i` (box centres) among those not yet `used`,
/// when it is within one mean box side.
fn nearest_neighbour(scene: &Scene, i: usize, used: &[bool]) -> Option<usize> {
    let centre = |b: &BoxXyxy| ((b.x1 + b.x2) * 0.5, (b.y1 + b.y2) * 0.5);
    let a = &scene.objects.get(i)?.bbox;
    let (ax, ay) = centre(a);
    let mut best: Option<(usize, f32)> = None;
    for (j, o) in scene.objects.iter().enumerate() {
        if j == i || used.get(j).copied().unwrap_or(true) {
            continue;
        }
        let (bx, by) = centre(&o.bbox);
        let d = ((ax - bx).powi(2) + (ay - by).powi(2)).sqrt();
        let reach = (a.width() + a.height() + o.bbox.width() + o.bbox.height()) * 0.25;
        if d <= reach && best.is_none_or(|(_, bd)| d < bd) {
            best = Some((j, d));
        }
    }
    best.map(|(j, _)| j)
}

/// Simulated detector output for `scene`.
pub fn detector_proposals(scene: &Scene, rng: &mut SplitMix64, cfg: &DetectorConfig) -> Proposals {
    let (w, h) = (scene.image.width() as f32, scene.image.height() as f32);
    let mut objects = Vec::new();
    let mut parts = Vec::new();
    // Merged pairs first (no draws at all when merging is off, so that the streams of the
    // other configurations are unchanged): one box around both, and neither gets its own.
    let mut merged = vec![false; scene.objects.len()];
    if cfg.merge_rate > 0.0 {
        for i in 0..scene.objects.len() {
            if merged[i] || !rng.chance(cfg.merge_rate) {
                continue;
            }
            if let Some(j) = nearest_neighbour(scene, i, &merged) {
                merged[i] = true;
                merged[j] = true;
                let (a, b) = (&scene.objects[i].bbox, &scene.objects[j].bbox);
                let union = BoxXyxy::new(
                    a.x1.min(b.x1),
                    a.y1.min(b.y1),
                    a.x2.max(b.x2),
                    a.y2.max(b.y2),
                );
                objects.push(jittered(&union, rng, cfg.jitter, w, h));
            }
        }
    }
    for (o, &was_merged) in scene.objects.iter().zip(&merged) {
        if !was_merged && !rng.chance(cfg.miss_rate) {
            objects.push(jittered(&o.bbox, rng, cfg.jitter, w, h));
        }
        for p in &o.parts {
            if !rng.chance(cfg.miss_rate) {
                parts.push(jittered(&p.bbox, rng, cfg.jitter, w, h));
            }
        }
    }
    for _ in 0..rng.range_incl(cfg.false_objects.0, cfg.false_objects.1) {
        objects.push(random_box(rng, 20.0, 64.0, w, h));
    }
    for _ in 0..rng.range_incl(cfg.false_parts.0, cfg.false_parts.1) {
        parts.push(random_box(rng, 8.0, 28.0, w, h));
    }
    rng.shuffle(&mut objects);
    rng.shuffle(&mut parts);
    objects.truncate(cfg.max_objects);
    parts.truncate(cfg.max_parts);
    Proposals::new(objects, parts)
}

/// Where the proposals of a synthetic scene come from (`unires eval --dataset synthetic
/// --proposals …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProposalMode {
    /// The simulated detector of the configuration (for evaluation: no misses, σ 3 % jitter,
    /// a few false boxes): nearly the ground truth.
    #[default]
    Simulated,
    /// [`DetectorConfig::noisy`]: misses, σ 8 % jitter, false and merged boxes.
    Noisy,
    /// The crate's own generator ([`SelectiveSearch`]), which knows nothing of the scene.
    Builtin,
}

impl ProposalMode {
    /// Every mode, in table order.
    pub const ALL: [ProposalMode; 3] = [
        ProposalMode::Simulated,
        ProposalMode::Noisy,
        ProposalMode::Builtin,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ProposalMode::Simulated => "simulated",
            ProposalMode::Noisy => "noisy",
            ProposalMode::Builtin => "builtin",
        }
    }

    /// The proposals of `scene`: `simulated` runs `detector` (the configuration's simulated
    /// detector), `noisy` [`DetectorConfig::noisy`] with the same caps, both on `rng`;
    /// `builtin` ignores both.
    pub fn propose(
        self,
        scene: &Scene,
        rng: &mut SplitMix64,
        detector: &DetectorConfig,
    ) -> Result<Proposals> {
        match self {
            ProposalMode::Simulated => Ok(detector_proposals(scene, rng, detector)),
            ProposalMode::Noisy => {
                let noisy = DetectorConfig {
                    max_objects: detector.max_objects,
                    max_parts: detector.max_parts,
                    ..DetectorConfig::noisy()
                };
                Ok(detector_proposals(scene, rng, &noisy))
            }
            ProposalMode::Builtin => SelectiveSearch::default().propose(&scene.image),
        }
    }
}

impl fmt::Display for ProposalMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProposalMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        ProposalMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| Error::Config {
                what: "proposals".into(),
                reason: format!("`{s}` is not one of simulated, noisy, builtin"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{scene, SyntheticConfig};

    #[test]
    fn noisy_detector_misses_merges_and_adds_false_boxes() {
        let cfg = SyntheticConfig::default();
        let (mut missed, mut total, mut merged_scenes) = (0usize, 0usize, 0usize);
        for i in 0..200 {
            let s = scene(77, i, &cfg);
            let mut rng = SplitMix64::stream(77, &[i, 2]);
            let p = detector_proposals(&s, &mut rng, &DetectorConfig::noisy());
            // Count ground-truth boxes with no proposal of IoU >= 0.5.
            let hit = |b: &BoxXyxy, list: &[BoxXyxy]| list.iter().any(|q| q.iou(b) >= 0.5);
            for o in &s.objects {
                total += 1;
                missed += usize::from(!hit(&o.bbox, &p.objects));
                for part in &o.parts {
                    total += 1;
                    missed += usize::from(!hit(&part.bbox, &p.parts));
                }
            }
            // A merged box covers two objects' centres.
            let covers = |b: &BoxXyxy| {
                s.objects
                    .iter()
                    .filter(|o| {
                        let (cx, cy) =
                            ((o.bbox.x1 + o.bbox.x2) / 2.0, (o.bbox.y1 + o.bbox.y2) / 2.0);
                        cx > b.x1 && cx < b.x2 && cy > b.y1 && cy < b.y2
                    })
                    .count()
            };
            merged_scenes += usize::from(p.objects.iter().any(|b| covers(b) >= 2));
            assert!(
                p.objects.len() + p.parts.len() >= 3,
                "false boxes are always added"
            );
        }
        let rate = missed as f64 / total as f64;
        // 15 % misses plus what σ 8 % jitter and merges push under IoU 0.5.
        assert!((0.12..0.45).contains(&rate), "missed {rate:.3} of {total}");
        assert!(
            merged_scenes >= 10,
            "only {merged_scenes} scenes with a merged box"
        );
    }

    #[test]
    fn modes_parse_by_name() {
        for m in ProposalMode::ALL {
            assert_eq!(m.name().parse::<ProposalMode>().ok(), Some(m));
        }
        assert!("detector".parse::<ProposalMode>().is_err());
    }
}
