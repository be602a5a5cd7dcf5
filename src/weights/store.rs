//! Tensor stores: one safetensors file, a sharded checkpoint (HF
//! `model.safetensors.index.json`) or several component files addressed by tensor name, and
//! the `VarBuilder` backend that copies each tensor out of the mapping once and then drops
//! the mapped pages, so a loaded model never holds two copies.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::io::read::{read_capped_to_string, MAX_CONFIG_BYTES};
use crate::weights::checkpoint::{
    check_header, first_names, TensorIndex, TensorInfo, INDEX_FILE, SINGLE_FILE,
};
use crate::weights::safetensors::{bad, SafetensorsFile};

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
        let text = read_capped_to_string(index, MAX_CONFIG_BYTES, "shard index")?;
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
        check_header(self.store.info(name), name, &s, &self.store.origin)?;
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
