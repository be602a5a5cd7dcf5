//! Weight quantisation of the LLM's linear layers (candle's GGML block formats).

use std::str::FromStr;

use crate::error::{Error, Result};

/// A block format for quantised linear weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quantization {
    /// 8-bit values with one f16 scale per block of 32 (8.5 bits per weight).
    Q8_0,
    /// 4-bit k-quants: super-blocks of 256 with 6-bit sub-block scales (4.5 bits per weight).
    Q4K,
}

impl Quantization {
    /// The names `--quantize` accepts.
    pub const NAMES: &'static str = "q8_0, q4k";

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Q8_0 => "q8_0",
            Self::Q4K => "q4k",
        }
    }

    /// Weights per block: a quantised layer's input width must be a multiple of it.
    pub fn block_size(self) -> usize {
        match self {
            Self::Q8_0 => 32,
            Self::Q4K => 256,
        }
    }

    /// Bits per weight, scales included.
    pub fn bits_per_weight(self) -> f64 {
        match self {
            Self::Q8_0 => 8.5,
            Self::Q4K => 4.5,
        }
    }
}

impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Quantization {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "q8_0" | "q8" => Ok(Self::Q8_0),
            "q4k" | "q4_k" => Ok(Self::Q4K),
            other => Err(Error::Config {
                what: "quantize".into(),
                reason: format!(
                    "unknown quantisation {other:?} (expected one of: {})",
                    Self::NAMES
                ),
            }),
        }
    }
}
