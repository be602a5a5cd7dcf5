//! Checkpoint files as tensor stores, the common vocabulary: what a header says of a tensor
//! ([`TensorInfo`]), dtype names, and the [`TensorIndex`] that validation reads. The formats
//! live beside it: [`super::safetensors`] (checked headers, memory-mapped data),
//! [`super::pickle`] (PyTorch `.bin` / `.pth`) and [`super::store`] (files addressed by tensor
//! name, shards, and the `VarBuilder` backend).

use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::DType;

use crate::error::{Error, Result};
use crate::io::read::open_regular;

/// A header larger than this is treated as corrupt (real headers are a few MB at most).
pub const MAX_HEADER_BYTES: u64 = 100 << 20;
/// The single-file checkpoint name.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The shard index name (HF format).
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// One tensor as a checkpoint header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The dtype as the file spells it (`F32`, `BF16`, `I64`, …).
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Byte range inside the file's data section (safetensors only).
    pub(crate) range: (usize, usize),
}

impl TensorInfo {
    pub fn new(dtype: impl Into<String>, shape: Vec<usize>) -> Self {
        Self {
            dtype: dtype.into(),
            shape,
            range: (0, 0),
        }
    }

    /// The candle dtype when this is a floating-point tensor the model can use.
    pub fn float_dtype(&self) -> Option<DType> {
        match self.dtype.as_str() {
            "F32" => Some(DType::F32),
            "F16" => Some(DType::F16),
            "BF16" => Some(DType::BF16),
            "F64" => Some(DType::F64),
            _ => None,
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The safetensors spelling of a candle dtype.
pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "F32",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::F64 => "F64",
        DType::U8 => "U8",
        DType::U32 => "U32",
        DType::I16 => "I16",
        DType::I32 => "I32",
        DType::I64 => "I64",
        _ => "OTHER",
    }
}

/// Bits per element of a safetensors dtype; `None` for a name the format does not define.
pub(crate) fn dtype_bits(name: &str) -> Option<usize> {
    Some(match name {
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" | "F8_E4M3FNUZ"
        | "F8_E5M2FNUZ" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "C64" | "F64" | "I64" | "U64" => 64,
        _ => return None,
    })
}

/// The candle dtype of a safetensors dtype name, when candle has one.
pub(crate) fn candle_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" => DType::F64,
        "U8" => DType::U8,
        "U32" => DType::U32,
        "I16" => DType::I16,
        "I32" => DType::I32,
        "I64" => DType::I64,
        _ => return None,
    })
}

/// Read access to "which tensors exist, with which dtype and shape" — what validation needs.
pub trait TensorIndex {
    /// The tensor's header entry, if present.
    fn info(&self, name: &str) -> Option<&TensorInfo>;
    /// Every tensor name, sorted.
    fn names(&self) -> Vec<String>;
    /// The file holding `name` (or the checkpoint as a whole), for error messages.
    fn file_of(&self, name: &str) -> PathBuf;
    /// The checkpoint as a whole (the index file, or the single file).
    fn origin(&self) -> &Path;
}

// ------------------------------------------------------------------------------ safetensors

/// Opens a checkpoint file for reading, with the typed errors for "missing", "is a
/// directory" and "not a regular file" ([`open_regular`]: a FIFO or device is refused
/// before anything is mapped or read).
pub fn open_file(path: &Path) -> Result<File> {
    Ok(open_regular(path)?.0)
}

/// Checks that `dir` exists and is a directory.
pub fn require_dir(dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// The check a `VarBuilder` backend makes before reading a tensor: present in the header
/// (`info`), with the shape the graph asks for.
pub(crate) fn check_header(
    info: Option<&TensorInfo>,
    name: &str,
    shape: &candle_core::Shape,
    origin: &Path,
) -> candle_core::Result<()> {
    let info = info.ok_or_else(|| {
        candle_core::Error::Msg(format!("missing tensor {name:?} in {}", origin.display()))
    })?;
    if info.shape.as_slice() != shape.dims() {
        return Err(candle_core::Error::Msg(format!(
            "tensor {name:?}: expected shape {:?}, got {:?}",
            shape.dims(),
            info.shape
        )));
    }
    Ok(())
}

/// `a, b, c, …` for the first few names of a list.
pub fn first_names<S: AsRef<str>>(names: &[S]) -> String {
    const SHOWN: usize = 5;
    let mut s = names
        .iter()
        .take(SHOWN)
        .map(|n| n.as_ref().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(", …");
    }
    s
}

// ------------------------------------------------------------------------------ backend

pub use super::pickle::PickleFile;
pub use super::safetensors::SafetensorsFile;
pub use super::store::{StoreBackend, TensorStore};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_names_elides() {
        let v: Vec<String> = (0..7).map(|i| format!("t{i}")).collect();
        assert_eq!(first_names(&v), "t0, t1, t2, t3, t4, …");
        assert_eq!(first_names(&v[..2]), "t0, t1");
    }
}
