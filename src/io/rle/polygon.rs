//! Polygon and box masks: the `rleFrPoly` rasteriser (×5 upsampling, edges walked along
//! their major axis, crossings of pixel-centre columns kept), as pycocotools computes it.

use super::{bad, Rle};
use crate::error::Result;

/// Upsampling factor `rleFrPoly` applies before walking polygon edges.
const POLY_SCALE: f64 = 5.0;
/// Most upsampled boundary points a polygon may span (what pycocotools would allocate);
/// polygons inside an image of a few thousand pixels need a few hundred thousand.
const MAX_POLY_POINTS: u64 = 1 << 25;

impl Rle {
    /// Rasterises one polygon `[x0, y0, x1, y1, ...]` (`rleFrPoly`); a trailing odd
    /// coordinate is ignored, as pycocotools does. Fails only for images too large for COCO
    /// RLE and for vertices so far outside the image that rasterising would need more than
    /// 2^25 boundary points.
    pub fn from_polygon(xy: &[f64], height: usize, width: usize) -> Result<Rle> {
        Ok(Rle {
            height,
            width,
            counts: poly_counts(xy, height, width)?,
        })
    }

    /// The mask of a COCO polygon segmentation (a list of polygons), as
    /// `maskUtils.merge(maskUtils.frPyObjects(polys, h, w))` — i.e. `COCO.annToMask` — builds it.
    ///
    /// pycocotools reads a list whose first entry has four numbers or fewer as boxes (and then
    /// fails on a Python list), so such a list is rejected here too. An empty list gives an
    /// empty mask.
    pub fn from_polygons(polys: &[Vec<f64>], height: usize, width: usize) -> Result<Rle> {
        /// Longest first entry pycocotools does not treat as a polygon.
        const BOX_LEN: usize = 4;
        let Some(first) = polys.first() else {
            return Ok(Rle::empty(height, width));
        };
        if first.len() <= BOX_LEN {
            return Err(bad(format!(
                "the first polygon has {} numbers; pycocotools needs more than {BOX_LEN}",
                first.len()
            )));
        }
        let parts: Vec<Rle> = polys
            .iter()
            .map(|p| Rle::from_polygon(p, height, width))
            .collect::<Result<_>>()?;
        Rle::merge(&parts, false)
    }

    /// The mask of a box `[x, y, w, h]` (`rleFrBbox`, i.e. its corner polygon rasterised;
    /// errors as [`Rle::from_polygon`]).
    pub fn from_bbox(bbox: [f64; 4], height: usize, width: usize) -> Result<Rle> {
        let [xs, ys, w, h] = bbox;
        let (xe, ye) = (xs + w, ys + h);
        Rle::from_polygon(&[xs, ys, xs, ye, xe, ye, xe, ys], height, width)
    }
}

/// `rleFrPoly`: counts of the rasterised polygon.
///
/// Integer work is done in `i64` (pycocotools uses `int`, which is the same for every polygon
/// it can handle); vertices go through a saturating `f64 → i32` conversion like C's cast.
fn poly_counts(xy: &[f64], h: usize, w: usize) -> Result<Vec<u32>> {
    let k = xy.len() / 2;
    let area = h as u64 * w as u64;
    if area > u32::MAX as u64 {
        return Err(bad(format!(
            "a {h}x{w} image has more pixels than COCO RLE counts can hold"
        )));
    }
    if area == 0 {
        return Ok(vec![0]);
    }
    // Upsampled integer vertices, closed.
    let upsample = |v: f64| (POLY_SCALE * v + 0.5) as i32 as i64;
    let mut x: Vec<i64> = (0..k).map(|j| upsample(xy[2 * j])).collect();
    let mut y: Vec<i64> = (0..k).map(|j| upsample(xy[2 * j + 1])).collect();
    if k > 0 {
        x.push(x[0]);
        y.push(y[0]);
    }
    // Dense boundary points along every edge, walking the major axis.
    let points: u64 = (0..k)
        .map(|j| {
            (x[j] - x[j + 1])
                .unsigned_abs()
                .max((y[j] - y[j + 1]).unsigned_abs())
                + 1
        })
        .sum();
    if points > MAX_POLY_POINTS {
        return Err(bad(format!(
            "polygon edges span {points} upsampled points (limit {MAX_POLY_POINTS}); \
             its vertices lie far outside the {h}x{w} image"
        )));
    }
    let mut u: Vec<i64> = Vec::with_capacity(points as usize);
    let mut v: Vec<i64> = Vec::with_capacity(points as usize);
    for j in 0..k {
        let (mut xs, mut xe, mut ys, mut ye) = (x[j], x[j + 1], y[j], y[j + 1]);
        let dx = (xe - xs).abs();
        let dy = (ys - ye).abs();
        let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
        if flip {
            std::mem::swap(&mut xs, &mut xe);
            std::mem::swap(&mut ys, &mut ye);
        }
        // 0/0 for a repeated vertex; that point's other coordinate is never used.
        let s = if dx >= dy {
            (ye - ys) as f64 / dx as f64
        } else {
            (xe - xs) as f64 / dy as f64
        };
        if dx >= dy {
            for d in 0..=dx {
                let t = if flip { dx - d } else { d };
                u.push(t + xs);
                v.push((ys as f64 + s * t as f64 + 0.5) as i32 as i64);
            }
        } else {
            for d in 0..=dy {
                let t = if flip { dy - d } else { d };
                v.push(t + ys);
                u.push((xs as f64 + s * t as f64 + 0.5) as i32 as i64);
            }
        }
    }
    // Crossings of pixel-centre columns, downsampled back to pixel coordinates.
    let (hf, wf) = (h as f64, w as f64);
    let mut starts: Vec<u32> = Vec::new();
    for j in 1..u.len() {
        if u[j] == u[j - 1] {
            continue;
        }
        let xd = if u[j] < u[j - 1] { u[j] } else { u[j] - 1 } as f64;
        let xd = (xd + 0.5) / POLY_SCALE - 0.5;
        if xd.floor() != xd || xd < 0.0 || xd > wf - 1.0 {
            continue;
        }
        let yd = if v[j] < v[j - 1] { v[j] } else { v[j - 1] } as f64;
        let mut yd = (yd + 0.5) / POLY_SCALE - 0.5;
        if yd < 0.0 {
            yd = 0.0;
        } else if yd > hf {
            yd = hf;
        }
        // 0 <= xd < w and 0 <= yd <= h, so the position fits the u32 pixel count.
        starts.push((xd as u64 * h as u64 + yd.ceil() as u64) as u32);
    }
    starts.push(area as u32);
    starts.sort_unstable();
    // Differences between sorted crossing positions are the runs; an empty run merges its
    // neighbours.
    let mut prev = 0u32;
    for a in starts.iter_mut() {
        let t = *a;
        *a -= prev;
        prev = t;
    }
    let mut counts: Vec<u32> = Vec::with_capacity(starts.len());
    counts.push(starts[0]);
    let mut j = 1;
    while j < starts.len() {
        if starts[j] > 0 {
            counts.push(starts[j]);
            j += 1;
        } else {
            j += 1;
            if j < starts.len() {
                if let Some(last) = counts.last_mut() {
                    *last += starts[j];
                }
                j += 1;
            }
        }
    }
    Ok(counts)
}
