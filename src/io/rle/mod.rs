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

mod coco;
mod polygon;

use crate::error::{Error, Result};
use crate::types::Mask;

pub use coco::{CocoRle, RawCocoRle, RawCounts};

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
