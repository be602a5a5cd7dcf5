//! Proposals "as a detector would give them": ground-truth object and part boxes with
//! coordinate jitter, occasional misses and a few false boxes, shuffled and capped.

use super::Scene;
use crate::rng::SplitMix64;
use crate::types::{BoxXyxy, Proposals};

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

/// Simulated detector output for `scene`.
pub fn detector_proposals(scene: &Scene, rng: &mut SplitMix64, cfg: &DetectorConfig) -> Proposals {
    let (w, h) = (scene.image.width() as f32, scene.image.height() as f32);
    let mut objects = Vec::new();
    let mut parts = Vec::new();
    for o in &scene.objects {
        if !rng.chance(cfg.miss_rate) {
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
