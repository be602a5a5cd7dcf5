//! Where a model comes from: the embedded `tiny` checkpoint, a checkpoint directory, or the
//! Hugging Face hub (see weights.md for the layout), and how it is loaded: every file is
//! checked (config version, tokenizer special tokens, safetensors headers, each tensor's
//! name, shape and dtype against the graph) before any tensor is read; then each tensor is
//! copied once out of the memory-mapped file into the chosen dtype and device.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::config::UniResConfig;
use crate::error::{Error, Result};
use crate::io::checkpoint::{SafetensorsFile, StoreBackend, TensorStore};
use crate::io::hub::{fetch_checkpoint, HubOptions};
use crate::io::validate::check_checkpoint;
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

impl Source {
    /// `owner/name` or `owner/name@revision` (revision defaults to `main`).
    pub fn hub(spec: &str) -> Self {
        match spec.split_once('@') {
            Some((repo, rev)) if !rev.is_empty() => Source::Hub {
                repo: repo.to_string(),
                revision: rev.to_string(),
            },
            Some((repo, _)) => Source::Hub {
                repo: repo.to_string(),
                revision: "main".into(),
            },
            None => Source::Hub {
                repo: spec.to_string(),
                revision: "main".into(),
            },
        }
    }
}

/// The embedded checkpoint's files, when this build has them.
pub struct EmbeddedFiles {
    pub config: &'static [u8],
    pub weights: &'static [u8],
    pub tokenizer: &'static [u8],
}

/// The embedded `tiny` checkpoint (`weights/tiny/`, trained by
/// `examples/train_synthetic.rs`; see weights.md).
pub fn embedded() -> Option<EmbeddedFiles> {
    Some(EmbeddedFiles {
        config: include_bytes!("../../weights/tiny/config.json"),
        weights: include_bytes!("../../weights/tiny/model.safetensors"),
        tokenizer: include_bytes!("../../weights/tiny/tokenizer.json"),
    })
}

/// The compute dtypes a model can be loaded in.
pub const DTYPES: &str = "f32, f16, bf16";

/// Parses `f32`, `f16` or `bf16`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s.to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(Error::Config {
            what: "dtype".into(),
            reason: format!("unknown dtype {other:?} (expected one of: {DTYPES})"),
        }),
    }
}

fn check_dtype(dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => Ok(()),
        other => Err(Error::Config {
            what: "dtype".into(),
            reason: format!("cannot compute in {other:?} (expected one of: {DTYPES})"),
        }),
    }
}

/// The device named `cpu`, `cuda` (or `cuda:N`) or `metal`; a GPU this build was compiled
/// without is [`Error::FeatureDisabled`].
pub fn parse_device(s: &str) -> Result<Device> {
    let s = s.to_ascii_lowercase();
    let (kind, ordinal) = match s.split_once(':') {
        Some((k, n)) => (
            k.to_string(),
            n.parse::<usize>().map_err(|_| Error::Config {
                what: "device".into(),
                reason: format!("bad device ordinal in {s:?}"),
            })?,
        ),
        None => (s.clone(), 0),
    };
    match kind.as_str() {
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda_device(ordinal),
        "metal" => metal_device(ordinal),
        other => Err(Error::Config {
            what: "device".into(),
            reason: format!("unknown device {other:?} (expected cpu, cuda or metal)"),
        }),
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> Result<Device> {
    Ok(Device::new_cuda(ordinal)?)
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_ordinal: usize) -> Result<Device> {
    Err(Error::FeatureDisabled {
        feature: "cuda",
        what: "the CUDA device",
    })
}

#[cfg(all(feature = "metal", target_os = "macos"))]
fn metal_device(ordinal: usize) -> Result<Device> {
    Ok(Device::new_metal(ordinal)?)
}

#[cfg(not(all(feature = "metal", target_os = "macos")))]
fn metal_device(_ordinal: usize) -> Result<Device> {
    Err(Error::FeatureDisabled {
        feature: "metal",
        what: "the Metal device (macOS only)",
    })
}

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
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let cfg_path = dir.join("config.json");
    let config = UniResConfig::from_file(&cfg_path)?;
    let tok_path = dir.join("tokenizer.json");
    let tok = std::fs::read(&tok_path).map_err(|e| Error::io(&tok_path, e))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_specs_parse() {
        assert_eq!(
            Source::hub("a/b"),
            Source::Hub {
                repo: "a/b".into(),
                revision: "main".into()
            }
        );
        assert_eq!(
            Source::hub("a/b@v1"),
            Source::Hub {
                repo: "a/b".into(),
                revision: "v1".into()
            }
        );
    }

    #[test]
    fn dtypes_and_devices_parse() {
        assert_eq!(parse_dtype("BF16").unwrap(), DType::BF16);
        assert!(matches!(parse_dtype("f8"), Err(Error::Config { .. })));
        assert!(matches!(parse_device("cpu"), Ok(Device::Cpu)));
        assert!(matches!(parse_device("tpu"), Err(Error::Config { .. })));
        #[cfg(not(feature = "cuda"))]
        assert!(matches!(
            parse_device("cuda"),
            Err(Error::FeatureDisabled {
                feature: "cuda",
                ..
            })
        ));
        #[cfg(not(all(feature = "metal", target_os = "macos")))]
        assert!(matches!(
            parse_device("metal"),
            Err(Error::FeatureDisabled {
                feature: "metal",
                ..
            })
        ));
    }
}
