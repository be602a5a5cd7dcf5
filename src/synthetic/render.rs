//! Scene layout and rendering: a textured background, objects placed with bounded occlusion,
//! and the visible-pixel masks of every object and part.

use image::{Rgb, RgbImage};

use super::catalog::{extent, secondary_rgb, shape, Class, Colour, Shape};
use super::{Scene, SceneObject, ScenePart, SyntheticConfig};
use crate::rng::SplitMix64;
use crate::types::{BoxXyxy, Mask};

/// Hard cap on objects per scene (pixel owners are `u16` codes of object and part).
pub const MAX_OBJECTS: usize = 64;
/// Margin kept between an object's box and the image border, in pixels.
const BORDER: f32 = 2.0;
/// Placement attempts per object before it is dropped.
const PLACEMENT_TRIES: usize = 40;
/// A part must keep at least this fraction of its own (amodal) pixels visible.
const MIN_PART_VISIBLE: f32 = 0.5;
/// ... and at least this many pixels in the smaller side of its visible box.
pub const MIN_PART_SIDE: usize = 6;

/// The background texture of a scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Background {
    /// Smooth value noise.
    Noise,
    /// Soft stripes (horizontal, vertical or diagonal).
    Stripes,
    /// A linear gradient between two tones.
    Gradient,
    /// A soft low-contrast checkerboard.
    Checker,
}

/// Muted background tones (base, alternate): never close to a named object colour.
const PALETTES: [([f32; 3], [f32; 3]); 6] = [
    ([196.0, 186.0, 164.0], [182.0, 172.0, 150.0]),
    ([168.0, 172.0, 176.0], [154.0, 158.0, 164.0]),
    ([160.0, 170.0, 150.0], [146.0, 156.0, 138.0]),
    ([158.0, 170.0, 186.0], [144.0, 156.0, 174.0]),
    ([176.0, 168.0, 162.0], [162.0, 154.0, 148.0]),
    ([198.0, 194.0, 184.0], [184.0, 180.0, 170.0]),
];

/// An integer pixel box `(x0, y0, x1, y1)`, end-exclusive.
type PixBox = (usize, usize, usize, usize);

/// One object being laid out: its shape, and the pixels it paints (index, part).
struct Placed {
    class: Class,
    colour: Colour,
    size: f32,
    shape: Shape,
    /// (x0, y0, x1, y1) integer pixel box of the footprint.
    ibox: PixBox,
    /// Amodal pixel count per part.
    part_area: Vec<u32>,
}

/// Owner code of a pixel: 0 = background, else `object * 4 + part + 1`.
fn owner(object: usize, part: usize) -> u16 {
    (object * 4 + part + 1) as u16
}

fn footprint(sh: &Shape, width: usize, height: usize) -> (Vec<(usize, u8)>, PixBox) {
    let x0 = (sh.x0.floor().max(0.0) as usize).min(width);
    let y0 = (sh.y0.floor().max(0.0) as usize).min(height);
    let x1 = ((sh.x0 + sh.w).ceil().max(0.0) as usize).min(width);
    let y1 = ((sh.y0 + sh.h).ceil().max(0.0) as usize).min(height);
    let mut px = Vec::with_capacity((x1 - x0) * (y1 - y0));
    for y in y0..y1 {
        let fy = y as f32 + 0.5;
        for x in x0..x1 {
            let fx = x as f32 + 0.5;
            let mut hit = None;
            for (p, prims) in sh.parts.iter().enumerate() {
                if prims.iter().any(|q| q.contains(fx, fy)) {
                    hit = Some(p as u8);
                }
            }
            if let Some(p) = hit {
                px.push((y * width + x, p));
            }
        }
    }
    (px, (x0, y0, x1, y1))
}

/// Per-part visible pixel count and box `(x0, y0, x1, y1)` of object `k` inside its box.
fn visible_stats(
    owners: &[u16],
    width: usize,
    k: usize,
    pl: &Placed,
) -> Vec<(u32, usize, usize, usize, usize)> {
    let n = pl.part_area.len();
    let mut st = vec![(0u32, usize::MAX, usize::MAX, 0usize, 0usize); n];
    let (x0, y0, x1, y1) = pl.ibox;
    for y in y0..y1 {
        for x in x0..x1 {
            let o = owners[y * width + x] as usize;
            if o == 0 || (o - 1) / 4 != k {
                continue;
            }
            if let Some(s) = st.get_mut((o - 1) % 4) {
                s.0 += 1;
                s.1 = s.1.min(x);
                s.2 = s.2.min(y);
                s.3 = s.3.max(x + 1);
                s.4 = s.4.max(y + 1);
            }
        }
    }
    st
}

/// True when every part of object `k` is still visible enough.
fn parts_ok(owners: &[u16], width: usize, k: usize, pl: &Placed, max_occlusion: f32) -> bool {
    let st = visible_stats(owners, width, k, pl);
    let total: u32 = pl.part_area.iter().sum();
    let visible: u32 = st.iter().map(|s| s.0).sum();
    if (visible as f32) < (1.0 - max_occlusion) * total as f32 {
        return false;
    }
    st.iter().zip(&pl.part_area).all(|(s, &a)| {
        s.0 > 0
            && s.0 as f32 >= MIN_PART_VISIBLE * a as f32
            && s.3 - s.1 >= MIN_PART_SIDE
            && s.4 - s.2 >= MIN_PART_SIDE
    })
}

fn part_areas(px: &[(usize, u8)], n: usize) -> Vec<u32> {
    let mut area = vec![0u32; n];
    for &(_, p) in px {
        if let Some(a) = area.get_mut(p as usize) {
            *a += 1;
        }
    }
    area
}

/// True when every part of an unoccluded object has pixels and a box of at least
/// [`MIN_PART_SIDE`] on each side.
fn amodal_ok(px: &[(usize, u8)], width: usize, pl: &Placed) -> bool {
    let n = pl.part_area.len();
    let mut b = vec![(usize::MAX, usize::MAX, 0usize, 0usize); n];
    for &(i, p) in px {
        let (x, y) = (i % width, i / width);
        if let Some(b) = b.get_mut(p as usize) {
            *b = (b.0.min(x), b.1.min(y), b.2.max(x + 1), b.3.max(y + 1));
        }
    }
    b.iter()
        .zip(&pl.part_area)
        .all(|(b, &a)| a > 0 && b.2 - b.0 >= MIN_PART_SIDE && b.3 - b.1 >= MIN_PART_SIDE)
}

fn boxes_overlap(a: PixBox, b: PixBox, gap: usize) -> bool {
    a.0 < b.2 + gap && b.0 < a.2 + gap && a.1 < b.3 + gap && b.1 < a.3 + gap
}

/// The classes of a scene with `n` objects: often with one class repeated.
fn plan_classes(n: usize, cfg: &SyntheticConfig, rng: &mut SplitMix64) -> Vec<Class> {
    let mut classes = Vec::with_capacity(n);
    if n >= 2 && rng.chance(cfg.duplicate_prob) {
        let c = Class::ALL[rng.below(Class::ALL.len())];
        let k = if n >= 4 && rng.chance(0.25) { 3 } else { 2 };
        classes.extend(std::iter::repeat_n(c, k));
    }
    while classes.len() < n {
        classes.push(Class::ALL[rng.below(Class::ALL.len())]);
    }
    rng.shuffle(&mut classes);
    classes
}

/// Colours for `classes`: drawn from a per-scene palette of 3–5 colours so that colours
/// repeat across classes; a repeated class shares its sibling's colour with probability
/// `same_colour_prob`, else gets a colour no sibling has.
fn plan_colours(classes: &[Class], cfg: &SyntheticConfig, rng: &mut SplitMix64) -> Vec<Colour> {
    let mut all = Colour::ALL;
    rng.shuffle(&mut all);
    let k = rng.range_incl(3, 5);
    let palette = &all[..k];
    let mut colours: Vec<Colour> = Vec::with_capacity(classes.len());
    for (i, &c) in classes.iter().enumerate() {
        let siblings: Vec<Colour> = (0..i)
            .filter(|&j| classes[j] == c)
            .map(|j| colours[j])
            .collect();
        let colour = if !siblings.is_empty() && rng.chance(cfg.same_colour_prob) {
            siblings[rng.below(siblings.len())]
        } else {
            let fresh: Vec<Colour> = palette
                .iter()
                .copied()
                .filter(|x| !siblings.contains(x))
                .collect();
            let fresh_all: Vec<Colour> = all
                .iter()
                .copied()
                .filter(|x| !siblings.contains(x))
                .collect();
            *rng.pick(&fresh)
                .or_else(|| rng.pick(&fresh_all))
                .unwrap_or(&palette[0])
        };
        colours.push(colour);
    }
    colours
}

fn background_pixel(
    kind: Background,
    pal: ([f32; 3], [f32; 3]),
    p: &BgParams,
    x: f32,
    y: f32,
    noise: &ValueNoise,
) -> [f32; 3] {
    let (a, b) = pal;
    let t = match kind {
        Background::Noise => noise.at(x, y),
        Background::Stripes => {
            let s = (x * p.dir.0 + y * p.dir.1) / p.period + p.phase;
            let f = s - s.floor();
            // Triangle wave, softened.
            (2.0 * (f - 0.5)).abs()
        }
        Background::Gradient => {
            let s = (x * p.dir.0 + y * p.dir.1) / p.extent + 0.5;
            s.clamp(0.0, 1.0)
        }
        Background::Checker => {
            let cx = ((x / p.period + p.phase).floor() as i64) & 1;
            let cy = ((y / p.period).floor() as i64) & 1;
            0.35 + 0.3 * ((cx ^ cy) as f32) + 0.3 * noise.at(x, y)
        }
    };
    [0, 1, 2].map(|c| a[c] + (b[c] - a[c]) * t)
}

struct BgParams {
    dir: (f32, f32),
    period: f32,
    phase: f32,
    extent: f32,
}

/// Bilinear value noise on a coarse lattice (arithmetic only).
struct ValueNoise {
    cell: f32,
    cols: usize,
    grid: Vec<f32>,
}

impl ValueNoise {
    fn new(width: usize, height: usize, cell: f32, rng: &mut SplitMix64) -> Self {
        let cols = (width as f32 / cell) as usize + 2;
        let rows = (height as f32 / cell) as usize + 2;
        let grid = (0..cols * rows).map(|_| rng.f32()).collect();
        Self { cell, cols, grid }
    }

    fn at(&self, x: f32, y: f32) -> f32 {
        let gx = x / self.cell;
        let gy = y / self.cell;
        let (ix, iy) = (gx.floor() as usize, gy.floor() as usize);
        let (fx, fy) = (gx - gx.floor(), gy - gy.floor());
        // Smoothstep weights.
        let (sx, sy) = (fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy));
        let g = |i: usize, j: usize| self.grid.get(j * self.cols + i).copied().unwrap_or(0.5);
        let top = g(ix, iy) + (g(ix + 1, iy) - g(ix, iy)) * sx;
        let bot = g(ix, iy + 1) + (g(ix + 1, iy + 1) - g(ix, iy + 1)) * sx;
        top + (bot - top) * sy
    }
}

/// Uniform noise in roughly `[-1, 1)` from 16 bits.
fn unit16(v: u64) -> f32 {
    (v & 0xffff) as f32 / 32768.0 - 1.0
}

/// Lays out and renders scene `index` of `seed`.
pub fn build_scene(seed: u64, index: u64, cfg: &SyntheticConfig) -> Scene {
    let mut rng = SplitMix64::stream(seed, &[index, 0]);
    let (width, height) = match rng.pick(&cfg.sizes) {
        Some(&(w, h)) => (w.max(1) as usize, h.max(1) as usize),
        None => (160, 128),
    };
    let n = rng
        .range_incl(cfg.min_objects, cfg.max_objects.max(cfg.min_objects))
        .min(MAX_OBJECTS);
    let classes = plan_classes(n, cfg, &mut rng);
    let colours = plan_colours(&classes, cfg, &mut rng);

    let mut owners = vec![0u16; width * height];
    let mut placed: Vec<Placed> = Vec::with_capacity(n);
    for (&class, &colour) in classes.iter().zip(&colours) {
        let allow_overlap = rng.chance(cfg.overlap_prob);
        let (lo, hi) = class.size_range();
        for attempt in 0..PLACEMENT_TRIES {
            // Later attempts try smaller objects, and may overlap.
            let late = attempt >= PLACEMENT_TRIES / 2;
            let shrink = 1.0 - 0.5 * (attempt as f32 / PLACEMENT_TRIES as f32);
            let s = rng.uniform(lo, lo + (hi - lo) * shrink);
            let (w, h) = extent(class, s);
            let room_x = width as f32 - w - 2.0 * BORDER;
            let room_y = height as f32 - h - 2.0 * BORDER;
            if room_x < 0.0 || room_y < 0.0 {
                continue;
            }
            let x0 = (BORDER + rng.uniform(0.0, room_x)).floor();
            let y0 = (BORDER + rng.uniform(0.0, room_y)).floor();
            let sh = shape(class, s, x0, y0, &mut rng);
            let outer = (
                x0 as usize,
                y0 as usize,
                (x0 + w).ceil() as usize,
                (y0 + h).ceil() as usize,
            );
            let overlapping: Vec<usize> = placed
                .iter()
                .enumerate()
                .filter(|(_, p)| boxes_overlap(p.ibox, outer, 1))
                .map(|(j, _)| j)
                .collect();
            if !(overlapping.is_empty() || allow_overlap || late) {
                continue;
            }
            let (px, ibox) = footprint(&sh, width, height);
            let k = placed.len();
            let cand = Placed {
                class,
                colour,
                size: s,
                part_area: part_areas(&px, sh.parts.len()),
                shape: sh,
                ibox,
            };
            // Every part must be thick enough on its own…
            if !amodal_ok(&px, width, &cand) {
                continue;
            }
            // …and the objects it covers must stay visible enough.
            let saved: Vec<u16> = px.iter().map(|&(i, _)| owners[i]).collect();
            for &(i, p) in &px {
                owners[i] = owner(k, p as usize);
            }
            if overlapping
                .iter()
                .any(|&j| !parts_ok(&owners, width, j, &placed[j], cfg.max_occlusion))
            {
                for (&(i, _), &o) in px.iter().zip(&saved) {
                    owners[i] = o;
                }
                continue;
            }
            placed.push(cand);
            break;
        }
    }

    // Background.
    let kind = [
        Background::Noise,
        Background::Stripes,
        Background::Gradient,
        Background::Checker,
    ][rng.below(4)];
    let pal = PALETTES[rng.below(PALETTES.len())];
    let ang = rng.below(4);
    let d = std::f32::consts::FRAC_1_SQRT_2;
    let dir = [(1.0, 0.0), (0.0, 1.0), (d, d), (d, -d)][ang];
    let bg = BgParams {
        dir,
        period: rng.uniform(8.0, 20.0),
        phase: rng.f32(),
        extent: width.max(height) as f32,
    };
    let noise = ValueNoise::new(width, height, rng.uniform(10.0, 24.0), &mut rng);

    // Per-object part colours.
    let part_rgb: Vec<Vec<[f32; 3]>> = placed
        .iter()
        .map(|p| {
            let base = p.colour.rgb();
            let main = base.map(|c| (c + rng.uniform(-12.0, 12.0)).clamp(0.0, 255.0));
            p.class
                .parts()
                .iter()
                .map(|&part| secondary_rgb(part, main, &mut rng))
                .collect()
        })
        .collect();

    let mut image = RgbImage::new(width as u32, height as u32);
    for y in 0..height {
        for x in 0..width {
            let r = rng.next_u64();
            let lum = 5.0 * unit16(r);
            let chroma = [unit16(r >> 16), unit16(r >> 32), unit16(r >> 48)].map(|v| 2.0 * v);
            let o = owners[y * width + x] as usize;
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let base = if o == 0 {
                background_pixel(kind, pal, &bg, fx, fy, &noise)
            } else {
                let (k, p) = ((o - 1) / 4, (o - 1) % 4);
                let (pl, rgb) = (&placed[k], &part_rgb[k]);
                let v = ((fy - pl.shape.y0) / pl.shape.h).clamp(0.0, 1.0);
                let u = ((fx - pl.shape.x0) / pl.shape.w).clamp(0.0, 1.0);
                let shade = 1.07 - 0.14 * v - 0.04 * u;
                rgb.get(p).copied().unwrap_or([0.0; 3]).map(|c| c * shade)
            };
            let px = [0, 1, 2].map(|c| (base[c] + lum + chroma[c]).round().clamp(0.0, 255.0) as u8);
            image.put_pixel(x as u32, y as u32, Rgb(px));
        }
    }

    // Visible masks.
    let objects = placed
        .iter()
        .enumerate()
        .map(|(k, pl)| {
            let mut obj_mask = Mask::zeros(height, width);
            let mut parts: Vec<ScenePart> = pl
                .class
                .parts()
                .iter()
                .map(|&kind| ScenePart {
                    kind,
                    mask: Mask::zeros(height, width),
                    bbox: BoxXyxy::new(0.0, 0.0, 0.0, 0.0),
                    area: 0,
                })
                .collect();
            let (x0, y0, x1, y1) = pl.ibox;
            for y in y0..y1 {
                for x in x0..x1 {
                    let o = owners[y * width + x] as usize;
                    if o == 0 || (o - 1) / 4 != k {
                        continue;
                    }
                    // (y, x) lies in the placement box, inside the scene by construction.
                    if obj_mask.set(y, x, true).is_err() {
                        continue;
                    }
                    if let Some(part) = parts.get_mut((o - 1) % 4) {
                        if part.mask.set(y, x, true).is_ok() {
                            part.area += 1;
                        }
                    }
                }
            }
            for part in &mut parts {
                part.bbox = part.mask.bbox().unwrap_or(part.bbox);
            }
            let area = parts.iter().map(|p| p.area).sum();
            SceneObject {
                class: pl.class,
                colour: pl.colour,
                size: pl.size,
                bbox: obj_mask.bbox().unwrap_or(BoxXyxy::new(0.0, 0.0, 0.0, 0.0)),
                mask: obj_mask,
                area,
                parts,
                amodal_area: pl.part_area.iter().map(|&a| a as u64).sum(),
            }
        })
        .collect();
    Scene {
        seed,
        index,
        image,
        objects,
        background: kind,
    }
}
