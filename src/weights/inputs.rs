//! Component checkpoints as published: one file, a list of files, a sharded index
//! (`*.safetensors.index.json` or `pytorch_model.bin.index.json`), or a directory holding
//! any of these (and maybe a `config.json`). Safetensors files are memory-mapped; PyTorch
//! pickles are read tensor by tensor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};

use crate::error::{Error, Result};
use crate::io::read::{read_capped_to_string, MAX_CONFIG_BYTES};
use crate::weights::checkpoint::{
    check_header, PickleFile, SafetensorsFile, TensorIndex, TensorInfo, TensorStore,
};

/// Weight files looked for in a directory, in order.
pub const DIR_CANDIDATES: &[&str] = &[
    "model.safetensors",
    "model.safetensors.index.json",
    "open_clip_model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "open_clip_pytorch_model.bin",
];

enum Reader {
    Safetensors(Box<TensorStore>),
    Pickles(Vec<PickleFile>),
}

/// A component checkpoint: its tensors by published name, and its `config.json` if any.
pub struct Input {
    /// The path(s) as given.
    pub given: Vec<PathBuf>,
    /// The weight files read.
    pub files: Vec<PathBuf>,
    /// The `config.json` found with the weights, parsed.
    pub config: Option<(PathBuf, serde_json::Value)>,
    infos: BTreeMap<String, (TensorInfo, usize)>,
    reader: Reader,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("files", &self.files)
            .field("tensors", &self.infos.len())
            .finish()
    }
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

fn ext(p: &Path) -> String {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.to_ascii_lowercase())
        .unwrap_or_default()
}

/// Expands directories and index files into weight files.
fn weight_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        let found = DIR_CANDIDATES
            .iter()
            .map(|c| path.join(c))
            .find(|p| p.exists())
            .ok_or_else(|| Error::BadCheckpoint {
                path: path.to_path_buf(),
                reason: format!(
                    "no weights file in it (looked for {})",
                    DIR_CANDIDATES.join(", ")
                ),
            })?;
        return weight_files(&found);
    }
    let name = ext(path);
    if name.ends_with(".index.json") {
        let text = read_capped_to_string(path, MAX_CONFIG_BYTES, "shard index")?;
        let idx: ShardIndex = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            source: e,
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut shards: Vec<&String> = idx.weight_map.values().collect();
        shards.sort();
        shards.dedup();
        let mut out = Vec::new();
        for s in shards {
            let p = Path::new(s.as_str());
            if p.is_absolute() || p.components().count() != 1 {
                return Err(Error::BadCheckpoint {
                    path: path.to_path_buf(),
                    reason: format!("shard name {s:?} must be a plain file name"),
                });
            }
            let shard = dir.join(p);
            if !shard.exists() {
                return Err(Error::FileNotFound { path: shard });
            }
            out.push(shard);
        }
        return Ok(out);
    }
    Ok(vec![path.to_path_buf()])
}

fn is_safetensors(p: &Path) -> bool {
    ext(p).ends_with(".safetensors")
}

fn is_pickle(p: &Path) -> bool {
    let n = ext(p);
    [".bin", ".pth", ".pt", ".ckpt"]
        .iter()
        .any(|e| n.ends_with(e))
}

impl Input {
    /// Opens the weights at `paths` (files, index files or directories).
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        for p in paths {
            files.extend(weight_files(p)?);
        }
        let config = paths
            .iter()
            .map(|p| {
                if p.is_dir() {
                    p.join("config.json")
                } else {
                    p.parent().unwrap_or(Path::new(".")).join("config.json")
                }
            })
            .find(|p| p.is_file())
            .map(|p| -> Result<(PathBuf, serde_json::Value)> {
                let text = read_capped_to_string(&p, MAX_CONFIG_BYTES, "config")?;
                let v = serde_json::from_str(&text).map_err(|e| Error::Json {
                    path: p.clone(),
                    source: e,
                })?;
                Ok((p, v))
            })
            .transpose()?;
        let (reader, tables): (Reader, Vec<BTreeMap<String, TensorInfo>>) =
            if files.iter().all(|f| is_safetensors(f)) {
                let opened = files
                    .iter()
                    .map(|f| SafetensorsFile::open(f))
                    .collect::<Result<Vec<_>>>()?;
                let tables = opened.iter().map(|f| f.tensors().clone()).collect();
                let origin = files.first().cloned().unwrap_or_default();
                let store = TensorStore::from_files(origin, opened)?;
                (Reader::Safetensors(Box::new(store)), tables)
            } else if files.iter().all(|f| is_pickle(f)) {
                let opened = files
                    .iter()
                    .map(|f| PickleFile::open(f))
                    .collect::<Result<Vec<_>>>()?;
                let tables = opened.iter().map(|f| f.tensors().clone()).collect();
                (Reader::Pickles(opened), tables)
            } else {
                let bad = files
                    .iter()
                    .find(|f| !is_safetensors(f) && !is_pickle(f))
                    .or(files.first())
                    .cloned()
                    .unwrap_or_default();
                return Err(Error::BadCheckpoint {
                    path: bad,
                    reason: "weights must be .safetensors files or PyTorch pickles \
                             (.bin/.pth/.pt), not a mix"
                        .into(),
                });
            };
        let mut infos = BTreeMap::new();
        for (i, t) in tables.into_iter().enumerate() {
            for (name, info) in t {
                if infos.contains_key(&name) {
                    return Err(Error::BadCheckpoint {
                        path: files[i].clone(),
                        reason: format!("tensor {name:?} appears in two files"),
                    });
                }
                infos.insert(name, (info, i));
            }
        }
        if infos.is_empty() {
            return Err(Error::BadCheckpoint {
                path: files.first().cloned().unwrap_or_default(),
                reason: "holds no tensors".into(),
            });
        }
        Ok(Self {
            given: paths.to_vec(),
            files,
            config,
            infos,
            reader,
        })
    }

    /// Published tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.infos.keys().cloned().collect()
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.infos.get(name).map(|(i, _)| i)
    }

    /// The file holding `name`.
    pub fn file_of(&self, name: &str) -> PathBuf {
        self.infos
            .get(name)
            .and_then(|(_, i)| self.files.get(*i))
            .or(self.files.first())
            .cloned()
            .unwrap_or_default()
    }

    /// How the input is named in messages (its first path).
    pub fn label(&self) -> PathBuf {
        self.given.first().cloned().unwrap_or_default()
    }

    /// Reads one tensor onto `device` in `dtype`; a memory-mapped file's pages of that tensor
    /// are released afterwards, a pickle's storage is read for this tensor only.
    pub fn load_as(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let (_, i) = self.infos.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            file: Some(self.label()),
        })?;
        match &self.reader {
            Reader::Safetensors(s) => s.load(name, dtype, device),
            Reader::Pickles(p) => Ok(p[*i].tensor(name)?.to_dtype(dtype)?.to_device(device)?),
        }
    }

    /// Reads one tensor onto the CPU in its stored dtype.
    pub fn load(&self, name: &str) -> Result<Tensor> {
        let (_, i) = self.infos.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            file: Some(self.label()),
        })?;
        match &self.reader {
            Reader::Safetensors(s) => s.load_raw(name),
            Reader::Pickles(p) => p[*i].tensor(name),
        }
    }
}

impl TensorIndex for Input {
    fn info(&self, name: &str) -> Option<&TensorInfo> {
        Input::info(self, name)
    }

    fn names(&self) -> Vec<String> {
        Input::names(self)
    }

    fn file_of(&self, name: &str) -> PathBuf {
        Input::file_of(self, name)
    }

    fn origin(&self) -> &Path {
        self.given
            .first()
            .or(self.files.first())
            .map_or(Path::new("."), PathBuf::as_path)
    }
}

/// The `VarBuilder` backend over an [`Input`]: each requested tensor is checked against its
/// header entry, then read once into the requested dtype and device.
pub struct InputBackend {
    input: Arc<Input>,
}

impl InputBackend {
    pub fn new(input: Arc<Input>) -> Self {
        Self { input }
    }
}

impl candle_nn::var_builder::SimpleBackend for InputBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        check_header(self.input.info(name), name, &s, &self.input.label())?;
        self.input
            .load_as(name, dtype, dev)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.input
            .load_as(name, dtype, dev)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.input.info(name).is_some()
    }
}

/// A component given as `hf:owner/name[@revision]` is fetched from the hub (its config and
/// weights only, see [`DIR_CANDIDATES`]); anything else is a local path, returned as is.
pub fn resolve(spec: &Path, hub: &crate::weights::hub::HubOptions) -> Result<PathBuf> {
    match spec.to_str().and_then(crate::weights::hub::parse_hub_spec) {
        Some((repo, rev)) => crate::weights::hub::fetch_component(&repo, &rev, DIR_CANDIDATES, hub),
        None => Ok(spec.to_path_buf()),
    }
}

/// A `tokenizer.json` given as `hf:owner/name[@revision]` or as a local path.
pub fn resolve_tokenizer(spec: &Path, hub: &crate::weights::hub::HubOptions) -> Result<PathBuf> {
    match spec.to_str().and_then(crate::weights::hub::parse_hub_spec) {
        Some((repo, rev)) => crate::weights::hub::fetch_file(&repo, &rev, "tokenizer.json", hub),
        None => Ok(spec.to_path_buf()),
    }
}
