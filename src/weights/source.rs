//! Where a checkpoint comes from: the embedded `tiny` checkpoint, a checkpoint directory, or
//! the Hugging Face hub (see weights.md for the layouts); the compute dtypes and devices a
//! model can be loaded on. What a checkpoint is loaded into is the model family's business
//! (e.g. [`crate::model::unires::load`]).

use std::path::PathBuf;

use candle_core::{DType, Device};

use crate::error::{Error, Result};
use crate::io::read::{read_capped, MAX_CONFIG_BYTES};
use crate::weights::hub::{fetch_file, HubOptions};

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

pub fn check_dtype(dtype: DType) -> Result<()> {
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

/// The text of a checkpoint's `config.json` and what to call it in messages, without
/// reading any weights (from the hub, only that file is fetched).
pub fn read_config(source: &Source, hub: &HubOptions) -> Result<(String, String)> {
    let (what, bytes) = match source {
        Source::Embedded => {
            let files = embedded().ok_or_else(|| Error::NoModel {
                reason: "this build has no embedded model yet; pass --weights DIR".into(),
            })?;
            ("embedded config.json".to_string(), files.config.to_vec())
        }
        Source::Dir(dir) => {
            let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
            if !meta.is_dir() {
                return Err(Error::NotADirectory { path: dir.clone() });
            }
            let p = dir.join("config.json");
            let bytes = read_capped(&p, MAX_CONFIG_BYTES, "config")?;
            (p.display().to_string(), bytes)
        }
        Source::Hub { repo, revision } => {
            let p = fetch_file(repo, revision, "config.json", hub)?;
            let bytes = read_capped(&p, MAX_CONFIG_BYTES, "config")?;
            (p.display().to_string(), bytes)
        }
    };
    let text = String::from_utf8(bytes).map_err(|e| Error::Config {
        what: what.clone(),
        reason: e.to_string(),
    })?;
    Ok((what, text))
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
