//! Loading a UniRES++ checkpoint: every file is checked (config version, tokenizer special
//! tokens, safetensors headers, each tensor's name, shape and dtype against the graph, see
//! [`super::check`]) before any tensor is read; then each tensor is copied once out of the
//! memory-mapped file into the chosen dtype and device.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::config::UniResConfig;
use crate::error::{Error, Result};
use crate::io::read::{read_capped, MAX_TOKENIZER_BYTES};
use crate::model::unires::check::check_checkpoint;
use crate::model::unires::prompt::PromptBuilder;
use crate::model::unires::UniRes;
use crate::weights::checkpoint::{require_dir, SafetensorsFile, StoreBackend, TensorStore};
use crate::weights::hub::{fetch_checkpoint, HubOptions};
use crate::weights::source::{check_dtype, embedded, Source};

fn prompt_for(cfg: &UniResConfig, tokenizer_json: &[u8]) -> Result<PromptBuilder> {
    let tok = PromptBuilder::tokenizer_from_json(tokenizer_json)?;
    PromptBuilder::new(tok, &cfg.tokens, &cfg.prompt, &cfg.limits)
}

/// Loads a model from `source` onto `device`, computing in `dtype`; the hub is reached with
/// the options the environment gives ([`HubOptions::from_env`]).
pub fn load(source: &Source, device: &Device, dtype: DType) -> Result<UniRes> {
    load_with(source, &HubOptions::from_env(), device, dtype)
}

/// [`load`] with explicit hub options.
pub fn load_with(
    source: &Source,
    hub: &HubOptions,
    device: &Device,
    dtype: DType,
) -> Result<UniRes> {
    check_dtype(dtype)?;
    match source {
        Source::Embedded => {
            let files = embedded().ok_or_else(|| Error::NoModel {
                reason: "this build has no embedded model yet; pass --weights DIR".into(),
            })?;
            let what = "embedded config.json";
            let text = std::str::from_utf8(files.config).map_err(|e| Error::Config {
                what: what.into(),
                reason: e.to_string(),
            })?;
            let cfg = UniResConfig::from_json_str(what, text)?;
            let prompt = prompt_for(&cfg, files.tokenizer)?;
            let file = SafetensorsFile::from_static("embedded model.safetensors", files.weights)?;
            let store = TensorStore::from_files(file.path().to_path_buf(), vec![file])?;
            build(&cfg, prompt, store, what, device, dtype)
        }
        Source::Dir(dir) => load_dir(dir, device, dtype),
        Source::Hub { repo, revision } => {
            let dir = fetch_checkpoint(repo, revision, hub)?;
            load_dir(&dir, device, dtype)
        }
    }
}

/// A checked (not yet loaded) checkpoint directory.
pub struct Checked {
    pub config: UniResConfig,
    pub prompt: PromptBuilder,
    pub store: TensorStore,
    /// What the configuration is called in messages (its path).
    pub config_what: String,
}

/// Checks a checkpoint directory without loading a tensor: directory and files present,
/// config version and consistency, tokenizer special tokens, safetensors headers (and shard
/// index), and every tensor's name, shape and dtype against the graph.
pub fn check_dir(dir: &Path) -> Result<Checked> {
    require_dir(dir)?;
    let cfg_path = dir.join("config.json");
    let config = UniResConfig::from_file(&cfg_path)?;
    let tok_path = dir.join("tokenizer.json");
    let tok = read_capped(&tok_path, MAX_TOKENIZER_BYTES, "tokenizer")?;
    let prompt = prompt_for(&config, &tok).map_err(|e| match e {
        Error::Tokenizer { reason } => Error::Tokenizer {
            reason: format!("{}: {reason}", tok_path.display()),
        },
        other => other,
    })?;
    let store = TensorStore::open_checkpoint_dir(dir)?;
    let config_what = cfg_path.display().to_string();
    check_checkpoint(&config, &prompt, &store, &config_what)?;
    Ok(Checked {
        config,
        prompt,
        store,
        config_what,
    })
}

/// Loads a checkpoint directory (after [`check_dir`]).
pub fn load_dir(dir: &Path, device: &Device, dtype: DType) -> Result<UniRes> {
    check_dtype(dtype)?;
    let c = check_dir(dir)?;
    let vb = VarBuilder::from_backend(
        Box::new(StoreBackend::new(Arc::new(c.store))),
        dtype,
        device.clone(),
    );
    UniRes::new(&c.config, c.prompt, vb)
}

fn build(
    cfg: &UniResConfig,
    prompt: PromptBuilder,
    store: TensorStore,
    what: &str,
    device: &Device,
    dtype: DType,
) -> Result<UniRes> {
    check_checkpoint(cfg, &prompt, &store, what)?;
    let vb = VarBuilder::from_backend(
        Box::new(StoreBackend::new(Arc::new(store))),
        dtype,
        device.clone(),
    );
    UniRes::new(cfg, prompt, vb)
}
