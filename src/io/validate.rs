//! Checking a checkpoint against the graph before any tensor is loaded.
//!
//! The graph is built once on a *recording* `VarBuilder` backend that notes the name and
//! shape of every tensor the constructors ask for and hands back a zero-stride placeholder
//! (no memory). That list is compared with the checkpoint's headers: missing tensors, extra
//! tensors, wrong shapes and non-float dtypes are reported with exact names. A few
//! configuration fields are compared first with the tensors that carry them, so a
//! `config.json` that contradicts the weights says which field is wrong.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;

use crate::config::UniResConfig;
use crate::error::{Error, Result};
use crate::io::checkpoint::{first_names, TensorIndex};
use crate::model::prompt::PromptBuilder;
use crate::model::unires::UniRes;

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

/// Every tensor `UniRes::new` asks for with this configuration, in order. `present` answers
/// the graph's `contains_tensor` probes (the LLM's tied-embedding check) as the checkpoint
/// would.
pub fn requested_tensors(
    cfg: &UniResConfig,
    prompt: &PromptBuilder,
    present: HashSet<String>,
) -> Result<Vec<Requested>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = Recorder {
        seen: seen.clone(),
        present,
    };
    let vb = VarBuilder::from_backend(Box::new(rec), DType::F32, Device::Cpu);
    let model = UniRes::new(cfg, prompt.clone(), vb)?;
    drop(model);
    let v = seen
        .lock()
        .map(|v| v.clone())
        .map_err(|_| Error::shape("requested tensors", "recorder lock poisoned"))?;
    Ok(v)
}

/// One configuration field and the tensor dimension that must equal it.
struct DimProbe {
    field: String,
    value: usize,
    tensor: String,
    dim: usize,
}

/// One configuration field that counts the numbered blocks under a prefix.
struct CountProbe {
    field: String,
    value: usize,
    prefix: String,
}

fn probes(cfg: &UniResConfig) -> (Vec<DimProbe>, Vec<CountProbe>) {
    let v = &cfg.vision.clip;
    let c = &cfg.hires.convnext;
    let l = &cfg.llm;
    let d = &cfg.decoder.sam;
    let dp = |field: &str, value: usize, tensor: &str, dim: usize| DimProbe {
        field: field.into(),
        value,
        tensor: tensor.into(),
        dim,
    };
    let cp = |field: String, value: usize, prefix: String| CountProbe {
        field,
        value,
        prefix,
    };
    let vis = "vision_tower.vision_model";
    let mut dims = vec![
        dp(
            "vision.hidden_size",
            v.hidden_size,
            &format!("{vis}.embeddings.class_embedding"),
            0,
        ),
        dp(
            "vision.num_channels",
            v.num_channels,
            &format!("{vis}.embeddings.patch_embedding.weight"),
            1,
        ),
        dp(
            "vision.patch_size",
            v.patch_size,
            &format!("{vis}.embeddings.patch_embedding.weight"),
            2,
        ),
        dp(
            "vision.intermediate_size",
            v.intermediate_size,
            &format!("{vis}.encoder.layers.0.mlp.fc1.weight"),
            0,
        ),
        dp(
            "hires.patch_size",
            c.patch_size,
            "hires.embeddings.patch_embeddings.weight",
            2,
        ),
        dp(
            "llm.vocab_size",
            l.vocab_size,
            "llm.model.embed_tokens.weight",
            0,
        ),
        dp(
            "llm.hidden_size",
            l.hidden_size,
            "llm.model.embed_tokens.weight",
            1,
        ),
        dp(
            "llm.intermediate_size",
            l.intermediate_size,
            "llm.model.layers.0.mlp.gate_proj.weight",
            0,
        ),
        dp(
            "decoder.hidden_size",
            d.hidden_size,
            "mask_decoder.iou_token.weight",
            1,
        ),
    ];
    for (i, &h) in c.hidden_sizes.iter().enumerate() {
        dims.push(dp(
            &format!("hires.hidden_sizes[{i}]"),
            h,
            &format!("hires.encoder.stages.{i}.layers.0.dwconv.weight"),
            0,
        ));
    }
    let mut counts = vec![
        cp(
            "vision.num_hidden_layers".into(),
            v.num_hidden_layers,
            format!("{vis}.encoder.layers."),
        ),
        cp(
            "llm.num_hidden_layers".into(),
            l.num_hidden_layers,
            "llm.model.layers.".into(),
        ),
        cp(
            "decoder.num_hidden_layers".into(),
            d.num_hidden_layers,
            "mask_decoder.transformer.layers.".into(),
        ),
    ];
    for (i, &n) in c.depths.iter().enumerate() {
        counts.push(cp(
            format!("hires.depths[{i}]"),
            n,
            format!("hires.encoder.stages.{i}.layers."),
        ));
    }
    (dims, counts)
}

/// Compares the configuration's main sizes with the tensors that carry them.
pub fn check_config_against(cfg: &UniResConfig, index: &dyn TensorIndex, what: &str) -> Result<()> {
    let (dims, counts) = probes(cfg);
    for p in dims {
        if let Some(info) = index.info(&p.tensor) {
            if let Some(&got) = info.shape.get(p.dim) {
                if got != p.value {
                    return Err(Error::Config {
                        what: what.into(),
                        reason: format!(
                            "{} is {} but tensor {:?} in {} has shape {:?} (dimension {} is {got})",
                            p.field,
                            p.value,
                            p.tensor,
                            index.file_of(&p.tensor).display(),
                            info.shape,
                            p.dim
                        ),
                    });
                }
            }
        }
    }
    let names = index.names();
    for p in counts {
        let found: BTreeSet<usize> = names
            .iter()
            .filter_map(|n| n.strip_prefix(&p.prefix))
            .filter_map(|rest| rest.split('.').next())
            .filter_map(|s| s.parse().ok())
            .collect();
        if !found.is_empty() && found.len() != p.value {
            return Err(Error::Config {
                what: what.into(),
                reason: format!(
                    "{} is {} but {} has {} blocks under {:?}",
                    p.field,
                    p.value,
                    index.origin().display(),
                    found.len(),
                    p.prefix
                ),
            });
        }
    }
    Ok(())
}

/// One past the largest token id of a tokenizer (added tokens included).
pub fn id_bound(tok: &tokenizers::Tokenizer) -> usize {
    tok.get_vocab(true)
        .values()
        .max()
        .map_or(0, |&m| m as usize + 1)
}

/// The tokenizer must fit the embedding table.
pub fn check_tokenizer(cfg: &UniResConfig, prompt: &PromptBuilder, what: &str) -> Result<()> {
    let n = id_bound(prompt.tokenizer());
    if n > cfg.llm.vocab_size {
        return Err(Error::Config {
            what: what.into(),
            reason: format!(
                "the tokenizer has ids up to {} but llm.vocab_size is {}",
                n - 1,
                cfg.llm.vocab_size
            ),
        });
    }
    Ok(())
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

/// Everything above, in order: tokenizer size, configuration sizes, then tensor by tensor.
pub fn check_checkpoint(
    cfg: &UniResConfig,
    prompt: &PromptBuilder,
    index: &dyn TensorIndex,
    config_what: &str,
) -> Result<Vec<Requested>> {
    check_tokenizer(cfg, prompt, config_what)?;
    check_config_against(cfg, index, config_what)?;
    let present: HashSet<String> = index.names().into_iter().collect();
    let requested = requested_tensors(cfg, prompt, present)?;
    check_requested(&requested, index)?;
    Ok(requested)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::prompt::word_level_tokenizer_json;

    fn prompt(cfg: &UniResConfig) -> PromptBuilder {
        let json = word_level_tokenizer_json(&["a"], &cfg.tokens);
        let tok = PromptBuilder::tokenizer_from_json(json.as_bytes()).unwrap();
        PromptBuilder::new(tok, &cfg.tokens, &cfg.prompt, &cfg.limits).unwrap()
    }

    fn peak_rss_kb() -> Option<u64> {
        let s = std::fs::read_to_string("/proc/self/status").ok()?;
        let l = s.lines().find(|l| l.starts_with("VmHWM:"))?;
        l.split_whitespace().nth(1)?.parse().ok()
    }

    #[test]
    fn the_base_graph_is_recorded_without_allocating_its_weights() {
        let cfg = UniResConfig::base();
        let req = requested_tensors(&cfg, &prompt(&cfg), HashSet::new()).unwrap();
        let params: usize = req.iter().map(|r| r.shape.iter().product::<usize>()).sum();
        // ViT-L (~0.3 B) + ConvNeXt-L (~0.2 B) + a 7 B LLaMA with untied lm_head.
        assert!((7.0e9..8.0e9).contains(&(params as f64)), "{params}");
        let names: HashSet<&str> = req.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names.len(), req.len(), "every tensor is asked for once");
        assert!(names.contains("llm.lm_head.weight"));
        assert!(names.contains("mask_decoder.mask_tokens.weight"));
        if let Some(kb) = peak_rss_kb() {
            // f32 weights would be ~30 GB; the placeholders cost nothing.
            assert!(kb < 2 << 20, "peak RSS {kb} kB");
        }
    }
}
