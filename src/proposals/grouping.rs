//! Hierarchical grouping of the initial regions under Selective Search's diversified
//! similarities (colour histogram, size, fill), and the greedy NMS of the candidate boxes.

use std::collections::BTreeMap;

use crate::types::BoxXyxy;

/// A group of regions in the hierarchy.
#[derive(Debug, Clone)]
pub(super) struct Group {
    pub(super) size: u32,
    pub(super) bbox: [u32; 4],
    pub(super) hist: Vec<f32>,
    pub(super) perimeter: u32,
    /// Outline length bordering background regions or the image border.
    pub(super) open: u32,
}

impl Group {
    /// Fraction of the outline that borders background or the image border.
    pub(super) fn closure(&self) -> f32 {
        self.open as f32 / self.perimeter.max(1) as f32
    }

    /// The union of two groups sharing `shared` units of outline.
    fn merge(&self, other: &Group, shared: u32) -> Group {
        let (sa, sb) = (self.size as f32, other.size as f32);
        Group {
            size: self.size + other.size,
            bbox: union_box(self.bbox, other.bbox),
            hist: self
                .hist
                .iter()
                .zip(&other.hist)
                .map(|(x, y)| (x * sa + y * sb) / (sa + sb))
                .collect(),
            perimeter: (self.perimeter + other.perimeter).saturating_sub(2 * shared),
            open: self.open + other.open,
        }
    }
}

pub(super) fn union_box(a: [u32; 4], b: [u32; 4]) -> [u32; 4] {
    [
        a[0].min(b[0]),
        a[1].min(b[1]),
        a[2].max(b[2]),
        a[3].max(b[3]),
    ]
}

fn box_area(b: [u32; 4]) -> f32 {
    (b[2].saturating_sub(b[0]) * b[3].saturating_sub(b[1])) as f32
}

fn similarity(a: &Group, b: &Group, st: Strategy, image_area: f32) -> f32 {
    let mut s = 0.0;
    if st.colour {
        s += a
            .hist
            .iter()
            .zip(&b.hist)
            .map(|(x, y)| x.min(*y))
            .sum::<f32>();
    }
    if st.size {
        s += 1.0 - (a.size + b.size) as f32 / image_area;
    }
    if st.fill {
        s += 1.0 - (box_area(union_box(a.bbox, b.bbox)) - (a.size + b.size) as f32) / image_area;
    }
    s
}

pub(super) fn to_box(b: [u32; 4], scale: f32, w: u32, h: u32) -> BoxXyxy {
    BoxXyxy::new(
        (b[0] as f32 * scale).min(w as f32),
        (b[1] as f32 * scale).min(h as f32),
        (b[2] as f32 * scale).min(w as f32),
        (b[3] as f32 * scale).min(h as f32),
    )
}

/// Greedy NMS over `(score, box)` sorted best first; keeps at most `cap`.
pub(super) fn nms(mut cands: Vec<(f32, BoxXyxy)>, iou: f32, cap: usize) -> Vec<BoxXyxy> {
    cands.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut keep: Vec<BoxXyxy> = Vec::new();
    for (_, b) in cands {
        if keep.len() >= cap {
            break;
        }
        if b.area() > 0.0 && keep.iter().all(|k| k.iou(&b) < iou) {
            keep.push(b);
        }
    }
    keep
}

/// Which terms a grouping pass's similarity uses (Selective Search's diversification).
#[derive(Debug, Clone, Copy)]
pub(super) struct Strategy {
    colour: bool,
    size: bool,
    fill: bool,
}

pub(super) const STRATEGIES: [Strategy; 5] = [
    Strategy {
        colour: true,
        size: true,
        fill: true,
    },
    Strategy {
        colour: false,
        size: true,
        fill: true,
    },
    Strategy {
        colour: true,
        size: false,
        fill: true,
    },
    Strategy {
        colour: false,
        size: false,
        fill: true,
    },
    Strategy {
        colour: false,
        size: true,
        fill: false,
    },
];

/// Greedy hierarchical grouping: repeatedly merges the most similar adjacent pair; returns
/// the closure score and box of every merged group.
pub(super) fn hierarchy(
    initial: &[Group],
    adjacency: &[BTreeMap<usize, u32>],
    strategy: Strategy,
    image_area: f32,
) -> Vec<(f32, [u32; 4])> {
    let mut groups: Vec<Group> = initial.to_vec();
    let mut neighbours: Vec<BTreeMap<usize, u32>> = adjacency.to_vec();
    let mut alive = vec![true; groups.len()];
    let mut out = Vec::new();
    loop {
        let mut best: Option<(f32, usize, usize)> = None;
        for (a, nb) in neighbours.iter().enumerate() {
            if !alive[a] {
                continue;
            }
            for &b in nb.keys().filter(|&&b| b > a && alive[b]) {
                let s = similarity(&groups[a], &groups[b], strategy, image_area);
                if best.is_none_or(|(bs, _, _)| s > bs) {
                    best = Some((s, a, b));
                }
            }
        }
        let Some((_, a, b)) = best else {
            break;
        };
        let shared = neighbours[a].get(&b).copied().unwrap_or(0);
        let merged = groups[a].merge(&groups[b], shared);
        let id = groups.len();
        out.push((merged.closure(), merged.bbox));
        groups.push(merged);
        alive[a] = false;
        alive[b] = false;
        alive.push(true);
        let mut nb: BTreeMap<usize, u32> = BTreeMap::new();
        for old in [a, b] {
            let map = std::mem::take(&mut neighbours[old]);
            for (c, len) in map {
                if c == a || c == b {
                    continue;
                }
                *nb.entry(c).or_default() += len;
                if let Some(m) = neighbours.get_mut(c) {
                    m.remove(&old);
                    *m.entry(id).or_default() += len;
                }
            }
        }
        neighbours.push(nb);
    }
    out
}
