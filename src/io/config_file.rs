//! Reading a checkpoint's `config.json` from a file: a regular file of at most
//! [`MAX_CONFIG_BYTES`](crate::io::read::MAX_CONFIG_BYTES), parsed and validated. The
//! schemas and their checks are in [`crate::config`], which reads no files.

use std::path::Path;

use crate::config::{EvfSamConfig, UniResConfig};
use crate::error::Result;
use crate::io::read::{read_capped_to_string, MAX_CONFIG_BYTES};

/// The text of a `config.json` file (bounded read).
pub fn read_config_text(path: &Path) -> Result<String> {
    read_capped_to_string(path, MAX_CONFIG_BYTES, "config")
}

impl UniResConfig {
    /// Reads and validates a `config.json` file (see [`read_config_text`]).
    pub fn from_file(path: &Path) -> Result<Self> {
        let s = read_config_text(path)?;
        Self::from_json_str(&path.display().to_string(), &s)
    }
}

impl EvfSamConfig {
    /// Reads and validates an EVF-SAM `config.json` file (see [`read_config_text`]).
    pub fn from_file(path: &Path) -> Result<Self> {
        let s = read_config_text(path)?;
        Self::from_json_str(&path.display().to_string(), &s)
    }
}
