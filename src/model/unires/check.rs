//! Checking a UniRES++ checkpoint before loading it: configuration sizes against the tensors
//! that carry them, the tokenizer against the embedding table, then tensor by tensor against
//! what [`UniRes::new`] asks for ([`crate::weights::validate`]).

use std::collections::{BTreeSet, HashSet};

use crate::config::UniResConfig;
use crate::error::{Error, Result};
use crate::model::unires::prompt::PromptBuilder;
use crate::model::unires::UniRes;
use crate::weights::checkpoint::TensorIndex;
use crate::weights::validate::{self, check_requested, id_bound, Requested};

/// Every tensor `UniRes::new` asks for with this configuration, in order. `present` answers
/// the graph's `contains_tensor` probes (the LLM's tied-embedding check) as the checkpoint
/// would.
pub fn requested_tensors(
    cfg: &UniResConfig,
    prompt: &PromptBuilder,
    present: HashSet<String>,
) -> Result<Vec<Requested>> {
    validate::requested_tensors(present, |vb| UniRes::new(cfg, prompt.clone(), vb).map(drop))
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
    use crate::model::unires::prompt::word_level_tokenizer_json;

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
