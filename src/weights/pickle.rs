//! PyTorch zip-format pickles (`torch.save` of a state dict: `.bin`, `.pth`, `.pt`), read
//! through candle's pickle reader.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::weights::checkpoint::{dtype_name, open_file, TensorInfo};

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
