//! sentencepiece's normaliser (`normalizer.cc` of sentencepiece 0.2): the precompiled
//! character map applied by longest prefix match, then the white-space rules of the
//! `NormalizerSpec` (extra white space removed, dummy prefix, spaces escaped to `▁`).
//!
//! `tokenizers`' `Precompiled` normaliser reads the same map but applies it per grapheme
//! cluster, replacing a whole cluster by the rule of its *shortest* matching prefix. So marks
//! after a mapped prefix are lost (`Ａ\u{301}` gives `A`, sentencepiece `Á`; `e\u{301}\u{323}`
//! gives `é`, sentencepiece `é\u{323}`), and rules spanning six bytes or more are missed
//! (Hangul jamo `\u{1100}\u{1161}\u{11a8}` stay apart, sentencepiece gives `각`). This module
//! gives sentencepiece's result for every input.

use crate::error::SpmProblem;

use super::NormalizerSpec;

/// The escaped space of sentencepiece (U+2581).
pub const SPACE: char = '\u{2581}';

/// The compiled character map: a darts-clone double array over the UTF-8 bytes of the
/// source strings, whose values index NUL-terminated replacements in `normalized`.
#[derive(Debug, Clone)]
struct Charsmap {
    units: Vec<u32>,
    normalized: String,
}

impl Charsmap {
    /// Layout: `u32` byte size of the double array (little endian), the array, then the
    /// replacement strings.
    fn parse(blob: &[u8]) -> Result<Self, SpmProblem> {
        let bad = |reason: &str| SpmProblem::BadCharsmap {
            reason: reason.to_string(),
        };
        let head: [u8; 4] = blob
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("shorter than its 4-byte header"))?;
        let trie_len = u32::from_le_bytes(head) as usize;
        let rest = &blob[4..];
        if trie_len > rest.len() || trie_len % 4 != 0 || trie_len == 0 {
            return Err(bad("the double array size does not fit the map"));
        }
        let units = rest[..trie_len]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let normalized = String::from_utf8(rest[trie_len..].to_vec())
            .map_err(|_| bad("the replacement strings are not UTF-8"))?;
        Ok(Self { units, normalized })
    }

    /// The longest source string that prefixes `input`: its byte length and replacement.
    fn longest_prefix(&self, input: &[u8]) -> Option<(usize, &str)> {
        // darts-clone unit fields.
        let offset = |u: u32| ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize;
        let label = |u: u32| u & ((1 << 31) | 0xff);
        let has_leaf = |u: u32| (u >> 8) & 1 == 1;
        let value = |u: u32| (u & ((1 << 31) - 1)) as usize;

        let mut best = None;
        let mut id = offset(*self.units.first()?);
        for (i, &b) in input.iter().enumerate() {
            id ^= usize::from(b);
            let Some(&unit) = self.units.get(id) else {
                break;
            };
            if label(unit) != u32::from(b) {
                break;
            }
            id ^= offset(unit);
            if has_leaf(unit) {
                let Some(&leaf) = self.units.get(id) else {
                    break;
                };
                best = Some((i + 1, value(leaf)));
            }
        }
        let (len, at) = best?;
        let tail = self.normalized.get(at..)?;
        let end = tail.find('\0').unwrap_or(tail.len());
        Some((len, &tail[..end]))
    }
}

/// sentencepiece's normaliser for one model.
#[derive(Debug, Clone)]
pub struct SpmNormalizer {
    charsmap: Option<Charsmap>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
}

impl SpmNormalizer {
    pub(super) fn new(spec: &NormalizerSpec) -> Result<Self, SpmProblem> {
        let charsmap = if spec.precompiled_charsmap.is_empty() {
            None
        } else {
            Some(Charsmap::parse(&spec.precompiled_charsmap)?)
        };
        Ok(Self {
            charsmap,
            add_dummy_prefix: spec.add_dummy_prefix,
            remove_extra_whitespaces: spec.remove_extra_whitespaces,
            escape_whitespaces: spec.escape_whitespaces,
        })
    }

    /// The replacement of the longest rule matching the start of `input` and the number of
    /// bytes it consumes; one unchanged character when no rule matches.
    fn prefix<'a>(&'a self, input: &'a str) -> (&'a str, usize) {
        if let Some(hit) = self
            .charsmap
            .as_ref()
            .and_then(|m| m.longest_prefix(input.as_bytes()))
            .filter(|&(len, _)| input.is_char_boundary(len))
        {
            return (hit.1, hit.0);
        }
        let n = input.chars().next().map_or(0, char::len_utf8);
        (&input[..n], n)
    }

    /// The text sentencepiece segments for `input`: `"  Hello  world "` → `"▁Hello▁world"`.
    pub fn normalize(&self, input: &str) -> String {
        let mut input = input;
        if self.remove_extra_whitespaces {
            loop {
                let (s, n) = self.prefix(input);
                if s != " " || n == 0 {
                    break;
                }
                input = &input[n..];
            }
        }
        let mut out = String::with_capacity(input.len() + 3);
        if input.is_empty() {
            return out;
        }
        let space = |out: &mut String, c: char| {
            out.push(if self.escape_whitespaces && c == ' ' {
                SPACE
            } else {
                c
            })
        };
        if self.add_dummy_prefix {
            space(&mut out, ' ');
        }
        let mut prev_space = self.remove_extra_whitespaces;
        while !input.is_empty() {
            let (mut s, n) = self.prefix(input);
            if prev_space {
                s = s.trim_start_matches(' ');
            }
            if !s.is_empty() {
                s.chars().for_each(|c| space(&mut out, c));
                prev_space = s.ends_with(' ');
            }
            if !self.remove_extra_whitespaces {
                prev_space = false;
            }
            input = input.get(n.max(1)..).unwrap_or_default();
        }
        if self.remove_extra_whitespaces {
            let last = if self.escape_whitespaces { SPACE } else { ' ' };
            while out.ends_with(last) {
                out.pop();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_normalizer() -> SpmNormalizer {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/tokenizer_spm/sentencepiece.bpe.model"
        );
        let model = super::super::SpmModel::parse(&std::fs::read(path).unwrap()).unwrap();
        SpmNormalizer::new(&model.normalizer).unwrap()
    }

    #[test]
    fn nmt_nfkc_cases() {
        let n = fixture_normalizer();
        for (input, want) in [
            ("", ""),
            ("   ", ""),
            ("a", "▁a"),
            ("  a  b  ", "▁a▁b"),
            ("ｈｅｌｌｏ　ｗｏｒｌｄ", "▁hello▁world"),
            ("ﬁ", "▁fi"),
            ("cafe\u{301}", "▁café"),
            // Longest match, also across a grapheme cluster's marks.
            ("Ａ\u{301}", "▁Á"),
            ("e\u{301}\u{323}", "▁é\u{323}"),
            ("ﬁ\u{301}", "▁fi\u{301}"),
            ("\u{1100}\u{1161}\u{11a8}", "▁각"),
            ("a\tb\nc", "▁a▁b▁c"),
            ("¨a", "▁\u{308}a"),
            // nmt_nfkc maps a raw '▁' to a space.
            ("▁x▁", "▁x"),
            ("a ▁ b", "▁a▁b"),
            ("a\u{1c}b", "▁ab"),
            ("\u{200b}", ""),
        ] {
            assert_eq!(n.normalize(input), want, "{input:?}");
        }
    }

    #[test]
    fn bad_maps_are_errors() {
        for blob in [
            &[][..],
            &[1, 0][..],
            &[8, 0, 0, 0, 1, 2, 3][..],
            &[3, 0, 0, 0, 1, 2, 3][..],
            &[4, 0, 0, 0, 1, 2, 3, 4, 0xff][..],
        ] {
            assert!(matches!(
                Charsmap::parse(blob),
                Err(SpmProblem::BadCharsmap { .. })
            ));
        }
    }

    #[test]
    fn garbage_maps_do_not_panic() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200 {
            let n = 1 + (next() % 64) as usize;
            let mut blob = ((n * 4) as u32).to_le_bytes().to_vec();
            blob.extend((0..n * 4).map(|_| next() as u8));
            blob.extend(b"x\0yz\0");
            let spec = NormalizerSpec {
                precompiled_charsmap: blob,
                ..NormalizerSpec::default()
            };
            let norm = SpmNormalizer::new(&spec).unwrap();
            for s in ["abc", "é ü", "人\u{301}", "\0\u{1}", "▁ ▁"] {
                let _ = norm.normalize(s);
            }
        }
    }
}
