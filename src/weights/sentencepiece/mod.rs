//! SentencePiece model files (`sentencepiece.bpe.model`) and the XLM-RoBERTa tokenizer built
//! from them, reproducing transformers' *slow* `XLMRobertaTokenizer` (4.31, as EVF-SAM loads
//! it with `use_fast=False`) with the unigram model of the `tokenizers` crate.
//!
//! - this file: the serialized `sentencepiece.ModelProto`, read by [`SpmModel::parse`] with a
//!   small protobuf reader (only the fields a unigram tokenizer needs; no protobuf dependency);
//! - [`normalizer`]: sentencepiece's own normaliser (precompiled character map, white space);
//! - [`xlmr`]: the tokenizer: [`xlmr_tokenizer`] (a `tokenizers::Tokenizer`) and
//!   [`XlmrTokenizer`] / [`load_xlmr_dir`] (exact ids, see there).

pub mod normalizer;
pub mod xlmr;

pub use normalizer::SpmNormalizer;
pub use xlmr::{load_xlmr_dir, xlmr_tokenizer, XlmrTokenizer, ADDED_TOKENS_FILE, MODEL_FILE};

use crate::error::{Error, Result, SpmProblem};

// ------------------------------------------------------------------ the model

/// A piece's type in the model (`ModelProto.SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
    /// A value this reader does not know.
    Other(i32),
}

impl PieceKind {
    fn from_proto(v: i32) -> Self {
        match v {
            1 => PieceKind::Normal,
            2 => PieceKind::Unknown,
            3 => PieceKind::Control,
            4 => PieceKind::UserDefined,
            5 => PieceKind::Unused,
            6 => PieceKind::Byte,
            v => PieceKind::Other(v),
        }
    }
}

/// The training algorithm (`TrainerSpec.ModelType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    Unigram,
    Bpe,
    Word,
    Char,
    Other(i32),
}

impl ModelType {
    fn from_proto(v: i32) -> Self {
        match v {
            1 => ModelType::Unigram,
            2 => ModelType::Bpe,
            3 => ModelType::Word,
            4 => ModelType::Char,
            v => ModelType::Other(v),
        }
    }

    fn proto(self) -> i32 {
        match self {
            ModelType::Unigram => 1,
            ModelType::Bpe => 2,
            ModelType::Word => 3,
            ModelType::Char => 4,
            ModelType::Other(v) => v,
        }
    }
}

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq)]
pub struct SpmPiece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceKind,
}

/// The trainer options that matter at encoding time (proto defaults when absent).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerSpec {
    pub model_type: ModelType,
    pub unk_id: i32,
    pub bos_id: i32,
    pub eos_id: i32,
    pub pad_id: i32,
    pub byte_fallback: bool,
    pub treat_whitespace_as_suffix: bool,
}

impl Default for TrainerSpec {
    fn default() -> Self {
        Self {
            model_type: ModelType::Unigram,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
            byte_fallback: false,
            treat_whitespace_as_suffix: false,
        }
    }
}

/// The normaliser of the model (proto defaults when absent).
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizerSpec {
    /// The rule set's name (`nmt_nfkc`, `identity`, …); informative only.
    pub name: String,
    /// The compiled character map (empty: no character normalisation).
    pub precompiled_charsmap: Vec<u8>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    fn default() -> Self {
        Self {
            name: String::new(),
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

/// The parts of a `sentencepiece.ModelProto` a tokenizer needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpmModel {
    pub pieces: Vec<SpmPiece>,
    pub trainer: TrainerSpec,
    pub normalizer: NormalizerSpec,
}

impl SpmModel {
    /// Reads a serialized model; fields it does not need are skipped.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        Self::parse_proto(bytes).map_err(|problem| Error::SentencePiece {
            what: "sentencepiece model".into(),
            problem,
        })
    }

    fn parse_proto(bytes: &[u8]) -> std::result::Result<Self, SpmProblem> {
        let mut model = SpmModel::default();
        let mut r = Reader::new(bytes, 0);
        while let Some((field, v)) = r.field()? {
            match field {
                1 => model.pieces.push(parse_piece(v.message("pieces")?)?),
                2 => parse_trainer(v.message("trainer_spec")?, &mut model.trainer)?,
                3 => parse_normalizer(v.message("normalizer_spec")?, &mut model.normalizer)?,
                _ => {}
            }
        }
        Ok(model)
    }
}

// ------------------------------------------------------------------ protobuf wire format

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// A field's value as stored on the wire; `Len` keeps the absolute offset of its payload.
enum Value<'a> {
    Varint(u64),
    Fixed64,
    Len(&'a [u8], usize),
    Fixed32([u8; 4]),
}

impl<'a> Value<'a> {
    fn wire(&self) -> u8 {
        match self {
            Value::Varint(_) => VARINT,
            Value::Fixed64 => FIXED64,
            Value::Len(..) => LEN,
            Value::Fixed32(_) => FIXED32,
        }
    }

    fn wrong(&self, field: &'static str, expected: u8) -> SpmProblem {
        SpmProblem::WrongWireType {
            field,
            expected,
            got: self.wire(),
        }
    }

    fn varint(&self, field: &'static str) -> std::result::Result<u64, SpmProblem> {
        match self {
            Value::Varint(v) => Ok(*v),
            _ => Err(self.wrong(field, VARINT)),
        }
    }

    /// `int32` and enums: the low 32 bits of the (sign-extended) varint.
    fn int32(&self, field: &'static str) -> std::result::Result<i32, SpmProblem> {
        Ok(self.varint(field)? as i32)
    }

    fn boolean(&self, field: &'static str) -> std::result::Result<bool, SpmProblem> {
        Ok(self.varint(field)? != 0)
    }

    fn float(&self, field: &'static str) -> std::result::Result<f32, SpmProblem> {
        match self {
            Value::Fixed32(b) => Ok(f32::from_le_bytes(*b)),
            _ => Err(self.wrong(field, FIXED32)),
        }
    }

    fn bytes(&self, field: &'static str) -> std::result::Result<&'a [u8], SpmProblem> {
        match self {
            Value::Len(b, _) => Ok(b),
            _ => Err(self.wrong(field, LEN)),
        }
    }

    fn string(&self, field: &'static str) -> std::result::Result<String, SpmProblem> {
        let b = self.bytes(field)?;
        String::from_utf8(b.to_vec()).map_err(|_| SpmProblem::NotUtf8 { field })
    }

    fn message(&self, field: &'static str) -> std::result::Result<Reader<'a>, SpmProblem> {
        match self {
            Value::Len(b, offset) => Ok(Reader::new(b, *offset)),
            _ => Err(self.wrong(field, LEN)),
        }
    }
}

/// Reads the fields of one message; `base` is the message's offset in the whole file.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], SpmProblem> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(SpmProblem::Truncated {
            offset: self.base + self.buf.len(),
        })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn varint(&mut self) -> std::result::Result<u64, SpmProblem> {
        let start = self.base + self.pos;
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(SpmProblem::BadVarint { offset: start })
    }

    /// The next field number and value, or `None` at the end of the message.
    fn field(&mut self) -> std::result::Result<Option<(u64, Value<'a>)>, SpmProblem> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let offset = self.base + self.pos;
        let key = self.varint()?;
        let wire_type = (key & 7) as u8;
        let value = match wire_type {
            VARINT => Value::Varint(self.varint()?),
            FIXED64 => {
                self.take(8)?;
                Value::Fixed64
            }
            LEN => {
                let n = self.varint()?;
                let n = usize::try_from(n).map_err(|_| SpmProblem::Truncated {
                    offset: self.base + self.buf.len(),
                })?;
                let at = self.base + self.pos;
                Value::Len(self.take(n)?, at)
            }
            FIXED32 => {
                let b = self.take(4)?;
                Value::Fixed32([b[0], b[1], b[2], b[3]])
            }
            _ => return Err(SpmProblem::BadWireType { wire_type, offset }),
        };
        Ok(Some((key >> 3, value)))
    }
}

fn parse_piece(mut r: Reader<'_>) -> std::result::Result<SpmPiece, SpmProblem> {
    let mut p = SpmPiece {
        piece: String::new(),
        score: 0.0,
        kind: PieceKind::Normal,
    };
    while let Some((field, v)) = r.field()? {
        match field {
            1 => p.piece = v.string("piece")?,
            2 => p.score = v.float("score")?,
            3 => p.kind = PieceKind::from_proto(v.int32("type")?),
            _ => {}
        }
    }
    Ok(p)
}

fn parse_trainer(mut r: Reader<'_>, t: &mut TrainerSpec) -> std::result::Result<(), SpmProblem> {
    while let Some((field, v)) = r.field()? {
        match field {
            3 => t.model_type = ModelType::from_proto(v.int32("model_type")?),
            24 => t.treat_whitespace_as_suffix = v.boolean("treat_whitespace_as_suffix")?,
            35 => t.byte_fallback = v.boolean("byte_fallback")?,
            40 => t.unk_id = v.int32("unk_id")?,
            41 => t.bos_id = v.int32("bos_id")?,
            42 => t.eos_id = v.int32("eos_id")?,
            43 => t.pad_id = v.int32("pad_id")?,
            _ => {}
        }
    }
    Ok(())
}

fn parse_normalizer(
    mut r: Reader<'_>,
    n: &mut NormalizerSpec,
) -> std::result::Result<(), SpmProblem> {
    while let Some((field, v)) = r.field()? {
        match field {
            1 => n.name = v.string("name")?,
            2 => n.precompiled_charsmap = v.bytes("precompiled_charsmap")?.to_vec(),
            3 => n.add_dummy_prefix = v.boolean("add_dummy_prefix")?,
            4 => n.remove_extra_whitespaces = v.boolean("remove_extra_whitespaces")?,
            5 => n.escape_whitespaces = v.boolean("escape_whitespaces")?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/tokenizer_spm/sentencepiece.bpe.model"
        );
        std::fs::read(path).unwrap()
    }

    fn problem(bytes: &[u8]) -> Option<SpmProblem> {
        SpmModel::parse_proto(bytes).err()
    }

    #[test]
    fn reads_the_fixture_model() {
        let m = SpmModel::parse(&fixture()).unwrap();
        assert_eq!(m.pieces.len(), 4000);
        let kinds: Vec<_> = m.pieces[..4].iter().map(|p| p.kind).collect();
        let want = [PieceKind::Unknown, PieceKind::Control, PieceKind::Control];
        assert_eq!(kinds[..3], want);
        assert_eq!(kinds[3], PieceKind::Normal);
        assert_eq!(m.pieces[1].piece, "<s>");
        assert!(m.pieces[3..].iter().all(|p| p.score < 0.0));
        assert_eq!(m.trainer.model_type, ModelType::Unigram);
        assert_eq!(
            (m.trainer.unk_id, m.trainer.bos_id, m.trainer.eos_id),
            (0, 1, 2)
        );
        assert_eq!(m.trainer.pad_id, -1);
        assert!(!m.trainer.byte_fallback);
        assert_eq!(m.normalizer.name, "nmt_nfkc");
        assert!(m.normalizer.precompiled_charsmap.len() > 1000);
        assert!(m.normalizer.add_dummy_prefix && m.normalizer.remove_extra_whitespaces);
        assert!(m.normalizer.escape_whitespaces);
    }

    #[test]
    fn later_messages_merge_into_earlier_ones() {
        let mut bytes = fixture();
        // trainer_spec { model_type: BPE }, as a second occurrence of field 2.
        bytes.extend([0x12, 0x02, 0x18, 0x02]);
        let m = SpmModel::parse(&bytes).unwrap();
        assert_eq!(m.trainer.model_type, ModelType::Bpe);
        assert_eq!(m.trainer.unk_id, 0);
    }

    #[test]
    fn typed_errors_on_malformed_input() {
        assert_eq!(SpmModel::parse_proto(&[]).unwrap().pieces.len(), 0);
        // A length running past the end.
        assert_eq!(
            problem(&[0x0a, 0x05, 0x01]),
            Some(SpmProblem::Truncated { offset: 3 })
        );
        // A key cut inside its varint.
        assert_eq!(problem(&[0x80]), Some(SpmProblem::Truncated { offset: 1 }));
        assert_eq!(
            problem(&[0xff; 11]),
            Some(SpmProblem::BadVarint { offset: 0 })
        );
        assert_eq!(
            problem(&[0x0b]),
            Some(SpmProblem::BadWireType {
                wire_type: 3,
                offset: 0
            })
        );
        // pieces as a varint.
        assert!(matches!(
            problem(&[0x08, 0x01]),
            Some(SpmProblem::WrongWireType {
                field: "pieces",
                ..
            })
        ));
        // pieces { piece: "\xff" }.
        assert_eq!(
            problem(&[0x0a, 0x03, 0x0a, 0x01, 0xff]),
            Some(SpmProblem::NotUtf8 { field: "piece" })
        );
        // pieces { score as a varint }.
        assert!(matches!(
            problem(&[0x0a, 0x02, 0x10, 0x01]),
            Some(SpmProblem::WrongWireType { field: "score", .. })
        ));
        // Unknown fields of every wire type are skipped.
        let m = SpmModel::parse_proto(&[
            0x30, 0x01, 0x39, 0, 0, 0, 0, 0, 0, 0, 0, 0x3a, 0x00, 0x3d, 0, 0, 0, 0,
        ])
        .unwrap();
        assert!(m.pieces.is_empty());
        let e = SpmModel::parse(&[0x80]).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    #[test]
    fn truncated_and_random_bytes_never_panic() {
        let model = fixture();
        // Every prefix of the first pieces, and coarser cuts through the rest (the
        // normaliser spec with its character map comes last).
        let cuts = (0..2000).chain((2000..model.len()).step_by(997));
        for n in cuts {
            let r = SpmModel::parse_proto(&model[..n]);
            if let Err(p) = r {
                assert!(matches!(p, SpmProblem::Truncated { .. }), "{n}: {p:?}");
            }
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..3000 {
            let len = (next() % 96) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 {
                // Flip bytes of the real model instead, which reaches deeper fields.
                bytes = model[..model.len().min(4096)].to_vec();
                for _ in 0..4 {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] = next() as u8;
                }
            }
            let _ = SpmModel::parse(&bytes);
        }
    }
}
