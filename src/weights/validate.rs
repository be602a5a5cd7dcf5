//! Checking a checkpoint's tensors against what a graph asks for, before any tensor is loaded.
//!
//! The graph is built once on a *recording* `VarBuilder` backend that notes the name and
//! shape of every tensor the constructors ask for and hands back a zero-stride placeholder
//! (no memory). That list is compared with the checkpoint's headers: missing tensors, extra
//! tensors, wrong shapes and non-float dtypes are reported with exact names. Which graph is
//! built is the caller's business (a model family passes its constructor), so this layer
//! knows no model.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};
use crate::weights::checkpoint::{first_names, TensorIndex};

/// A tensor the graph asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    pub name: String,
    pub shape: Vec<usize>,
}

struct Recorder {
    seen: Arc<Mutex<Vec<Requested>>>,
    present: HashSet<String>,
}

impl candle_nn::var_builder::SimpleBackend for Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Ok(mut v) = self.seen.lock() {
            v.push(Requested {
                name: name.to_string(),
                shape: s.dims().to_vec(),
            });
        }
        // A zero-stride view of one element: the right shape, no memory.
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _d: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        Err(candle_core::Error::Msg(format!(
            "{name}: the graph must ask for tensors with a shape"
        )))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.present.contains(name)
    }
}

/// Every tensor that `build` asks for, in order. `present` answers the graph's
/// `contains_tensor` probes (e.g. a tied-embedding check) as the checkpoint would.
pub fn requested_tensors(
    present: HashSet<String>,
    build: impl FnOnce(VarBuilder) -> Result<()>,
) -> Result<Vec<Requested>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = Recorder {
        seen: seen.clone(),
        present,
    };
    build(VarBuilder::from_backend(
        Box::new(rec),
        DType::F32,
        Device::Cpu,
    ))?;
    let v = seen
        .lock()
        .map(|v| v.clone())
        .map_err(|_| Error::shape("requested tensors", "recorder lock poisoned"))?;
    Ok(v)
}

/// One past the largest token id of a tokenizer (added tokens included).
pub fn id_bound(tok: &tokenizers::Tokenizer) -> usize {
    tok.get_vocab(true)
        .values()
        .max()
        .map_or(0, |&m| m as usize + 1)
}

/// Compares what the graph asks for with what the checkpoint holds. Extra tensors are an
/// error: a checkpoint with tensors the graph does not use almost always means a wrong
/// layout or a wrong configuration, and loading it anyway would hide that.
pub fn check_requested(requested: &[Requested], index: &dyn TensorIndex) -> Result<()> {
    for r in requested {
        let Some(info) = index.info(&r.name) else {
            return Err(Error::MissingTensor {
                name: r.name.clone(),
                file: Some(index.origin().to_path_buf()),
            });
        };
        if info.float_dtype().is_none() {
            return Err(Error::DTypeMismatch {
                name: r.name.clone(),
                expected: "F32, F16, BF16 or F64".into(),
                got: info.dtype.clone(),
            });
        }
        if info.shape != r.shape {
            return Err(Error::ShapeMismatch {
                name: r.name.clone(),
                expected: r.shape.clone(),
                got: info.shape.clone(),
            });
        }
    }
    let wanted: HashSet<&str> = requested.iter().map(|r| r.name.as_str()).collect();
    let extra: Vec<String> = index
        .names()
        .into_iter()
        .filter(|n| !wanted.contains(n.as_str()))
        .collect();
    if !extra.is_empty() {
        return Err(Error::UnexpectedTensors {
            file: index.file_of(&extra[0]),
            count: extra.len(),
            first: first_names(&extra),
        });
    }
    Ok(())
}
