//! The over-segmentation behind the proposals: the working image (downscaled, optionally
//! blurred), Felzenszwalb–Huttenlocher graph segmentation, per-region statistics and the
//! absorption of thin bands into their neighbours.

use image::RgbImage;

/// Histogram bins per colour channel.
const BINS: usize = 16;

/// A float RGB image, row-major, 3 values per pixel.
pub(super) struct Planar {
    pub(super) w: usize,
    pub(super) h: usize,
    px: Vec<[f32; 3]>,
}

pub(super) fn to_planar(img: &RgbImage, work_size: u32) -> (Planar, f32) {
    let (w, h) = img.dimensions();
    let long = w.max(h);
    if long <= work_size || work_size == 0 {
        let px = img.pixels().map(|p| p.0.map(f32::from)).collect();
        return (
            Planar {
                w: w as usize,
                h: h as usize,
                px,
            },
            1.0,
        );
    }
    // Area-average downscale by an integer factor, then the boxes are scaled back.
    let f = long.div_ceil(work_size);
    let (nw, nh) = (w.div_ceil(f) as usize, h.div_ceil(f) as usize);
    let mut acc = vec![[0f32; 4]; nw * nh];
    for (x, y, p) in img.enumerate_pixels() {
        let a = &mut acc[(y / f) as usize * nw + (x / f) as usize];
        for (acc, &v) in a.iter_mut().zip(&p.0) {
            *acc += f32::from(v);
        }
        a[3] += 1.0;
    }
    let px = acc
        .iter()
        .map(|a| [0, 1, 2].map(|c| a[c] / a[3].max(1.0)))
        .collect();
    (Planar { w: nw, h: nh, px }, f as f32)
}

/// Separable Gaussian blur with clamped borders (`sigma > 0`).
pub(super) fn gaussian_blur(img: &Planar, sigma: f32) -> Planar {
    let r = (4.0 * sigma).ceil() as i64;
    let mut kern: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f32 = kern.iter().sum();
    kern.iter_mut().for_each(|v| *v /= s);
    let (w, h) = (img.w as i64, img.h as i64);
    let pass = |src: &[[f32; 3]], horizontal: bool| -> Vec<[f32; 3]> {
        let mut out = vec![[0f32; 3]; src.len()];
        for y in 0..h {
            for x in 0..w {
                let mut a = [0f32; 3];
                for (t, &kv) in kern.iter().enumerate() {
                    let d = t as i64 - r;
                    let (sx, sy) = if horizontal {
                        ((x + d).clamp(0, w - 1), y)
                    } else {
                        (x, (y + d).clamp(0, h - 1))
                    };
                    let p = src[(sy * w + sx) as usize];
                    for c in 0..3 {
                        a[c] += kv * p[c];
                    }
                }
                out[(y * w + x) as usize] = a;
            }
        }
        out
    };
    let tmp = pass(&img.px, true);
    Planar {
        w: img.w,
        h: img.h,
        px: pass(&tmp, false),
    }
}

pub(super) fn dist(a: [f32; 3], b: [f32; 3]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// Disjoint sets with the component size and FH's internal difference.
pub(super) struct Dsu {
    parent: Vec<u32>,
    size: Vec<u32>,
    internal: Vec<f32>,
}

impl Dsu {
    pub(super) fn new(n: usize) -> Self {
        Self {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
            internal: vec![0.0; n],
        }
    }

    pub(super) fn find(&mut self, mut a: u32) -> u32 {
        while self.parent[a as usize] != a {
            let p = self.parent[a as usize];
            self.parent[a as usize] = self.parent[p as usize];
            a = p;
        }
        a
    }

    pub(super) fn union(&mut self, a: u32, b: u32, w: f32) -> u32 {
        let (a, b) = if self.size[a as usize] >= self.size[b as usize] {
            (a, b)
        } else {
            (b, a)
        };
        self.parent[b as usize] = a;
        self.size[a as usize] += self.size[b as usize];
        self.internal[a as usize] = w;
        a
    }
}

/// Felzenszwalb–Huttenlocher segmentation: one label in `0..n` per pixel, and `n`.
pub(super) fn felzenszwalb(img: &Planar, k: f32, min_size: usize) -> (Vec<u32>, usize) {
    let (w, h) = (img.w, img.h);
    let mut edges: Vec<(f32, u32, u32)> = Vec::with_capacity(4 * w * h);
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let mut push = |j: usize| edges.push((dist(img.px[i], img.px[j]), i as u32, j as u32));
            if x + 1 < w {
                push(i + 1);
            }
            if y + 1 < h {
                push(i + w);
                if x + 1 < w {
                    push(i + w + 1);
                }
                if x > 0 {
                    push(i + w - 1);
                }
            }
        }
    }
    edges.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut dsu = Dsu::new(w * h);
    for &(wt, a, b) in &edges {
        let (ra, rb) = (dsu.find(a), dsu.find(b));
        if ra == rb {
            continue;
        }
        let ta = dsu.internal[ra as usize] + k / dsu.size[ra as usize] as f32;
        let tb = dsu.internal[rb as usize] + k / dsu.size[rb as usize] as f32;
        if wt <= ta.min(tb) {
            dsu.union(ra, rb, wt);
        }
    }
    for &(_, a, b) in &edges {
        let (ra, rb) = (dsu.find(a), dsu.find(b));
        if ra != rb
            && ((dsu.size[ra as usize] as usize) < min_size
                || (dsu.size[rb as usize] as usize) < min_size)
        {
            let keep = dsu.internal[ra as usize].max(dsu.internal[rb as usize]);
            dsu.union(ra, rb, keep);
        }
    }
    let mut relabel = vec![u32::MAX; w * h];
    let mut labels = vec![0u32; w * h];
    let mut n = 0u32;
    for (i, l) in labels.iter_mut().enumerate() {
        let r = dsu.find(i as u32) as usize;
        if relabel[r] == u32::MAX {
            relabel[r] = n;
            n += 1;
        }
        *l = relabel[r];
    }
    (labels, n as usize)
}

/// Per-region statistics of a segmentation.
pub(super) struct Region {
    pub(super) size: u32,
    pub(super) bbox: [u32; 4],
    pub(super) mean: [f32; 3],
    pub(super) hist: Vec<f32>,
    /// 4-neighbour boundary length with the image border.
    pub(super) border: u32,
    /// 4-neighbour boundary length in total (border included).
    pub(super) perimeter: u32,
    pub(super) background: bool,
}

pub(super) fn regions(
    img: &Planar,
    labels: &[u32],
    n: usize,
) -> (Vec<Region>, Vec<(usize, usize, u32)>) {
    let (w, h) = (img.w, img.h);
    let mut regs: Vec<Region> = (0..n)
        .map(|_| Region {
            size: 0,
            bbox: [u32::MAX, u32::MAX, 0, 0],
            mean: [0.0; 3],
            hist: vec![0.0; 3 * BINS],
            border: 0,
            perimeter: 0,
            background: false,
        })
        .collect();
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let l = labels[i];
            let r = &mut regs[l as usize];
            r.size += 1;
            r.bbox = [
                r.bbox[0].min(x as u32),
                r.bbox[1].min(y as u32),
                r.bbox[2].max(x as u32 + 1),
                r.bbox[3].max(y as u32 + 1),
            ];
            let p = img.px[i];
            for (c, &v) in p.iter().enumerate() {
                r.mean[c] += v;
                let bin = ((v.clamp(0.0, 255.0) / 256.0) * BINS as f32) as usize;
                r.hist[c * BINS + bin.min(BINS - 1)] += 1.0;
            }
            let on_border = u32::from(x == 0)
                + u32::from(y == 0)
                + u32::from(x + 1 == w)
                + u32::from(y + 1 == h);
            r.border += on_border;
            r.perimeter += on_border;
            for j in [(x + 1 < w).then(|| i + 1), (y + 1 < h).then(|| i + w)]
                .into_iter()
                .flatten()
            {
                let m = labels[j];
                if m != l {
                    pairs.push((l.min(m), l.max(m)));
                    regs[l as usize].perimeter += 1;
                    regs[m as usize].perimeter += 1;
                }
            }
        }
    }
    for r in &mut regs {
        let s = r.size.max(1) as f32;
        r.mean = r.mean.map(|v| v / s);
        r.hist.iter_mut().for_each(|v| *v /= 3.0 * s);
    }
    pairs.sort_unstable();
    let mut adj: Vec<(usize, usize, u32)> = Vec::new();
    for (a, b) in pairs {
        match adj.last_mut() {
            Some(last) if last.0 == a as usize && last.1 == b as usize => last.2 += 1,
            _ => adj.push((a as usize, b as usize, 1)),
        }
    }
    (regs, adj)
}

/// Relabels thin regions (mean width `2·area/perimeter` below `max_width`: the bands that
/// smoothing leaves along strong edges) into the neighbour they share most outline with;
/// returns the new number of labels.
pub(super) fn absorb_thin(
    labels: &mut [u32],
    regs: &[Region],
    adj: &[(usize, usize, u32)],
    max_width: f32,
) -> usize {
    let n = regs.len();
    let thin: Vec<bool> = regs
        .iter()
        .map(|r| 2.0 * r.size as f32 / r.perimeter.max(1) as f32 <= max_width)
        .collect();
    let mut best: Vec<(u32, usize)> = vec![(0, usize::MAX); n];
    for &(a, b, len) in adj {
        for (x, y) in [(a, b), (b, a)] {
            if thin[x] && !thin[y] && len > best[x].0 {
                best[x] = (len, y);
            }
        }
    }
    let mut map: Vec<usize> = (0..n)
        .map(|i| {
            if best[i].1 == usize::MAX {
                i
            } else {
                best[i].1
            }
        })
        .collect();
    let mut dense = vec![u32::MAX; n];
    let mut next = 0u32;
    for m in map.iter_mut() {
        if dense[*m] == u32::MAX {
            dense[*m] = next;
            next += 1;
        }
        *m = dense[*m] as usize;
    }
    for l in labels.iter_mut() {
        *l = map[*l as usize] as u32;
    }
    next as usize
}
