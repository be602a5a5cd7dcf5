//! The XLM-RoBERTa tokenizer of a sentencepiece model, as transformers 4.31's slow
//! `XLMRobertaTokenizer` builds it:
//! - **ids**: fairseq's layout. `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, piece `i` (`i ≥ 3`) of
//!   the model = `i + 1`, `<mask>` = `len(pieces) + 1`, then the tokens of `added_tokens.json`.
//! - **added tokens**: split out of the raw text first. `<s>`, `</s>`, `<unk>`, `<pad>` and
//!   the added tokens are plain strings to 4.31, which strips the white space on both sides of
//!   them; `<mask>` is an `AddedToken(lstrip=True)` and strips only its left. Every remaining
//!   chunk is normalised and segmented on its own (each gets a dummy-prefix `▁`).
//! - **segmentation**: sentencepiece's unigram Viterbi over the whole normalised chunk; the
//!   special entries never match inside text.
//! - `<s> … </s>` around the ids (`<s> A </s></s> B </s>` for pairs).
//!
//! [`xlmr_tokenizer`] expresses all of it as a `tokenizers::Tokenizer`, exactly but for one
//! stage: its `Precompiled` normaliser is not sentencepiece's for combining marks and Hangul
//! jamo (see [`super::normalizer`]), which the `tokenizers` crate has no way to replace.
//! [`XlmrTokenizer`] is the thin wrapper that is exact: it splits the added tokens itself,
//! runs [`SpmNormalizer`] on each chunk and only borrows the tokenizer's unigram model.

use std::path::Path;

use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::unigram::Unigram;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{NormalizerWrapper, Precompiled, Prepend, Replace, Sequence};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Model, Tokenizer};

use super::{ModelType, PieceKind, SpmModel, SpmNormalizer};
use crate::error::{Error, Result, SpmProblem};
use crate::io::read::{read_capped, read_capped_to_string, MAX_CONFIG_BYTES, MAX_TOKENIZER_BYTES};

/// The model file of an XLM-R style tokenizer directory.
pub const MODEL_FILE: &str = "sentencepiece.bpe.model";
/// The optional file of tokens added after `<mask>` (`{"token": id}`).
pub const ADDED_TOKENS_FILE: &str = "added_tokens.json";

/// fairseq's special tokens, at ids 0..4; `<mask>` follows the pieces.
const FAIRSEQ: [&str; 4] = ["<s>", "<pad>", "</s>", "<unk>"];
const BOS_ID: u32 = 0;
const EOS_ID: u32 = 2;
const UNK_ID: u32 = 3;
const MASK: &str = "<mask>";
/// The score of the special entries in the unigram vocabulary. sentencepiece keeps control
/// pieces out of its lattice, so text that normalises to `<s>` (`＜s＞`) is still cut into
/// ordinary pieces; `tokenizers` has no piece types, so the entries are kept out of reach by
/// a score no Viterbi comparison can prefer.
const SPECIAL_SCORE: f64 = -1e12;

/// Builds transformers 4.31's slow `XLMRobertaTokenizer` as a `tokenizers::Tokenizer` from a
/// sentencepiece model and the tokens of its `added_tokens.json` (`(token, id)`, ids from
/// `len(pieces) + 2` on). `encode(text, true)` gives the slow `tokenizer(text)["input_ids"]`
/// except for the normalisation of combining marks and Hangul jamo (module docs); use
/// [`XlmrTokenizer`] for exact ids.
///
/// The unigram model's minimum score is set by hand (see `SPECIAL_SCORE`), so the result
/// must not be round-tripped through `tokenizer.json`.
pub fn xlmr_tokenizer(model: &[u8], added_tokens: &[(String, u32)]) -> Result<Tokenizer> {
    XlmrTokenizer::new(model, added_tokens).map(XlmrTokenizer::into_tokenizer)
}

/// Loads `dir/sentencepiece.bpe.model` and, when present, `dir/added_tokens.json`.
pub fn load_xlmr_dir(dir: &Path) -> Result<XlmrTokenizer> {
    if !dir.exists() {
        return Err(Error::FileNotFound {
            path: dir.to_path_buf(),
        });
    }
    if !dir.is_dir() {
        return Err(Error::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let model_path = dir.join(MODEL_FILE);
    let bytes = read_capped(&model_path, MAX_TOKENIZER_BYTES, "sentencepiece model")?;
    let added_path = dir.join(ADDED_TOKENS_FILE);
    let mut added = Vec::new();
    if added_path.exists() {
        let text = read_capped_to_string(&added_path, MAX_CONFIG_BYTES, "added tokens")?;
        let map: std::collections::BTreeMap<String, u32> =
            serde_json::from_str(&text).map_err(|source| Error::Json {
                path: added_path.clone(),
                source,
            })?;
        added.extend(map);
    }
    XlmrTokenizer::with_names(
        &bytes,
        &added,
        &model_path.display().to_string(),
        &added_path.display().to_string(),
    )
}

/// A token split out of the raw text, and which neighbours it strips of white space.
#[derive(Debug, Clone)]
struct SplitToken {
    content: String,
    id: u32,
    strip_left: bool,
    strip_right: bool,
}

/// The exact slow tokenizer: the added-token split and sentencepiece's normaliser done here,
/// the unigram segmentation by the `tokenizers` model of [`XlmrTokenizer::tokenizer`].
#[derive(Clone)]
pub struct XlmrTokenizer {
    tokenizer: Tokenizer,
    normalizer: SpmNormalizer,
    split: Vec<SplitToken>,
}

impl std::fmt::Debug for XlmrTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XlmrTokenizer")
            .field("vocab_size", &self.tokenizer.get_vocab_size(true))
            .field(
                "split_tokens",
                &self.split.iter().map(|t| &t.content).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A part of the raw text: a chunk to segment, or the index of a split token.
enum Part<'a> {
    Text(&'a str),
    Token(usize),
}

impl XlmrTokenizer {
    /// From the bytes of a sentencepiece model and the tokens of its `added_tokens.json`.
    pub fn new(model: &[u8], added_tokens: &[(String, u32)]) -> Result<Self> {
        Self::with_names(model, added_tokens, "sentencepiece model", "added tokens")
    }

    fn with_names(
        model: &[u8],
        added: &[(String, u32)],
        model_name: &str,
        added_name: &str,
    ) -> Result<Self> {
        let model_err = |problem| Error::SentencePiece {
            what: model_name.to_string(),
            problem,
        };
        let spm = SpmModel::parse_proto(model).map_err(model_err)?;
        let mut tokenizer = build(&spm).map_err(model_err)?;
        let normalizer = SpmNormalizer::new(&spm.normalizer).map_err(model_err)?;
        let mut split =
            add_tokens(&mut tokenizer, &spm, added).map_err(|problem| Error::SentencePiece {
                what: added_name.to_string(),
                problem,
            })?;
        let mask = spm.pieces.len() as u32 + 1;
        split.extend(FAIRSEQ.iter().zip(0..).map(|(s, id)| SplitToken {
            content: s.to_string(),
            id,
            strip_left: true,
            strip_right: true,
        }));
        split.push(SplitToken {
            content: MASK.to_string(),
            id: mask,
            strip_left: true,
            strip_right: false,
        });
        Ok(Self {
            tokenizer,
            normalizer,
            split,
        })
    }

    /// The tokens matched in raw text before segmentation (`<s>`, `<pad>`, `</s>`, `<unk>`,
    /// `<mask>` and the added tokens), with their ids.
    pub fn split_tokens(&self) -> impl Iterator<Item = (&str, u32)> {
        self.split.iter().map(|t| (t.content.as_str(), t.id))
    }

    /// The ids of the slow `tokenizer(text)["input_ids"]` (`<s> … </s>` when
    /// `add_special_tokens`).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let ModelWrapper::Unigram(unigram) = self.tokenizer.get_model() else {
            return Err(Error::Tokenizer {
                reason: "the XLM-R tokenizer lost its unigram model".into(),
            });
        };
        let mut ids = Vec::new();
        if add_special_tokens {
            ids.push(BOS_ID);
        }
        for part in self.split(text) {
            match part {
                Part::Token(k) => ids.push(self.split[k].id),
                Part::Text(chunk) => {
                    let normalized = self.normalizer.normalize(chunk);
                    if normalized.is_empty() {
                        continue;
                    }
                    let tokens = unigram
                        .tokenize(&normalized)
                        .map_err(|e| Error::Tokenizer {
                            reason: e.to_string(),
                        })?;
                    ids.extend(tokens.iter().map(|t| t.id));
                }
            }
        }
        if add_special_tokens {
            ids.push(EOS_ID);
        }
        Ok(ids)
    }

    /// The raw text cut at the split tokens (leftmost, longest), with the white space the
    /// tokens eat removed from their neighbours as 4.31's `tokenize()` does (Python's
    /// `str.strip` white space).
    fn split<'a>(&self, text: &'a str) -> Vec<Part<'a>> {
        let mut parts = Vec::new();
        let (mut start, mut i) = (0, 0);
        while let Some(c) = text[i..].chars().next() {
            let hit = (0..self.split.len())
                .filter(|&k| text[i..].starts_with(self.split[k].content.as_str()))
                .max_by_key(|&k| self.split[k].content.len());
            match hit {
                Some(k) => {
                    if start < i {
                        parts.push(Part::Text(&text[start..i]));
                    }
                    parts.push(Part::Token(k));
                    i += self.split[k].content.len();
                    start = i;
                }
                None => i += c.len_utf8(),
            }
        }
        if start < text.len() {
            parts.push(Part::Text(&text[start..]));
        }
        for at in 0..parts.len() {
            let Part::Token(k) = parts[at] else { continue };
            let tok = &self.split[k];
            if tok.strip_right {
                if let Some(Part::Text(s)) = parts.get_mut(at + 1) {
                    *s = s.trim_start_matches(py_isspace);
                }
            }
            if tok.strip_left && at > 0 {
                if let Some(Part::Text(s)) = parts.get_mut(at - 1) {
                    *s = s.trim_end_matches(py_isspace);
                }
            }
        }
        parts
    }

    /// sentencepiece's normalised form of a chunk (`▁` for spaces, dummy prefix included).
    pub fn normalize(&self, chunk: &str) -> String {
        self.normalizer.normalize(chunk)
    }

    /// The `tokenizers::Tokenizer` of [`xlmr_tokenizer`]: vocabulary, decoding, and encoding
    /// but for the normaliser difference of the module docs.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn into_tokenizer(self) -> Tokenizer {
        self.tokenizer
    }
}

/// Python's `str.isspace`, which `str.strip()` uses (Rust's `char::is_whitespace` lacks the
/// information separators U+001C..U+001F).
fn py_isspace(c: char) -> bool {
    matches!(c, '\t'..='\r' | '\u{1c}'..='\u{20}' | '\u{85}' | '\u{a0}' | '\u{1680}')
        || matches!(
            c,
            '\u{2000}'..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}'
        )
        || matches!(c, '\u{205f}' | '\u{3000}')
}

/// Checks that the model is one this tokenizer reproduces exactly.
fn check(spm: &SpmModel) -> std::result::Result<(), SpmProblem> {
    let t = &spm.trainer;
    let n = &spm.normalizer;
    if t.model_type != ModelType::Unigram {
        return Err(SpmProblem::NotUnigram {
            model_type: t.model_type.proto(),
        });
    }
    let unsupported = |what: &str| {
        Err(SpmProblem::Unsupported {
            what: what.to_string(),
        })
    };
    if t.byte_fallback {
        return unsupported("byte_fallback");
    }
    if t.treat_whitespace_as_suffix {
        return unsupported("treat_whitespace_as_suffix");
    }
    if !n.escape_whitespaces {
        return unsupported("escape_whitespaces = false");
    }
    if !n.remove_extra_whitespaces {
        return unsupported("remove_extra_whitespaces = false");
    }
    if spm.pieces.is_empty() {
        return Err(SpmProblem::NoPieces);
    }
    let layout = |reason: String| Err(SpmProblem::Layout { reason });
    if (t.unk_id, t.bos_id, t.eos_id) != (0, 1, 2) || spm.pieces.len() < 4 {
        return layout(format!(
            "expected <unk>, <s>, </s> at ids 0, 1, 2 and more pieces, got unk_id {}, bos_id {}, \
             eos_id {} and {} pieces",
            t.unk_id,
            t.bos_id,
            t.eos_id,
            spm.pieces.len()
        ));
    }
    let kinds = [PieceKind::Unknown, PieceKind::Control, PieceKind::Control];
    for (i, (p, want)) in spm.pieces.iter().zip(kinds).enumerate() {
        if p.kind != want {
            return layout(format!("piece {i} {:?} is {:?}", p.piece, p.kind));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (i, p) in spm.pieces.iter().enumerate().skip(3) {
        if p.kind != PieceKind::Normal {
            return unsupported(&format!("piece {i} {:?} of type {:?}", p.piece, p.kind));
        }
        if p.piece.is_empty() || FAIRSEQ.contains(&p.piece.as_str()) || p.piece == MASK {
            return layout(format!(
                "piece {i} {:?} is empty or a special token",
                p.piece
            ));
        }
        if !p.score.is_finite() {
            return layout(format!("piece {i} {:?} has score {}", p.piece, p.score));
        }
        if !seen.insert(p.piece.as_str()) {
            return layout(format!("piece {i} {:?} is repeated", p.piece));
        }
    }
    Ok(())
}

fn build(spm: &SpmModel) -> std::result::Result<Tokenizer, SpmProblem> {
    check(spm)?;
    let err = |e: tokenizers::Error| SpmProblem::Build {
        reason: e.to_string(),
    };

    // fairseq's ids: the four specials, pieces 3.. shifted by one, <mask>.
    let normal = &spm.pieces[3..];
    let mut vocab: Vec<(String, f64)> = FAIRSEQ
        .iter()
        .map(|s| (s.to_string(), SPECIAL_SCORE))
        .collect();
    vocab.extend(normal.iter().map(|p| (p.piece.clone(), f64::from(p.score))));
    vocab.push((MASK.to_string(), SPECIAL_SCORE));
    let mut unigram = Unigram::from(vocab, Some(UNK_ID as usize), false).map_err(err)?;
    // `tokenizers` has no piece types: every entry is a lattice candidate, and the score of an
    // unknown character is the lowest score of the whole vocabulary minus 10. The specials'
    // SPECIAL_SCORE would drag that down, so the minimum is set back to sentencepiece's: the
    // lowest score of the normal pieces (the penalty of 10 is the same in both).
    unigram.min_score = normal
        .iter()
        .map(|p| f64::from(p.score))
        .fold(f64::INFINITY, f64::min);
    let mut tok = Tokenizer::new(ModelWrapper::Unigram(unigram));

    let mut norm: Vec<NormalizerWrapper> = Vec::new();
    if !spm.normalizer.precompiled_charsmap.is_empty() {
        let p = Precompiled::from(&spm.normalizer.precompiled_charsmap).map_err(|e| {
            SpmProblem::BadCharsmap {
                reason: e.to_string(),
            }
        })?;
        // Not sentencepiece's matching for combining marks and jamo (see normalizer.rs);
        // `tokenizers` takes no other normaliser, so `XlmrTokenizer` is the exact path.
        norm.push(p.into());
    }
    // sentencepiece's remove_extra_whitespaces, on the normalised text: runs of ' ' become
    // one, leading ' ' go, and trailing ' ' go together with any '▁' before them (it strips
    // escaped spaces at the end, and a '▁' of the input looks the same by then; nmt_nfkc
    // maps '▁' to ' ' anyway). The added tokens' lstrip/rstrip take Unicode white space, not
    // Python's, which also has U+001C..U+001F; nmt_nfkc deletes those, so no id changes.
    for (pattern, with) in [(" {2,}", " "), ("^ ", ""), ("[ \u{2581}]+$", "")] {
        let r = Replace::new(ReplacePattern::Regex(pattern.into()), with).map_err(err)?;
        norm.push(r.into());
    }
    if spm.normalizer.add_dummy_prefix {
        // Unconditional (unlike Metaspace's `Always`, which skips text already starting
        // with '▁'); `Prepend` leaves an empty chunk empty, as sentencepiece does.
        norm.push(Prepend::new(" ".into()).into());
    }
    tok.with_normalizer(Some(NormalizerWrapper::Sequence(Sequence::new(norm))))
        .map_err(err)?;
    // No split at '▁': sentencepiece runs one lattice over the whole chunk.
    tok.with_pre_tokenizer(Some(Metaspace::new(
        '\u{2581}',
        PrependScheme::Never,
        false,
    )));
    tok.with_decoder(Some(DecoderWrapper::Metaspace(Metaspace::new(
        '\u{2581}',
        PrependScheme::Always,
        true,
    ))));
    let template = TemplateProcessing::builder()
        .try_single("<s> $A </s>")
        .and_then(|b| b.try_pair("<s> $A </s> </s> $B </s>"))
        .map_err(|reason| SpmProblem::Build { reason })?
        .special_tokens(vec![("<s>", BOS_ID), ("</s>", EOS_ID)])
        .build()
        .map_err(|e| SpmProblem::Build {
            reason: e.to_string(),
        })?;
    tok.with_post_processor(Some(template));

    // The slow tokenizer splits these out of the raw text. Plain-string special tokens eat
    // white space on both sides, `<mask>` (an AddedToken with lstrip) only on its left.
    let mut specials: Vec<AddedToken> = FAIRSEQ
        .iter()
        .map(|s| {
            AddedToken::from(*s, true)
                .normalized(false)
                .lstrip(true)
                .rstrip(true)
        })
        .collect();
    specials.push(
        AddedToken::from(MASK, true)
            .normalized(false)
            .lstrip(true)
            .rstrip(false),
    );
    tok.add_special_tokens(specials).map_err(err)?;
    let mask = spm.pieces.len() as u32 + 1;
    for (i, s) in FAIRSEQ.iter().chain([&MASK]).enumerate() {
        let want = if i < 4 { i as u32 } else { mask };
        if tok.token_to_id(s) != Some(want) {
            return Err(SpmProblem::Build {
                reason: format!("{s} did not get id {want}"),
            });
        }
    }
    Ok(tok)
}

/// Adds the tokens of `added_tokens.json` as transformers 4.31 does for a slow tokenizer:
/// consecutive ids after `<mask>`, matched in the raw text, stripping white space on both
/// sides (they are plain strings, not special). Returns them as split tokens.
fn add_tokens(
    tok: &mut Tokenizer,
    spm: &SpmModel,
    added: &[(String, u32)],
) -> std::result::Result<Vec<SplitToken>, SpmProblem> {
    let mut sorted: Vec<&(String, u32)> = added.iter().collect();
    sorted.sort_by_key(|(_, id)| *id);
    let first = spm.pieces.len() as u32 + 2;
    let mut seen = std::collections::HashSet::new();
    for (i, (token, id)) in sorted.iter().enumerate() {
        let expected = first + i as u32;
        if *id != expected {
            return Err(SpmProblem::AddedTokenId {
                token: token.clone(),
                got: *id,
                expected,
            });
        }
        if token.is_empty() || tok.token_to_id(token).is_some() || !seen.insert(token.as_str()) {
            return Err(SpmProblem::AddedTokenClash {
                token: token.clone(),
            });
        }
    }
    let tokens = sorted.iter().map(|(t, _)| {
        AddedToken::from(t.clone(), false)
            .normalized(false)
            .lstrip(true)
            .rstrip(true)
    });
    tok.add_tokens(tokens).map_err(|e| SpmProblem::Build {
        reason: e.to_string(),
    })?;
    let mut split = Vec::with_capacity(sorted.len());
    for (token, id) in sorted {
        if tok.token_to_id(token) != Some(*id) {
            return Err(SpmProblem::Build {
                reason: format!("added token {token:?} did not get id {id}"),
            });
        }
        split.push(SplitToken {
            content: token.clone(),
            id: *id,
            strip_left: true,
            strip_right: true,
        });
    }
    Ok(split)
}
