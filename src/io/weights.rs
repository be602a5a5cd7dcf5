//! Where a model comes from: the embedded `tiny` checkpoint, a checkpoint directory, or the
//! Hugging Face hub (see weights.md for the layout).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::config::UniResConfig;
use crate::error::{Error, Result};
use crate::model::prompt::PromptBuilder;
use crate::model::unires::UniRes;

/// A checkpoint location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The `tiny` model compiled into the crate.
    Embedded,
    /// A unires checkpoint directory (`config.json`, `model.safetensors` or shards,
    /// `tokenizer.json`).
    Dir(PathBuf),
    /// A hub repository holding a unires checkpoint directory.
    Hub { repo: String, revision: String },
}

/// The embedded checkpoint's files, when this build has them.
pub struct EmbeddedFiles {
    pub config: &'static [u8],
    pub weights: &'static [u8],
    pub tokenizer: &'static [u8],
}

/// The embedded `tiny` checkpoint.
pub fn embedded() -> Option<EmbeddedFiles> {
    None
}

fn tokenizer_for(cfg: &UniResConfig, json: &[u8]) -> Result<PromptBuilder> {
    let tok = PromptBuilder::tokenizer_from_json(json)?;
    PromptBuilder::new(tok, &cfg.tokens, &cfg.prompt, &cfg.limits)
}

/// Loads a model from `source` onto `device`, computing in `dtype`.
pub fn load(source: &Source, device: &Device, dtype: DType) -> Result<UniRes> {
    match source {
        Source::Embedded => {
            let files = embedded().ok_or_else(|| Error::NoModel {
                reason: "this build has no embedded model yet; pass --weights DIR".into(),
            })?;
            let cfg = UniResConfig::from_json_str(
                "embedded config.json",
                std::str::from_utf8(files.config).map_err(|e| Error::Config {
                    what: "embedded config.json".into(),
                    reason: e.to_string(),
                })?,
            )?;
            let prompt = tokenizer_for(&cfg, files.tokenizer)?;
            let vb = VarBuilder::from_slice_safetensors(files.weights, dtype, device)?;
            UniRes::new(&cfg, prompt, vb)
        }
        Source::Dir(dir) => load_dir(dir, device, dtype),
        Source::Hub { repo, .. } => Err(Error::Hub {
            repo: repo.clone(),
            reason: "hub download is not available in this build yet".into(),
        }),
    }
}

/// Loads a checkpoint directory.
pub fn load_dir(dir: &Path, device: &Device, dtype: DType) -> Result<UniRes> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let cfg = UniResConfig::from_file(&dir.join("config.json"))?;
    let tok_path = dir.join("tokenizer.json");
    let tok = std::fs::read(&tok_path).map_err(|e| Error::io(&tok_path, e))?;
    let prompt = tokenizer_for(&cfg, &tok)?;
    let weights = dir.join("model.safetensors");
    if !weights.exists() {
        return Err(Error::FileNotFound { path: weights });
    }
    // SAFETY: the file is memory-mapped read-only; modifying it while the model is loaded is
    // undefined behaviour, as with every mmap-based loader.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], dtype, device)? };
    UniRes::new(&cfg, prompt, vb)
}
