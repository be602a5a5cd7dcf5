//! The crate's error type: one enum, each variant naming what went wrong and with what.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in `unires`.
///
/// Variants carry the file, tensor, shape, size or feature involved so that the one-line
/// `Display` message is enough to act on. Variants are added as the crate grows, hence
/// `#[non_exhaustive]`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---------------------------------------------------------------- files
    /// A path that should exist does not.
    #[error("{}: no such file or directory", path.display())]
    FileNotFound { path: PathBuf },

    /// A directory was given where a file was expected.
    #[error("{}: is a directory, expected a file", path.display())]
    IsADirectory { path: PathBuf },

    /// A file was given where a directory was expected.
    #[error("{}: is not a directory", path.display())]
    NotADirectory { path: PathBuf },

    /// A FIFO, device or socket was given where a regular file was expected (refused without
    /// reading from it).
    #[error("{}: is a {kind}, expected a regular file", path.display())]
    NotARegularFile { path: PathBuf, kind: &'static str },

    /// A file or an in-memory input over its documented size cap (checked before it is read
    /// whole; see `io::read`).
    #[error("{what}: the {kind} is {} the limit of {max} bytes", size_text(size))]
    TooLarge {
        what: String,
        kind: &'static str,
        /// The size, when known before reading (`None`: the read passed the cap).
        size: Option<u64>,
        max: u64,
    },

    /// Any other I/O failure on a named path.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A JSON file that does not parse or does not have the expected shape.
    #[error("{}: malformed JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    // ---------------------------------------------------------------- images
    /// The image bytes could not be decoded (truncated or corrupt file).
    #[error("{what}: cannot decode image: {reason}")]
    BadImage { what: String, reason: String },

    /// The file is not in an image format this build can read.
    #[error("{what}: unsupported image format (supported: {supported})")]
    UnsupportedImageFormat {
        what: String,
        supported: &'static str,
    },

    /// The image is smaller than the model can use.
    #[error("image is {width}x{height}; both sides must be at least {min} pixels")]
    ImageTooSmall { width: u32, height: u32, min: u32 },

    /// The image is larger than the documented limit.
    #[error("image is {width}x{height} = {pixels} pixels; the limit is {max_pixels} pixels (and {max_side} per side)")]
    ImageTooLarge {
        width: u32,
        height: u32,
        pixels: u64,
        max_pixels: u64,
        max_side: u32,
    },

    /// A command needs an argument that was not given (e.g. `--root` for a benchmark).
    #[error("missing argument: {what}")]
    MissingArgument { what: &'static str },

    // ---------------------------------------------------------------- queries
    /// The referring expression is empty or only white space.
    #[error("the expression is empty")]
    EmptyExpression,

    /// The referring expression is longer than the documented limit.
    #[error("the expression has {chars} characters; the limit is {max}")]
    ExpressionTooLong { chars: usize, max: usize },

    /// The referring expression contains one of the model's special tokens.
    #[error("the expression contains the special token {token:?}")]
    ExpressionHasSpecialToken { token: String },

    /// The expression needs more tokens than the model's context allows.
    #[error("the prompt needs {tokens} tokens; the model's context holds {max}")]
    PromptTooLong { tokens: usize, max: usize },

    /// A granularity name that is not one of `part`, `object`, `multi`, `auto`.
    #[error("unknown granularity {got:?} (expected one of: part, object, multi, auto)")]
    UnknownGranularity { got: String },

    /// A proposal box that cannot be used: a coordinate is not finite, or it is inverted
    /// (`index` counts the objects first, then the parts). Boxes outside the image are
    /// clipped, not refused (`Proposals::clip_to`).
    #[error("box {index} [{x1}, {y1}, {x2}, {y2}]: {reason} (image is {width}x{height})")]
    BadBox {
        index: usize,
        x1: f32,
        y1: f32,
        x2: f32,
        y2: f32,
        width: u32,
        height: u32,
        reason: BoxProblem,
    },

    /// More proposals than the model accepts.
    #[error("{count} {kind} proposals given; the model accepts at most {max}")]
    TooManyProposals {
        kind: &'static str,
        count: usize,
        max: usize,
    },

    // ---------------------------------------------------------------- masks and RLE
    /// A COCO RLE object that cannot be decoded.
    #[error("bad RLE: {reason}")]
    BadRle { reason: String },

    /// Two masks (or a mask and an image) of different sizes were combined.
    #[error("size mismatch: {what} is {got_h}x{got_w}, expected {expected_h}x{expected_w}")]
    SizeMismatch {
        what: String,
        expected_h: usize,
        expected_w: usize,
        got_h: usize,
        got_w: usize,
    },

    // ---------------------------------------------------------------- models and weights
    /// A checkpoint of a model family this build cannot run.
    #[error("model family {family:?}: {reason}")]
    UnsupportedFamily {
        family: &'static str,
        reason: &'static str,
    },

    /// A granularity this model (or this checkpoint of it) cannot segment.
    #[error("the {family} model cannot segment at granularity {granularity}: {reason}")]
    UnsupportedGranularity {
        family: &'static str,
        granularity: &'static str,
        reason: &'static str,
    },

    /// A model family that has no quantised path.
    #[error("the {family} model cannot be quantised: {reason}")]
    UnsupportedQuantization {
        family: &'static str,
        reason: &'static str,
    },

    /// An image encoded by one model family was given to another.
    #[error("an image encoded by the {got} model was given to the {expected} model")]
    WrongFamily {
        expected: &'static str,
        got: &'static str,
    },

    /// No model weights are available for the requested operation.
    #[error("no model available: {reason}")]
    NoModel { reason: String },

    /// A tensor the model needs is not in the checkpoint.
    #[error("missing tensor {name:?}{}", in_file(file))]
    MissingTensor { name: String, file: Option<PathBuf> },

    /// A tensor in the checkpoint has the wrong shape.
    #[error("tensor {name:?}: expected shape {expected:?}, got {got:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },

    /// A tensor in the checkpoint has a dtype we cannot use.
    #[error("tensor {name:?}: dtype {got} is not supported (expected {expected})")]
    DTypeMismatch {
        name: String,
        expected: String,
        got: String,
    },

    /// A checkpoint holds tensors that the configuration does not account for.
    #[error("{}: {count} unexpected tensor(s), first {first:?}", file.display())]
    UnexpectedTensors {
        file: PathBuf,
        count: usize,
        first: String,
    },

    /// A safetensors file that cannot be read (truncated, corrupt header, …).
    #[error("{}: bad safetensors file: {reason}", path.display())]
    Safetensors { path: PathBuf, reason: String },

    /// A checkpoint file that cannot be read as any format we know (bad pickle, unknown
    /// extension, …).
    #[error("{}: {reason}", path.display())]
    BadCheckpoint { path: PathBuf, reason: String },

    /// A component checkpoint whose tensor names match none of the published layouts we
    /// import.
    #[error("{}: not a known {component} layout: {reason}", path.display())]
    UnknownLayout {
        path: PathBuf,
        component: &'static str,
        reason: String,
    },

    /// `config.json` is invalid or contradicts itself or the weights.
    #[error("{what}: bad configuration: {reason}")]
    Config { what: String, reason: String },

    /// `config.json` declares a schema version this build does not read.
    #[error("config version {got} is not supported (this build reads version {supported})")]
    UnsupportedConfigVersion { got: u32, supported: u32 },

    /// The tokenizer could not be loaded or used.
    #[error("tokenizer: {reason}")]
    Tokenizer { reason: String },

    /// The tokenizer lacks a special token the model needs.
    #[error("tokenizer has no special token {token:?}")]
    MissingSpecialToken { token: String },

    /// A SentencePiece model file (or the added-tokens file next to it) that cannot be read,
    /// or that describes a tokenizer this build does not reproduce.
    #[error("{what}: {problem}")]
    SentencePiece { what: String, problem: SpmProblem },

    /// A model hub download failed.
    #[error("hub repository {repo:?}: {reason}")]
    Hub { repo: String, reason: String },

    /// Something needs a cargo feature this build was compiled without.
    #[error("{what} needs the `{feature}` cargo feature (rebuild with `--features {feature}`)")]
    FeatureDisabled {
        feature: &'static str,
        what: &'static str,
    },

    /// An operation was given a tensor of the wrong rank/shape (programming or input error).
    #[error("{op}: {reason}")]
    BadShape { op: &'static str, reason: String },

    /// The inputs of one operation live on different devices.
    #[error("{op}: inputs on different devices ({first} and {second})")]
    DeviceMismatch {
        op: &'static str,
        first: String,
        second: String,
    },

    /// A region of interest given to ROI Align that does not fit the feature map.
    #[error("roi_align: roi {index}: {problem}")]
    BadRoi { index: usize, problem: RoiProblem },

    // ---------------------------------------------------------------- datasets
    /// A dataset file is missing or malformed.
    #[error("{}: {reason}", path.display())]
    Dataset { path: PathBuf, reason: String },

    /// A dataset split that does not exist.
    #[error("unknown split {split:?} for {dataset} (known: {known})")]
    UnknownSplit {
        dataset: String,
        split: String,
        known: String,
    },

    /// A dataset name that is not one of the supported benchmarks.
    #[error("unknown dataset {name:?} (known: {known})")]
    UnknownDataset { name: String, known: String },

    // ---------------------------------------------------------------- wrapped
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// What is wrong with a proposal box: an error for `NotFinite` and `Inverted`
/// ([`Error::BadBox`]); for `OutsideImage` and `Empty`, why clipping to the image dropped the
/// box (`types::DroppedBox`, not an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BoxProblem {
    /// A coordinate is NaN or infinite.
    NotFinite,
    /// `x2 < x1` or `y2 < y1`.
    Inverted,
    /// The box lies outside the image (nothing is left after clipping).
    OutsideImage,
    /// The box has zero width or height.
    Empty,
}

impl std::fmt::Display for BoxProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BoxProblem::NotFinite => "a coordinate is not a finite number",
            BoxProblem::Inverted => "x2 < x1 or y2 < y1",
            BoxProblem::OutsideImage => "outside the image",
            BoxProblem::Empty => "zero width or height",
        })
    }
}

/// What is wrong with a SentencePiece model or its added tokens
/// ([`Error::SentencePiece`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SpmProblem {
    /// The protobuf data ends inside a field (at byte `offset`).
    Truncated { offset: usize },
    /// A varint longer than ten bytes (at byte `offset`).
    BadVarint { offset: usize },
    /// A wire type protobuf does not define, or the deprecated groups (at byte `offset`).
    BadWireType { wire_type: u8, offset: usize },
    /// A known field stored with another wire type than its declared one.
    WrongWireType {
        field: &'static str,
        expected: u8,
        got: u8,
    },
    /// A string field that is not UTF-8.
    NotUtf8 { field: &'static str },
    /// The model holds no pieces.
    NoPieces,
    /// The model was trained with another algorithm than unigram (BPE = 2, WORD = 3, CHAR = 4).
    NotUnigram { model_type: i32 },
    /// A model option the tokenizer built from it does not reproduce.
    Unsupported { what: String },
    /// The pieces are not laid out as XLM-R's fairseq id mapping assumes.
    Layout { reason: String },
    /// The precompiled normalisation map cannot be read.
    BadCharsmap { reason: String },
    /// An added token whose id is not the next free one.
    AddedTokenId {
        token: String,
        got: u32,
        expected: u32,
    },
    /// An added token that is empty, repeated, or already a piece of the vocabulary.
    AddedTokenClash { token: String },
    /// The `tokenizers` crate refused a part of the pipeline.
    Build { reason: String },
}

impl std::fmt::Display for SpmProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpmProblem::Truncated { offset } => write!(f, "truncated protobuf at byte {offset}"),
            SpmProblem::BadVarint { offset } => write!(f, "bad varint at byte {offset}"),
            SpmProblem::BadWireType { wire_type, offset } => {
                write!(
                    f,
                    "unsupported protobuf wire type {wire_type} at byte {offset}"
                )
            }
            SpmProblem::WrongWireType {
                field,
                expected,
                got,
            } => write!(f, "field {field} has wire type {got}, expected {expected}"),
            SpmProblem::NotUtf8 { field } => write!(f, "field {field} is not UTF-8"),
            SpmProblem::NoPieces => f.write_str("the model has no pieces"),
            SpmProblem::NotUnigram { model_type } => write!(
                f,
                "model type {model_type} is not unigram (1); only unigram models are supported"
            ),
            SpmProblem::Unsupported { what } => write!(f, "unsupported: {what}"),
            SpmProblem::Layout { reason } => write!(f, "not an XLM-R piece layout: {reason}"),
            SpmProblem::BadCharsmap { reason } => {
                write!(f, "bad precompiled normalisation map: {reason}")
            }
            SpmProblem::AddedTokenId {
                token,
                got,
                expected,
            } => write!(
                f,
                "added token {token:?} has id {got}; the next free id is {expected}"
            ),
            SpmProblem::AddedTokenClash { token } => write!(
                f,
                "added token {token:?} is empty, repeated or already in the vocabulary"
            ),
            SpmProblem::Build { reason } => write!(f, "cannot build the tokenizer: {reason}"),
        }
    }
}

/// Why a region of interest was rejected by ROI Align.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RoiProblem {
    /// A coordinate or the batch index is NaN or infinite.
    NotFinite,
    /// The batch index (column 0) does not name an image of the feature batch.
    BatchIndex { got: f32, batch: usize },
    /// The box needs more bilinear samples than the limit (adaptive sampling on a huge box).
    TooManySamples { samples: u64, max: u64 },
}

impl std::fmt::Display for RoiProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoiProblem::NotFinite => f.write_str("a value is not a finite number"),
            RoiProblem::BatchIndex { got, batch } => {
                write!(f, "batch index {got} is not in 0..{batch}")
            }
            RoiProblem::TooManySamples { samples, max } => {
                write!(f, "needs {samples} bilinear samples; the limit is {max}")
            }
        }
    }
}

fn size_text(size: &Option<u64>) -> String {
    match size {
        Some(n) => format!("{n} bytes, over"),
        None => "over".into(),
    }
}

fn in_file(file: &Option<PathBuf>) -> String {
    match file {
        Some(p) => format!(" in {}", p.display()),
        None => String::new(),
    }
}

impl Error {
    /// Wraps an I/O error with the path it happened on, turning "not found" into
    /// [`Error::FileNotFound`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::FileNotFound { path }
        } else {
            Error::Io { path, source }
        }
    }

    /// Shorthand for [`Error::BadShape`].
    pub fn shape(op: &'static str, reason: impl Into<String>) -> Self {
        Error::BadShape {
            op,
            reason: reason.into(),
        }
    }
}
