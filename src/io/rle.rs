//! COCO run-length encoding, bit-exact with pycocotools (`common/maskApi.c` and `_mask.pyx`).
//!
//! A mask is stored as run lengths over its pixels in column-major (Fortran) order, starting
//! with a run of zeros (which may be empty). The compressed string form packs each count —
//! for the fourth count onwards, its difference to the count two places back — into 5-bit
//! groups, least significant first, one printable character (`'0'` + value) per group, bit
//! `0x20` meaning "more groups follow" and bit `0x10` of the last group carrying the sign.
//! Polygons are rasterised as `rleFrPoly` does (×5 upsampling, walking each edge along its
//! major axis, keeping the crossings of pixel-centre columns), so masks decoded from COCO
//! polygon annotations match `COCO.annToMask` pixel for pixel.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::Mask;

/// Upsampling factor `rleFrPoly` applies before walking polygon edges.
const POLY_SCALE: f64 = 5.0;
/// Value of the first character of the compressed alphabet (`'0'`).
const CHAR_BASE: u8 = 48;
/// Number of characters in the compressed alphabet (`'0'..='o'`).
const CHAR_RANGE: u8 = 64;
/// Payload bits per character.
const GROUP_BITS: u32 = 5;
/// Mask of the payload bits of one character.
const GROUP_MASK: i64 = 0x1f;
/// Continuation bit of one character.
const MORE_BIT: i64 = 0x20;
/// Sign bit of the last group of a value.
const SIGN_BIT: i64 = 0x10;
/// Most upsampled boundary points a polygon may span (what pycocotools would allocate);
/// polygons inside an image of a few thousand pixels need a few hundred thousand.
const MAX_POLY_POINTS: u64 = 1 << 25;
/// Characters needed for any difference of two `u32` counts (33 significant bits with sign).
const MAX_GROUPS: u32 = 7;

fn bad(reason: impl Into<String>) -> Error {
    Error::BadRle {
        reason: reason.into(),
    }
}

/// A binary mask as COCO run lengths (uncompressed counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rle {
    pub height: usize,
    pub width: usize,
    /// Alternating run lengths over the column-major pixels, starting with zeros.
    pub counts: Vec<u32>,
}

impl Rle {
    /// Run-length encodes a mask (`rleEncode`).
    pub fn encode(mask: &Mask) -> Self {
        let (h, w) = (mask.height(), mask.width());
        let data = mask.as_slice();
        let mut counts = Vec::new();
        let mut current = 0u8;
        let mut run = 0u64;
        for x in 0..w {
            for y in 0..h {
                let v = data[y * w + x];
                if v != current {
                    push_run(&mut counts, run);
                    run = 0;
                    current = v;
                }
                run += 1;
            }
        }
        push_run(&mut counts, run);
        Self {
            height: h,
            width: w,
            counts,
        }
    }

    /// Checks that the counts cover exactly `height × width` pixels.
    pub fn validate(&self) -> Result<()> {
        let total: u64 = self.counts.iter().map(|&c| c as u64).sum();
        let expected = (self.height as u64).checked_mul(self.width as u64);
        if expected != Some(total) {
            return Err(bad(format!(
                "counts sum to {total}, expected {}x{} = {} pixels",
                self.height,
                self.width,
                expected.map_or_else(|| "overflow".to_string(), |v| v.to_string())
            )));
        }
        Ok(())
    }

    /// Decodes to a row-major mask (`rleDecode`); counts must cover exactly `h × w` pixels.
    pub fn decode(&self) -> Result<Mask> {
        self.validate()?;
        let (h, w) = (self.height, self.width);
        let mut data = vec![0u8; h * w];
        let mut pos = 0usize;
        for (i, &c) in self.counts.iter().enumerate() {
            let c = c as usize;
            if i % 2 == 1 && c > 0 {
                // Walk the run column by column instead of dividing per pixel.
                let (mut x, mut y) = (pos / h, pos % h);
                let mut left = c;
                while left > 0 {
                    let take = left.min(h - y);
                    for yy in y..y + take {
                        data[yy * w + x] = 1;
                    }
                    left -= take;
                    x += 1;
                    y = 0;
                }
            }
            pos += c;
        }
        Mask::from_vec(h, w, data)
    }

    /// The compressed string form (`rleToString`).
    pub fn to_compressed(&self) -> String {
        let mut s = String::with_capacity(self.counts.len() * 2);
        for i in 0..self.counts.len() {
            let mut x = self.counts[i] as i64;
            if i > 2 {
                x -= self.counts[i - 2] as i64;
            }
            loop {
                let mut c = x & GROUP_MASK;
                x >>= GROUP_BITS;
                let more = if c & SIGN_BIT != 0 { x != -1 } else { x != 0 };
                if more {
                    c |= MORE_BIT;
                }
                s.push(char::from(c as u8 + CHAR_BASE));
                if !more {
                    break;
                }
            }
        }
        s
    }

    /// Parses the compressed string form (`rleFrString`) and checks it covers `height × width`.
    ///
    /// Rejects characters outside `'0'..='o'`, a value cut off mid-way, a value longer than
    /// any `u32` difference needs, and counts that are negative, overflow `u32` or do not sum
    /// to `height × width`.
    pub fn from_compressed(height: usize, width: usize, s: &str) -> Result<Self> {
        let bytes = s.as_bytes();
        let mut counts: Vec<u32> = Vec::with_capacity(bytes.len());
        let mut p = 0usize;
        while p < bytes.len() {
            let start = p;
            let mut x: i64 = 0;
            let mut k: u32 = 0;
            loop {
                let Some(&b) = bytes.get(p) else {
                    return Err(bad(format!(
                        "compressed counts end inside the value starting at byte {start}"
                    )));
                };
                if !(CHAR_BASE..CHAR_BASE + CHAR_RANGE).contains(&b) {
                    return Err(bad(format!(
                        "byte {p} of the compressed counts is {:?}, outside '0'..='o'",
                        char::from(b)
                    )));
                }
                if k == MAX_GROUPS {
                    return Err(bad(format!(
                        "the value starting at byte {start} is longer than {MAX_GROUPS} characters"
                    )));
                }
                let c = (b - CHAR_BASE) as i64;
                x |= (c & GROUP_MASK) << (GROUP_BITS * k);
                p += 1;
                k += 1;
                if c & MORE_BIT == 0 {
                    if c & SIGN_BIT != 0 {
                        x |= -1i64 << (GROUP_BITS * k);
                    }
                    break;
                }
            }
            let m = counts.len();
            if m > 2 {
                x += counts[m - 2] as i64;
            }
            let count = u32::try_from(x).map_err(|_| {
                bad(format!(
                    "count {m} decodes to {x}, outside 0..=4294967295 (bytes {start}..{p})"
                ))
            })?;
            counts.push(count);
        }
        let rle = Self {
            height,
            width,
            counts,
        };
        rle.validate()?;
        Ok(rle)
    }

    /// Number of foreground pixels (`rleArea`).
    pub fn area(&self) -> u64 {
        self.counts
            .iter()
            .skip(1)
            .step_by(2)
            .map(|&c| c as u64)
            .sum()
    }

    /// Tight box `[x, y, w, h]` of the foreground (`rleToBbox`); all zeros when empty.
    ///
    /// Like pycocotools, a foreground run that wraps from one column to the next makes the
    /// box span the full height.
    pub fn bbox(&self) -> [f64; 4] {
        let h = self.height as u64;
        let m = self.counts.len() / 2 * 2;
        if m == 0 || h == 0 {
            return [0.0; 4];
        }
        let (mut xs, mut ys, mut xe, mut ye) = (u64::MAX, u64::MAX, 0u64, 0u64);
        let mut cc = 0u64;
        for j in 0..m {
            let start = cc;
            cc += self.counts[j] as u64;
            if j % 2 == 0 || self.counts[j] == 0 {
                continue;
            }
            let (y_start, x_start) = (start % h, start / h);
            let (y_end, x_end) = ((cc - 1) % h, (cc - 1) / h);
            xs = xs.min(x_start);
            xe = xe.max(x_end);
            if x_start < x_end {
                ys = 0;
                ye = h - 1;
            } else {
                ys = ys.min(y_start);
                ye = ye.max(y_end);
            }
        }
        if xs == u64::MAX {
            return [0.0; 4];
        }
        [
            xs as f64,
            ys as f64,
            (xe - xs + 1) as f64,
            (ye - ys + 1) as f64,
        ]
    }

    /// Union (or intersection) of same-sized masks, as `rleMerge` computes it.
    pub fn merge(rles: &[Rle], intersect: bool) -> Result<Rle> {
        let Some(first) = rles.first() else {
            return Err(bad("nothing to merge"));
        };
        for r in rles {
            if r.height != first.height || r.width != first.width {
                return Err(Error::SizeMismatch {
                    what: "RLE in merge".into(),
                    expected_h: first.height,
                    expected_w: first.width,
                    got_h: r.height,
                    got_w: r.width,
                });
            }
            r.validate()?;
        }
        let mut acc = first.clone();
        for b in &rles[1..] {
            acc.counts = merge_pair(&acc.counts, &b.counts, intersect);
        }
        Ok(acc)
    }

    /// Intersection over union as `maskUtils.iou(.., iscrowd=[0])`: 0 when nothing overlaps
    /// (two empty masks included).
    pub fn iou(&self, other: &Rle) -> Result<f64> {
        if self.height != other.height || self.width != other.width {
            return Err(Error::SizeMismatch {
                what: "RLE in iou".into(),
                expected_h: self.height,
                expected_w: self.width,
                got_h: other.height,
                got_w: other.width,
            });
        }
        self.validate()?;
        other.validate()?;
        let (mut inter, mut union) = (0u64, 0u64);
        walk_pair(&self.counts, &other.counts, |len, a, b| {
            if a || b {
                union += len;
            }
            if a && b {
                inter += len;
            }
        });
        Ok(if inter == 0 {
            0.0
        } else {
            inter as f64 / union as f64
        })
    }

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

    /// An all-zero mask.
    pub fn empty(height: usize, width: usize) -> Rle {
        let mut counts = Vec::new();
        push_run(&mut counts, height as u64 * width as u64);
        Rle {
            height,
            width,
            counts,
        }
    }
}

/// Appends a run, splitting runs longer than `u32::MAX` with empty runs of the other value.
fn push_run(counts: &mut Vec<u32>, mut run: u64) {
    while run > u32::MAX as u64 {
        counts.push(u32::MAX);
        counts.push(0);
        run -= u32::MAX as u64;
    }
    counts.push(run as u32);
}

/// Walks two run sequences of equal total length together, calling `f(len, a, b)` for each
/// maximal stretch where both values are constant (the traversal of `rleMerge`/`rleIou`).
fn walk_pair(a: &[u32], b: &[u32], mut f: impl FnMut(u64, bool, bool)) {
    let (mut ia, mut ib) = (0usize, 0usize);
    let (mut ca, mut cb) = (
        a.first().copied().unwrap_or(0) as u64,
        b.first().copied().unwrap_or(0) as u64,
    );
    let (mut va, mut vb) = (false, false);
    loop {
        let c = ca.min(cb);
        f(c, va, vb);
        ca -= c;
        cb -= c;
        let mut rest = 0;
        if ca == 0 && ia + 1 < a.len() {
            ia += 1;
            ca = a[ia] as u64;
            va = !va;
        }
        rest += ca;
        if cb == 0 && ib + 1 < b.len() {
            ib += 1;
            cb = b[ib] as u64;
            vb = !vb;
        }
        rest += cb;
        if rest == 0 {
            break;
        }
    }
}

/// One step of `rleMerge`: runs of `a ∪ b` (or `a ∩ b`), starting with zeros.
///
/// Like `rleMerge`, a run is closed whenever the merged value of the next stretch differs
/// from the current one, and once at the very end.
fn merge_pair(a: &[u32], b: &[u32], intersect: bool) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    let (mut ia, mut ib) = (0usize, 0usize);
    let (mut ca, mut cb) = (
        a.first().copied().unwrap_or(0) as u64,
        b.first().copied().unwrap_or(0) as u64,
    );
    let (mut va, mut vb, mut v) = (false, false, false);
    let mut run = 0u64;
    loop {
        let c = ca.min(cb);
        run += c;
        ca -= c;
        if ca == 0 && ia + 1 < a.len() {
            ia += 1;
            ca = a[ia] as u64;
            va = !va;
        }
        cb -= c;
        if cb == 0 && ib + 1 < b.len() {
            ib += 1;
            cb = b[ib] as u64;
            vb = !vb;
        }
        let rest = ca + cb;
        let previous = v;
        v = if intersect { va && vb } else { va || vb };
        if v != previous || rest == 0 {
            push_run(&mut out, run);
            run = 0;
        }
        if rest == 0 {
            return out;
        }
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

/// COCO's JSON form `{"size": [h, w], "counts": "..."}` of a compressed RLE.
///
/// Deserialising also accepts uncompressed counts (`"counts": [0, 5, ...]`), which are
/// compressed on the way in, and rejects negative sizes or counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawCocoRle")]
pub struct CocoRle {
    /// `[height, width]`.
    pub size: [usize; 2],
    /// Compressed counts.
    pub counts: String,
}

impl CocoRle {
    /// Encodes a mask.
    pub fn from_mask(mask: &Mask) -> Self {
        Self::from(&Rle::encode(mask))
    }

    /// The uncompressed counts (validated against the size).
    pub fn to_rle(&self) -> Result<Rle> {
        Rle::from_compressed(self.size[0], self.size[1], &self.counts)
    }

    /// Decodes to a mask.
    pub fn decode(&self) -> Result<Mask> {
        self.to_rle()?.decode()
    }

    pub fn height(&self) -> usize {
        self.size[0]
    }

    pub fn width(&self) -> usize {
        self.size[1]
    }
}

impl From<&Rle> for CocoRle {
    fn from(r: &Rle) -> Self {
        Self {
            size: [r.height, r.width],
            counts: r.to_compressed(),
        }
    }
}

impl TryFrom<&CocoRle> for Rle {
    type Error = Error;
    fn try_from(c: &CocoRle) -> Result<Self> {
        c.to_rle()
    }
}

/// The RLE JSON as written by COCO tools: counts compressed or not, sizes not yet checked.
#[derive(Debug, Clone, Deserialize)]
pub struct RawCocoRle {
    pub size: Vec<i64>,
    pub counts: RawCounts,
}

/// `counts` of an RLE JSON object: a compressed string or a list of run lengths.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawCounts {
    Compressed(String),
    Uncompressed(Vec<i64>),
}

impl RawCocoRle {
    /// `[height, width]`, rejecting anything but two non-negative numbers.
    pub fn checked_size(&self) -> Result<[usize; 2]> {
        match self.size.as_slice() {
            &[h, w] => {
                let h = usize::try_from(h).map_err(|_| bad(format!("negative height {h}")))?;
                let w = usize::try_from(w).map_err(|_| bad(format!("negative width {w}")))?;
                Ok([h, w])
            }
            other => Err(bad(format!(
                "size has {} numbers, expected [height, width]",
                other.len()
            ))),
        }
    }

    /// The uncompressed counts, validated against the size.
    pub fn to_rle(&self) -> Result<Rle> {
        let [h, w] = self.checked_size()?;
        match &self.counts {
            RawCounts::Compressed(s) => Rle::from_compressed(h, w, s),
            RawCounts::Uncompressed(list) => {
                let counts = list
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| {
                        u32::try_from(c)
                            .map_err(|_| bad(format!("count {i} is {c}, outside 0..=4294967295")))
                    })
                    .collect::<Result<Vec<u32>>>()?;
                let rle = Rle {
                    height: h,
                    width: w,
                    counts,
                };
                rle.validate()?;
                Ok(rle)
            }
        }
    }
}

impl TryFrom<RawCocoRle> for CocoRle {
    type Error = Error;
    fn try_from(raw: RawCocoRle) -> Result<Self> {
        let rle = raw.to_rle()?;
        Ok(CocoRle::from(&rle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_round_trip_of_hand_made_counts() {
        // Large and negative deltas, zero runs, multi-character values.
        let counts = vec![0, 3_000_000, 5, 1, 2_999_000, 994];
        let total: u32 = counts.iter().sum();
        let rle = Rle {
            height: 1,
            width: total as usize,
            counts,
        };
        let s = rle.to_compressed();
        assert_eq!(Rle::from_compressed(1, total as usize, &s).unwrap(), rle);
    }

    #[test]
    fn rejects_bad_strings() {
        for (h, w, s) in [
            (2, 2, "4x"),         // 'x' is outside the alphabet
            (2, 2, "1 3"),        // space
            (2, 2, "3"),          // sums to 3, not 4
            (2, 2, "0b"),         // continuation bit on the last character
            (2, 2, "0000000001"), // fine characters, wrong sum
            (2, 2, "ooooooo0"),   // value longer than 7 characters
            (2, 2, "0@"),         // a negative count
        ] {
            let r = Rle::from_compressed(h, w, s);
            assert!(matches!(r, Err(Error::BadRle { .. })), "{s:?}: {r:?}");
        }
    }

    #[test]
    fn raw_json_rejects_negative_sizes_and_counts() {
        for js in [
            r#"{"size": [-1, 4], "counts": "4"}"#,
            r#"{"size": [2, 2], "counts": [1, -1, 4]}"#,
            r#"{"size": [2], "counts": "4"}"#,
        ] {
            let raw: RawCocoRle = serde_json::from_str(js).unwrap();
            assert!(matches!(raw.to_rle(), Err(Error::BadRle { .. })), "{js}");
            assert!(serde_json::from_str::<CocoRle>(js).is_err(), "{js}");
        }
        let c: CocoRle = serde_json::from_str(r#"{"size": [2, 2], "counts": [1, 2, 1]}"#).unwrap();
        let m = c.decode().unwrap();
        // Column-major: (0,0)=0, (1,0)=1, (0,1)=1, (1,1)=0.
        assert_eq!(m.as_slice(), &[0, 1, 1, 0]);
    }
}
