//! COCO run-length encoding (interim: encoding only).

use crate::types::Mask;

/// `{"size": [h, w], "counts": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CocoRle {
    pub size: [usize; 2],
    pub counts: String,
}

impl CocoRle {
    /// Column-major runs, starting with zeros, in pycocotools' compressed string form.
    pub fn from_mask(m: &Mask) -> Self {
        let (h, w) = (m.height(), m.width());
        let mut counts: Vec<i64> = Vec::new();
        let mut cur = 0u8;
        let mut run = 0i64;
        for x in 0..w {
            for y in 0..h {
                let v = u8::from(m.get(y, x));
                if v != cur {
                    counts.push(run);
                    run = 0;
                    cur = v;
                }
                run += 1;
            }
        }
        counts.push(run);
        let mut s = String::new();
        for i in 0..counts.len() {
            let mut x = counts[i];
            if i > 2 {
                x -= counts[i - 2];
            }
            loop {
                let mut c = x & 0x1f;
                x >>= 5;
                let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    c |= 0x20;
                }
                s.push((c as u8 + 48) as char);
                if !more {
                    break;
                }
            }
        }
        Self {
            size: [h, w],
            counts: s,
        }
    }
}
