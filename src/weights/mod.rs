//! Checkpoints: where they come from (embedded, a directory, the hub), their file formats
//! (safetensors, PyTorch pickles, shards), the published key layouts of the components and
//! their renaming, and checking a checkpoint's tensors against what a graph asks for. This
//! layer knows no model: a model family passes in what it needs (see `model::unires::load`).
//! It also reads the sentencepiece tokenizer files of XLM-R style text encoders
//! ([`sentencepiece`]).

pub mod checkpoint;
pub mod hub;
pub mod inputs;
pub mod pickle;
pub mod rename;
pub mod safetensors;
pub mod sentencepiece;
pub mod source;
pub mod store;
pub mod validate;

pub use source::{parse_device, parse_dtype, Source};
