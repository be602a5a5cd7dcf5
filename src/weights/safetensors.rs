//! safetensors files: the header is read and checked before any tensor is touched (the
//! format of the `safetensors` crate: an 8-byte little-endian header length, a JSON header,
//! the data), and the data is memory-mapped (or static, for the embedded model).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::weights::checkpoint::{
    candle_dtype, dtype_bits, open_file, TensorInfo, MAX_HEADER_BYTES,
};

enum Bytes {
    Mapped(memmap2::Mmap),
    Static(&'static [u8]),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Static(s) => s,
        }
    }
}

/// A safetensors file: its checked header and its memory-mapped (or static) bytes.
pub struct SafetensorsFile {
    pub(crate) path: PathBuf,
    bytes: Bytes,
    data_start: usize,
    pub(crate) tensors: BTreeMap<String, TensorInfo>,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

#[derive(Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

pub(crate) fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Safetensors {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Parses and checks a safetensors header: returns where the data section starts and every
/// tensor's entry. Every entry's byte range is checked against its dtype and shape and
/// against the file length, so a truncated file is reported here, naming the first tensor
/// that does not fit.
fn parse_header(path: &Path, bytes: &[u8]) -> Result<(usize, BTreeMap<String, TensorInfo>)> {
    let len = bytes.len();
    let Some(head) = bytes.get(..8) else {
        return Err(bad(
            path,
            format!("the file has {len} bytes, fewer than the 8-byte header length"),
        ));
    };
    let mut n8 = [0u8; 8];
    n8.copy_from_slice(head);
    let n = u64::from_le_bytes(n8);
    if n > MAX_HEADER_BYTES || n + 8 > len as u64 {
        return Err(bad(
            path,
            format!(
                "corrupt header: it claims {n} bytes but the file has {} after the length \
                 (truncated, or not a safetensors file)",
                len - 8
            ),
        ));
    }
    let data_start = 8 + n as usize;
    let raw: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&bytes[8..data_start])
        .map_err(|e| bad(path, format!("corrupt header: {e}")))?;
    let data_len = len - data_start;
    let mut tensors = BTreeMap::new();
    for (name, v) in raw {
        if name == "__metadata__" {
            continue;
        }
        let e: HeaderEntry = serde_json::from_value(v)
            .map_err(|err| bad(path, format!("corrupt header entry for {name:?}: {err}")))?;
        let bits = dtype_bits(&e.dtype).ok_or_else(|| {
            bad(
                path,
                format!("tensor {name:?}: unknown dtype {:?}", e.dtype),
            )
        })?;
        let numel = e
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad(path, format!("tensor {name:?}: shape overflows")))?;
        let [start, end] = e.data_offsets;
        let want = numel
            .checked_mul(bits)
            .map(|b| b.div_ceil(8))
            .ok_or_else(|| bad(path, format!("tensor {name:?}: size overflows")))?;
        if end < start || end - start != want {
            return Err(bad(
                path,
                format!(
                    "corrupt header: tensor {name:?} ({} {:?}) needs {want} bytes, its offsets \
                     [{start}, {end}] give {}",
                    e.dtype,
                    e.shape,
                    end as i64 - start as i64
                ),
            ));
        }
        if end > data_len {
            return Err(bad(
                path,
                format!(
                    "truncated: tensor {name:?} ends at byte {end} of the data section, which \
                     has only {data_len} bytes"
                ),
            ));
        }
        tensors.insert(
            name,
            TensorInfo {
                dtype: e.dtype,
                shape: e.shape,
                range: (start, end),
            },
        );
    }
    Ok((data_start, tensors))
}

impl SafetensorsFile {
    /// Memory-maps `path` and checks its header.
    pub fn open(path: &Path) -> Result<Self> {
        let file = open_file(path)?;
        // SAFETY: the mapping is read-only; as with every mmap-based loader, the file must not
        // be truncated or rewritten while it is open.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (data_start, tensors) = parse_header(path, &mmap)?;
        Ok(Self {
            path: path.to_path_buf(),
            bytes: Bytes::Mapped(mmap),
            data_start,
            tensors,
        })
    }

    /// Wraps bytes compiled into the binary; `what` names them in messages.
    pub fn from_static(what: &str, bytes: &'static [u8]) -> Result<Self> {
        let path = PathBuf::from(what);
        let (data_start, tensors) = parse_header(&path, bytes)?;
        Ok(Self {
            path,
            bytes: Bytes::Static(bytes),
            data_start,
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    /// Size of the file in bytes.
    pub fn len_bytes(&self) -> usize {
        self.bytes.as_slice().len()
    }

    /// Copies one tensor, in its file dtype, onto `device`.
    pub fn tensor(&self, name: &str, device: &Device) -> Result<Tensor> {
        let info = self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            file: Some(self.path.clone()),
        })?;
        let dtype = candle_dtype(&info.dtype).ok_or_else(|| Error::DTypeMismatch {
            name: name.to_string(),
            expected: "a dtype candle reads".into(),
            got: info.dtype.clone(),
        })?;
        let (s, e) = info.range;
        let data = &self.bytes.as_slice()[self.data_start + s..self.data_start + e];
        Ok(Tensor::from_raw_buffer(data, dtype, &info.shape, device)?)
    }

    /// Tells the kernel that the pages of `name` are no longer needed by this process: they
    /// leave its resident set (the data stays in the page cache and is read again if asked).
    pub(crate) fn release(&self, name: &str) {
        #[cfg(unix)]
        if let (Bytes::Mapped(m), Some(info)) = (&self.bytes, self.tensors.get(name)) {
            let (s, e) = info.range;
            if e > s {
                // SAFETY: the mapping is shared and read-only, so dropping its pages loses
                // nothing: a later access reads the file again. A failure only means the
                // pages stay resident, which is harmless.
                let _ = unsafe {
                    m.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        self.data_start + s,
                        e - s,
                    )
                };
            }
        }
        #[cfg(not(unix))]
        let _ = name;
    }
}

// ------------------------------------------------------------------------------ stores

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn write(tensors: &[(&str, Tensor)]) -> Vec<u8> {
        safetensors::serialize(
            tensors.iter().map(|(n, t)| (n.to_string(), t.clone())),
            None,
        )
        .unwrap()
    }

    #[test]
    fn header_is_checked_before_data_is_read() {
        let t = Tensor::arange(0f32, 6.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3))
            .unwrap();
        let bytes = write(&[("a", t.clone()), ("b", t)]);
        let p = Path::new("x.safetensors");
        let (_, ok) = parse_header(p, &bytes).unwrap();
        assert_eq!(ok["a"].shape, vec![2, 3]);
        assert_eq!(ok["b"].float_dtype(), Some(DType::F32));

        let short = &bytes[..bytes.len() - 4];
        let e = parse_header(p, short).unwrap_err().to_string();
        assert!(e.contains("truncated") && e.contains("\"b\""), "{e}");
        let e = parse_header(p, &bytes[..5]).unwrap_err().to_string();
        assert!(e.contains("fewer than the 8-byte"), "{e}");
        let mut garbled = bytes.clone();
        garbled[9] = b'#';
        let e = parse_header(p, &garbled).unwrap_err().to_string();
        assert!(e.contains("corrupt header"), "{e}");
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let e = parse_header(p, &huge).unwrap_err().to_string();
        assert!(e.contains("corrupt header"), "{e}");
    }
}
