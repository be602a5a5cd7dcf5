//! The plan of an assembled checkpoint: every output tensor with where it comes from (a
//! published tensor copied, some of its rows, rows appended, or fresh glue), built component
//! by component from the published layouts, and the configuration inferred from them.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::Tensor;

use super::assemble::{ComponentReport, SAM_MASK_TOKENS, SAM_TOKENS_FOR_GRANULARITY};
use crate::config::{ClipVisionConfig, LlamaConfig, SamMaskDecoderConfig, UniResConfig};
use crate::error::{Error, Result};
use crate::weights::checkpoint::{first_names, TensorIndex, TensorInfo};
use crate::weights::inputs::Input;
use crate::weights::rename::{detect, Component};

/// How one output tensor is produced.
pub(super) enum Fetch {
    /// Copy of a published tensor (input index, published name).
    Copy(usize, String),
    /// Rows of a published tensor.
    Rows(usize, String, Vec<usize>),
    /// A published tensor with rows appended, each the mean of the existing rows.
    Grow(usize, String, usize),
    /// Made here (fresh glue).
    Made(Tensor),
}

pub(super) struct Planned {
    pub(super) fetch: Fetch,
    pub(super) info: TensorInfo,
    pub(super) file: PathBuf,
}

/// The planned output as a [`TensorIndex`], so it is checked exactly like a checkpoint.
pub(super) struct Plan {
    pub(super) origin: PathBuf,
    pub(super) tensors: BTreeMap<String, Planned>,
}

impl TensorIndex for Plan {
    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name).map(|p| &p.info)
    }
    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
    fn file_of(&self, name: &str) -> PathBuf {
        self.tensors
            .get(name)
            .map_or_else(|| self.origin.clone(), |p| p.file.clone())
    }
    fn origin(&self) -> &Path {
        &self.origin
    }
}

pub(super) fn cfg_err(what: &Path, reason: impl Into<String>) -> Error {
    Error::Config {
        what: what.display().to_string(),
        reason: reason.into(),
    }
}

/// Reads a component, picks its layout, and adds its renamed tensors to the plan.
pub(super) fn add_component(
    component: Component,
    input: &Input,
    idx: usize,
    plan: &mut Plan,
) -> Result<ComponentReport> {
    let keys = input.names();
    let (layout, c) = detect(component, &keys).map_err(|(l, c)| Error::UnknownLayout {
        path: input.label(),
        component: component.as_str(),
        reason: format!(
            "closest is {}, which does not know {} tensor(s): {}",
            l.name,
            c.unknown.len(),
            first_names(&c.unknown)
        ),
    })?;
    for (published, ours) in &c.renamed {
        let info = input
            .info(published)
            .cloned()
            .ok_or_else(|| Error::MissingTensor {
                name: published.clone(),
                file: Some(input.label()),
            })?;
        plan.tensors.insert(
            ours.clone(),
            Planned {
                fetch: Fetch::Copy(idx, published.clone()),
                info,
                file: input.file_of(published),
            },
        );
    }
    Ok(ComponentReport {
        component,
        layout: layout.name,
        path: input.label(),
        tensors: c.renamed.len(),
        dropped: c.dropped.len(),
        dropped_examples: first_names(&c.dropped),
        config_from: String::new(),
    })
}

/// SAM's four mask tokens → our three (see [`SAM_TOKENS_FOR_GRANULARITY`]).
pub(super) fn select_sam_tokens(plan: &mut Plan) -> Result<usize> {
    let tokens = "mask_decoder.mask_tokens.weight";
    let Some(p) = plan.tensors.get(tokens) else {
        return Ok(0);
    };
    if p.info.shape.first() != Some(&SAM_MASK_TOKENS) {
        let mut expected = p.info.shape.clone();
        if let Some(r) = expected.first_mut() {
            *r = SAM_MASK_TOKENS;
        }
        return Err(Error::ShapeMismatch {
            name: tokens.into(),
            expected,
            got: p.info.shape.clone(),
        });
    }
    let rows = SAM_TOKENS_FOR_GRANULARITY.to_vec();
    let select = |p: Planned| -> Planned {
        let mut info = p.info.clone();
        if let Some(r) = info.shape.first_mut() {
            *r = rows.len();
        }
        let fetch = match p.fetch {
            Fetch::Copy(i, n) => Fetch::Rows(i, n, rows.clone()),
            other => other,
        };
        Planned {
            fetch,
            info,
            file: p.file,
        }
    };
    let hyper = "mask_decoder.output_hypernetworks_mlps.";
    let names: Vec<String> = plan.tensors.keys().cloned().collect();
    let mut dropped = 0;
    for name in names {
        let Some(p) = plan.tensors.remove(&name) else {
            continue;
        };
        if name == tokens
            || name == "mask_decoder.iou_prediction_head.proj_out.weight"
            || name == "mask_decoder.iou_prediction_head.proj_out.bias"
        {
            plan.tensors.insert(name, select(p));
        } else if let Some(rest) = name.strip_prefix(hyper) {
            let (k, tail) = rest.split_once('.').unwrap_or((rest, ""));
            let k: usize = k.parse().unwrap_or(usize::MAX);
            match SAM_TOKENS_FOR_GRANULARITY.iter().position(|&t| t == k) {
                Some(ours) => {
                    plan.tensors.insert(format!("{hyper}{ours}.{tail}"), p);
                }
                None => dropped += 1,
            }
        } else {
            plan.tensors.insert(name, p);
        }
    }
    Ok(dropped)
}

/// Adopts a component's own configuration where it has one.
pub(super) fn adopt_configs(
    cfg: &mut UniResConfig,
    inputs: &[(Component, Input)],
    reports: &mut [ComponentReport],
    plan: &Plan,
) -> Result<()> {
    for ((component, input), report) in inputs.iter().zip(reports.iter_mut()) {
        report.config_from = "the preset".into();
        let from_json = |path: &Path, v: &serde_json::Value, key: Option<&str>| {
            let v = key.and_then(|k| v.get(k)).unwrap_or(v).clone();
            (path.to_path_buf(), v)
        };
        match component {
            Component::Clip => {
                if let Some((p, v)) = &input.config {
                    let (p, v) = from_json(p, v, Some("vision_config"));
                    cfg.vision.clip = serde_json::from_value::<ClipVisionConfig>(v)
                        .map_err(|e| cfg_err(&p, e.to_string()))?;
                    report.config_from = p.display().to_string();
                }
            }
            Component::Llm => {
                if let Some((p, v)) = &input.config {
                    let (p, v) = from_json(p, v, Some("text_config"));
                    cfg.llm = serde_json::from_value::<LlamaConfig>(v)
                        .map_err(|e| cfg_err(&p, e.to_string()))?;
                    report.config_from = p.display().to_string();
                }
            }
            Component::Sam => {
                let d = input
                    .config
                    .as_ref()
                    .and_then(|(p, v)| v.get("mask_decoder_config").map(|d| (p, d)));
                if let Some((p, d)) = d {
                    let mut sam: SamMaskDecoderConfig =
                        serde_json::from_value(d.clone()).map_err(|e| cfg_err(p, e.to_string()))?;
                    sam.num_multimask_outputs = SAM_TOKENS_FOR_GRANULARITY.len() - 1;
                    cfg.decoder.sam = sam;
                    report.config_from = p.display().to_string();
                } else {
                    infer_sam(cfg, plan);
                    report.config_from = "its tensors (attention heads from the preset)".into();
                }
            }
            Component::ConvNext => {
                infer_convnext(cfg, plan)?;
                report.config_from = "its tensors".into();
            }
            Component::Glue => {}
        }
    }
    Ok(())
}

/// ConvNeXt sizes from the tensors (open_clip publishes no HF config): stage widths, depths,
/// stem patch size, input channels, layer scale.
pub(super) fn infer_convnext(cfg: &mut UniResConfig, plan: &Plan) -> Result<()> {
    let c = &mut cfg.hires.convnext;
    let dim = |name: &str, d: usize| plan.info(name).and_then(|i| i.shape.get(d).copied());
    let stem = "hires.embeddings.patch_embeddings.weight";
    let (Some(ch), Some(k)) = (dim(stem, 1), dim(stem, 2)) else {
        return Err(Error::MissingTensor {
            name: stem.into(),
            file: Some(plan.file_of(stem)),
        });
    };
    c.num_channels = ch;
    c.patch_size = k;
    let names = plan.names();
    let (mut sizes, mut depths) = (Vec::new(), Vec::new());
    for s in 0.. {
        let prefix = format!("hires.encoder.stages.{s}.layers.");
        let blocks: HashSet<&str> = names
            .iter()
            .filter_map(|n| n.strip_prefix(&prefix))
            .filter_map(|r| r.split('.').next())
            .collect();
        let Some(w) = dim(&format!("{prefix}0.dwconv.weight"), 0) else {
            break;
        };
        sizes.push(w);
        depths.push(blocks.len());
    }
    c.hidden_sizes = sizes;
    c.depths = depths;
    let has_scale = names.iter().any(|n| n.ends_with("layer_scale_parameter"));
    if !has_scale {
        c.layer_scale_init_value = 0.0;
    } else if c.layer_scale_init_value <= 0.0 {
        c.layer_scale_init_value = 1e-6;
    }
    Ok(())
}

/// SAM decoder sizes from the tensors, for segment-anything checkpoints (published without a
/// config): width, MLP width, depth, IoU head. The head count cannot be read off shapes and
/// stays the preset's (8 in every published SAM).
pub(super) fn infer_sam(cfg: &mut UniResConfig, plan: &Plan) {
    let d = &mut cfg.decoder.sam;
    let dim = |name: &str, i: usize| plan.info(name).and_then(|t| t.shape.get(i).copied());
    if let Some(h) = dim("mask_decoder.iou_token.weight", 1) {
        d.hidden_size = h;
    }
    if let Some(m) = dim("mask_decoder.transformer.layers.0.mlp.lin1.weight", 0) {
        d.mlp_dim = m;
    }
    if let Some(h) = dim("mask_decoder.iou_prediction_head.proj_in.weight", 0) {
        d.iou_head_hidden_dim = h;
    }
    let names = plan.names();
    let count = |prefix: &str| {
        names
            .iter()
            .filter_map(|n| n.strip_prefix(prefix))
            .filter_map(|r| r.split('.').next())
            .collect::<HashSet<_>>()
            .len()
    };
    let layers = count("mask_decoder.transformer.layers.");
    if layers > 0 {
        d.num_hidden_layers = layers;
    }
    let iou_inner = count("mask_decoder.iou_prediction_head.layers.");
    if dim("mask_decoder.iou_prediction_head.proj_in.weight", 0).is_some() {
        d.iou_head_depth = iou_inner + 2;
    }
}

/// Adds the missing special tokens; returns them.
pub(super) fn extend_tokenizer(
    tok: &mut tokenizers::Tokenizer,
    cfg: &UniResConfig,
) -> Result<Vec<String>> {
    let t = &cfg.tokens;
    let wanted = [
        &t.image,
        &t.object,
        &t.part,
        &t.granularity[0],
        &t.granularity[1],
        &t.granularity[2],
        &t.seg,
    ];
    let missing: Vec<String> = wanted
        .iter()
        .filter(|w| tok.token_to_id(w).is_none())
        .map(|w| w.to_string())
        .collect();
    tok.add_special_tokens(
        missing
            .iter()
            .map(|m| tokenizers::AddedToken::from(m.clone(), true)),
    )
    .map_err(|e| Error::Tokenizer {
        reason: e.to_string(),
    })?;
    Ok(missing)
}

/// Grows the LLM's embedding (and untied `lm_head`) to `rows`.
pub(super) fn grow_embeddings(plan: &mut Plan, rows: usize) {
    for name in ["llm.model.embed_tokens.weight", "llm.lm_head.weight"] {
        if let Some(p) = plan.tensors.get_mut(name) {
            if p.info.shape.first().is_some_and(|&r| r < rows) {
                p.info.shape[0] = rows;
                if let Fetch::Copy(i, n) = &p.fetch {
                    p.fetch = Fetch::Grow(*i, n.clone(), rows);
                }
            }
        }
    }
}
