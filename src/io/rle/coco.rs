//! COCO's compressed RLE strings (`rleToString` / `rleFrString`) and the RLE JSON objects
//! that carry them ([`CocoRle`], and [`RawCocoRle`] as read before validation).

use serde::{Deserialize, Serialize};

use super::{bad, Rle};
use crate::error::{Error, Result};
use crate::types::Mask;

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
/// Characters needed for any difference of two `u32` counts (33 significant bits with sign).
const MAX_GROUPS: u32 = 7;

impl Rle {
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
