//! `config.json`: the serde schema of a unires checkpoint, and the `tiny` / `base` presets;
//! [`EvfSamConfig`] is the EVF-SAM family's.
//!
//! Component configs use the field names of the reference implementations' own configs
//! (HF `CLIPVisionConfig`, `ConvNextConfig`, `LlamaConfig`, `SamMaskDecoderConfig`), so a
//! reference `config.json` deserialises into them directly; fields unknown to us are ignored
//! and missing ones take the reference defaults.
//!
//! This module reads no files: `UniResConfig::from_file` and `EvfSamConfig::from_file` are in
//! [`crate::io::config_file`], behind the bounded reads of [`crate::io::read`].

mod components;
mod evf_sam;
mod presets;
mod quant;
mod validate;
mod wire;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use components::{
    Activation, ClipVisionConfig, ConvNextConfig, DecoderConfig, HiresConfig, HiresPad, Limits,
    LlamaConfig, PromptConfig, RegionConfig, RopeScaling, SamMaskDecoderConfig, SelectFeature,
    TokensConfig, VisionConfig,
};
pub use evf_sam::{Beit3Config, EvfSamConfig, SamDecoderSpec, SamImageEncoderConfig};
pub use presets::{CLIP_MEAN, CLIP_STD};
pub use quant::Quantization;

/// The schema version this build reads and writes.
pub const CONFIG_VERSION: u32 = 1;

/// A unires checkpoint's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UniResConfig {
    /// Schema version ([`CONFIG_VERSION`]).
    pub version: u32,
    /// Preset name, informative.
    pub name: String,
    pub vision: VisionConfig,
    pub hires: HiresConfig,
    pub region: RegionConfig,
    pub llm: LlamaConfig,
    pub decoder: DecoderConfig,
    #[serde(default)]
    pub tokens: TokensConfig,
    pub prompt: PromptConfig,
    /// Per-channel RGB mean in [0, 1] (CLIP's), also the padding colour.
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    /// Below this target probability the result is empty ("no target").
    pub no_target_threshold: f32,
    /// Region-selection probability above which an object proposal is an instance.
    pub instance_threshold: f32,
    #[serde(default)]
    pub limits: Limits,
}

impl UniResConfig {
    /// Parses and validates a `config.json` text.
    pub fn from_json_str(what: &str, s: &str) -> Result<Self> {
        // Read the version first so that a future schema gives a version error, not a
        // confusing field error.
        #[derive(Deserialize)]
        struct Versioned {
            version: Option<u32>,
        }
        let v: Versioned = serde_json::from_str(s).map_err(|e| Error::Config {
            what: what.into(),
            reason: e.to_string(),
        })?;
        match v.version {
            Some(CONFIG_VERSION) => {}
            Some(got) => {
                return Err(Error::UnsupportedConfigVersion {
                    got,
                    supported: CONFIG_VERSION,
                })
            }
            None => {
                return Err(Error::Config {
                    what: what.into(),
                    reason: "missing \"version\" field".into(),
                })
            }
        }
        let cfg: Self = serde_json::from_str(s).map_err(|e| Error::Config {
            what: what.into(),
            reason: e.to_string(),
        })?;
        cfg.validate(what)?;
        Ok(cfg)
    }

    /// Pretty JSON.
    pub fn to_json_string(&self) -> String {
        // Serialising plain data structs cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_round_trip_through_json() {
        for cfg in [UniResConfig::tiny(), UniResConfig::base()] {
            let s = cfg.to_json_string();
            let back = UniResConfig::from_json_str("test", &s).unwrap();
            assert_eq!(back, cfg);
        }
    }

    #[test]
    fn unknown_version_is_a_typed_error() {
        let mut v: serde_json::Value =
            serde_json::from_str(&UniResConfig::tiny().to_json_string()).unwrap();
        v["version"] = 99.into();
        let err = UniResConfig::from_json_str("t", &v.to_string()).unwrap_err();
        assert!(matches!(
            err,
            Error::UnsupportedConfigVersion { got: 99, .. }
        ));
    }
}
