//! Checkpoint files as tensor stores: safetensors headers read and checked before any tensor
//! is touched (the format of the `safetensors` crate: an 8-byte little-endian header length,
//! a JSON header, the data), memory-mapped tensor data, sharded checkpoints
//! (HF `model.safetensors.index.json`), PyTorch pickles (`.bin` / `.pth`, through candle's
//! pickle reader), and the `VarBuilder` backend that copies each tensor out of the mapping
//! once and then drops the mapped pages, so a loaded model never holds two copies.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use serde::Deserialize;

use crate::error::{Error, Result};

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
    range: (usize, usize),
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
fn dtype_bits(name: &str) -> Option<usize> {
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
fn candle_dtype(name: &str) -> Option<DType> {
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
    path: PathBuf,
    bytes: Bytes,
    data_start: usize,
    tensors: BTreeMap<String, TensorInfo>,
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

fn bad(path: &Path, reason: impl Into<String>) -> Error {
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

/// Opens a file for reading, with the typed errors for "missing" and "is a directory".
pub fn open_file(path: &Path) -> Result<File> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::IsADirectory {
            path: path.to_path_buf(),
        });
    }
    File::open(path).map_err(|e| Error::io(path, e))
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
    fn release(&self, name: &str) {
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

/// A set of safetensors files addressed by tensor name: one file, a sharded checkpoint, or
/// several component files.
#[derive(Debug)]
pub struct TensorStore {
    origin: PathBuf,
    files: Vec<SafetensorsFile>,
    which: HashMap<String, usize>,
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

impl TensorStore {
    /// Tensors of several files; a name found in two files is an error.
    pub fn from_files(origin: PathBuf, files: Vec<SafetensorsFile>) -> Result<Self> {
        let mut which = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            for name in f.tensors.keys() {
                if let Some(j) = which.insert(name.clone(), i) {
                    return Err(bad(
                        &f.path,
                        format!("tensor {name:?} is also in {}", files[j].path.display()),
                    ));
                }
            }
        }
        Ok(Self {
            origin,
            files,
            which,
        })
    }

    /// One safetensors file.
    pub fn open_file(path: &Path) -> Result<Self> {
        let f = SafetensorsFile::open(path)?;
        Self::from_files(path.to_path_buf(), vec![f])
    }

    /// A sharded checkpoint from its `*.safetensors.index.json`. Every shard must exist, and
    /// the index and the shards' headers must agree tensor for tensor.
    pub fn open_index(index: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
        let idx: ShardIndex = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: index.to_path_buf(),
            source: e,
        })?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut shard_names: Vec<&String> = idx.weight_map.values().collect();
        shard_names.sort();
        shard_names.dedup();
        let mut files = Vec::with_capacity(shard_names.len());
        for s in &shard_names {
            let p = Path::new(s.as_str());
            if p.is_absolute() || p.components().count() != 1 {
                return Err(bad(
                    index,
                    format!("shard name {s:?} must be a plain file name next to the index"),
                ));
            }
            let path = dir.join(p);
            if !path.exists() {
                return Err(Error::FileNotFound { path });
            }
            files.push(SafetensorsFile::open(&path)?);
        }
        for (name, shard) in &idx.weight_map {
            let f = files
                .iter()
                .find(|f| f.path.file_name().and_then(|n| n.to_str()) == Some(shard.as_str()));
            if let Some(f) = f {
                if !f.tensors.contains_key(name) {
                    return Err(Error::MissingTensor {
                        name: name.clone(),
                        file: Some(f.path.clone()),
                    });
                }
            }
        }
        for f in &files {
            let shard = f.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let extra: Vec<&String> = f
                .tensors
                .keys()
                .filter(|n| idx.weight_map.get(*n).map(String::as_str) != Some(shard))
                .collect();
            if !extra.is_empty() {
                return Err(Error::UnexpectedTensors {
                    file: f.path.clone(),
                    count: extra.len(),
                    first: format!(
                        "{} (not listed for this shard in {INDEX_FILE})",
                        first_names(&extra)
                    ),
                });
            }
        }
        Self::from_files(index.to_path_buf(), files)
    }

    /// A unires checkpoint directory's weights: `model.safetensors` if present, otherwise the
    /// shards named by `model.safetensors.index.json`.
    pub fn open_checkpoint_dir(dir: &Path) -> Result<Self> {
        let single = dir.join(SINGLE_FILE);
        if single.exists() {
            return Self::open_file(&single);
        }
        let index = dir.join(INDEX_FILE);
        if index.exists() {
            return Self::open_index(&index);
        }
        Err(Error::FileNotFound { path: single })
    }

    /// Copies `name` onto `device` in `dtype`, then releases its mapped pages.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let i = *self.which.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            file: Some(self.origin.clone()),
        })?;
        let f = &self.files[i];
        let t = f.tensor(name, device)?.to_dtype(dtype)?;
        f.release(name);
        Ok(t)
    }

    /// Copies `name` onto the CPU in its file dtype (no release: for short-lived reads).
    pub fn load_raw(&self, name: &str) -> Result<Tensor> {
        let i = *self.which.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            file: Some(self.origin.clone()),
        })?;
        self.files[i].tensor(name, &Device::Cpu)
    }

    /// Total size of the files.
    pub fn total_bytes(&self) -> usize {
        self.files.iter().map(|f| f.len_bytes()).sum()
    }

    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.path.as_path())
    }
}

impl TensorIndex for TensorStore {
    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.which
            .get(name)
            .and_then(|&i| self.files[i].tensors.get(name))
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.which.keys().cloned().collect();
        v.sort();
        v
    }

    fn file_of(&self, name: &str) -> PathBuf {
        match self.which.get(name) {
            Some(&i) => self.files[i].path.clone(),
            None => self.origin.clone(),
        }
    }

    fn origin(&self) -> &Path {
        &self.origin
    }
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

/// The `VarBuilder` backend of a loaded checkpoint: each requested tensor is checked against
/// the header, copied once to the target device and dtype, and its mapped pages released.
pub struct StoreBackend {
    store: Arc<TensorStore>,
}

impl StoreBackend {
    pub fn new(store: Arc<TensorStore>) -> Self {
        Self { store }
    }
}

impl candle_nn::var_builder::SimpleBackend for StoreBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let info = self.store.info(name).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "missing tensor {name:?} in {}",
                self.store.origin.display()
            ))
        })?;
        if info.shape.as_slice() != s.dims() {
            return Err(candle_core::Error::Msg(format!(
                "tensor {name:?}: expected shape {:?}, got {:?}",
                s.dims(),
                info.shape
            )));
        }
        self.store
            .load(name, dtype, dev)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.store
            .load(name, dtype, dev)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.store.info(name).is_some()
    }
}

// ------------------------------------------------------------------------------ pickles

/// A PyTorch zip-format pickle (`torch.save` of a state dict: `.bin`, `.pth`, `.pt`).
pub struct PickleFile {
    path: PathBuf,
    inner: candle_core::pickle::PthTensors,
    infos: BTreeMap<String, TensorInfo>,
}

impl std::fmt::Debug for PickleFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PickleFile")
            .field("path", &self.path)
            .field("tensors", &self.infos.len())
            .finish()
    }
}

impl PickleFile {
    /// Reads the tensor table of a state dict, also when it is nested under `state_dict` or
    /// `model` (as some training scripts save it).
    pub fn open(path: &Path) -> Result<Self> {
        open_file(path)?;
        let err = |e: candle_core::Error| Error::BadCheckpoint {
            path: path.to_path_buf(),
            reason: format!(
                "cannot read it as a zip-format PyTorch pickle ({e}); re-save it with a recent \
                 torch.save or convert it to safetensors"
            ),
        };
        let mut inner = candle_core::pickle::PthTensors::new(path, None).map_err(err)?;
        for key in ["state_dict", "model"] {
            if !inner.tensor_infos().is_empty() {
                break;
            }
            if let Ok(nested) = candle_core::pickle::PthTensors::new(path, Some(key)) {
                inner = nested;
            }
        }
        let infos = inner
            .tensor_infos()
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    TensorInfo::new(dtype_name(v.dtype), v.layout.dims().to_vec()),
                )
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            inner,
            infos,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.infos
    }

    /// Reads one tensor onto the CPU in its stored dtype.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let t = self
            .inner
            .get(name)
            .map_err(|e| Error::BadCheckpoint {
                path: self.path.clone(),
                reason: format!("tensor {name:?}: {e}"),
            })?
            .ok_or_else(|| Error::MissingTensor {
                name: name.to_string(),
                file: Some(self.path.clone()),
            })?;
        Ok(t.contiguous()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn first_names_elides() {
        let v: Vec<String> = (0..7).map(|i| format!("t{i}")).collect();
        assert_eq!(first_names(&v), "t0, t1, t2, t3, t4, …");
        assert_eq!(first_names(&v[..2]), "t0, t1");
    }
}
