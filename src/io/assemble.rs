//! `unires assemble`: builds a unires checkpoint directory from component checkpoints in
//! their published layouts (CLIP ViT, ConvNeXt, LLaMA, SAM decoder) plus the glue UniRES++
//! trains itself, from a file or freshly initialised (see weights.md).
//!
//! Steps: read each component and pick the layout that explains all its keys
//! ([`crate::io::rename`]); take each component's configuration from its own `config.json`
//! (ConvNeXt: from its tensors); add the unires special tokens to the tokenizer and grow the
//! LLM's embedding rows to match; map SAM's four mask tokens to the three granularity tokens;
//! check the resulting tensor set against the graph exactly as loading would; write shards,
//! `config.json`, `tokenizer.json`; check the written directory.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;

use crate::config::{ClipVisionConfig, LlamaConfig, SamMaskDecoderConfig, UniResConfig};
use crate::error::{Error, Result};
use crate::io::checkpoint::{
    dtype_name, first_names, TensorIndex, TensorInfo, INDEX_FILE, SINGLE_FILE,
};
use crate::io::inputs::Input;
use crate::io::rename::{classify, detect, layout_by_name, Component};
use crate::io::validate::{check_checkpoint, id_bound, requested_tensors};
use crate::io::weights::check_dir;
use crate::model::prompt::PromptBuilder;
use crate::model::unires::UniRes;
use crate::train::SeededVarMap;

/// SAM's mask tokens used for the granularity tokens part, object, multi: SAM's three
/// multimask tokens, which SAM trains to cover nested masks from small to large (its token 0,
/// the single-mask output, is left out). This is the only place the mapping is made.
pub const SAM_TOKENS_FOR_GRANULARITY: [usize; 3] = [1, 2, 3];
/// Mask tokens in a published SAM decoder.
pub const SAM_MASK_TOKENS: usize = 4;
/// Default largest shard written (bytes).
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// Where the glue tensors come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlueSource {
    /// A safetensors file (or unires checkpoint directory) in unires naming.
    File(PathBuf),
    /// Seeded initialisation as [`crate::train::fresh_model`]: masks will be meaningless.
    Fresh { seed: u64 },
}

/// What to assemble.
#[derive(Debug, Clone)]
pub struct AssembleOptions {
    pub out: PathBuf,
    /// The preset (or config file); component sections are replaced by the components' own.
    pub config: UniResConfig,
    pub clip: Vec<PathBuf>,
    pub convnext: Vec<PathBuf>,
    pub llm: Vec<PathBuf>,
    /// Without it the decoder and prompt encoder come with the glue.
    pub sam: Option<Vec<PathBuf>>,
    pub glue: GlueSource,
    pub tokenizer: PathBuf,
    /// `None` keeps each tensor's stored dtype.
    pub dtype: Option<DType>,
    pub max_shard_bytes: u64,
    pub progress: bool,
}

/// What one component contributed.
#[derive(Debug, Clone)]
pub struct ComponentReport {
    pub component: Component,
    pub layout: &'static str,
    pub path: PathBuf,
    pub tensors: usize,
    /// Published tensors left out (text towers, image encoders, …), with examples.
    pub dropped: usize,
    pub dropped_examples: String,
    /// Where this component's configuration came from.
    pub config_from: String,
}

/// What `assemble` did.
#[derive(Debug, Clone, Default)]
pub struct AssembleReport {
    pub components: Vec<ComponentReport>,
    /// Special tokens added to the tokenizer.
    pub added_tokens: Vec<String>,
    /// Embedding rows before and after growing.
    pub vocab_rows: (usize, usize),
    /// Glue tensors initialised from a seed.
    pub fresh_tensors: usize,
    /// Tensors of the glue file not used (other components, or the decoder when `--sam`).
    pub ignored_glue: usize,
    pub warnings: Vec<String>,
    pub files: Vec<PathBuf>,
}

/// How one output tensor is produced.
enum Fetch {
    /// Copy of a published tensor (input index, published name).
    Copy(usize, String),
    /// Rows of a published tensor.
    Rows(usize, String, Vec<usize>),
    /// A published tensor with rows appended, each the mean of the existing rows.
    Grow(usize, String, usize),
    /// Made here (fresh glue).
    Made(Tensor),
}

struct Planned {
    fetch: Fetch,
    info: TensorInfo,
    file: PathBuf,
}

/// The planned output as a [`TensorIndex`], so it is checked exactly like a checkpoint.
struct Plan {
    origin: PathBuf,
    tensors: BTreeMap<String, Planned>,
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

fn cfg_err(what: &Path, reason: impl Into<String>) -> Error {
    Error::Config {
        what: what.display().to_string(),
        reason: reason.into(),
    }
}

/// Reads a component, picks its layout, and adds its renamed tensors to the plan.
fn add_component(
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
fn select_sam_tokens(plan: &mut Plan) -> Result<usize> {
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
fn adopt_configs(
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
fn infer_convnext(cfg: &mut UniResConfig, plan: &Plan) -> Result<()> {
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
fn infer_sam(cfg: &mut UniResConfig, plan: &Plan) {
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
fn extend_tokenizer(tok: &mut tokenizers::Tokenizer, cfg: &UniResConfig) -> Result<Vec<String>> {
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
fn grow_embeddings(plan: &mut Plan, rows: usize) {
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

/// Initialises `names` as `train::fresh_model` would (same seed, same values), building the
/// rest of the graph on placeholders.
fn fresh_tensors(
    cfg: &UniResConfig,
    prompt: &PromptBuilder,
    names: &HashSet<String>,
    present: HashSet<String>,
    seed: u64,
) -> Result<BTreeMap<String, Tensor>> {
    struct Fresh {
        seeded: SeededVarMap,
        names: HashSet<String>,
        present: HashSet<String>,
    }
    impl candle_nn::var_builder::SimpleBackend for Fresh {
        fn get(
            &self,
            s: Shape,
            name: &str,
            h: candle_nn::Init,
            dtype: DType,
            dev: &Device,
        ) -> candle_core::Result<Tensor> {
            if self.names.contains(name) {
                self.seeded.get(s, name, h, dtype, dev)
            } else {
                Tensor::zeros((), dtype, dev)?.broadcast_as(s)
            }
        }
        fn get_unchecked(&self, name: &str, d: DType, dev: &Device) -> candle_core::Result<Tensor> {
            self.seeded.get_unchecked(name, d, dev)
        }
        fn contains_tensor(&self, name: &str) -> bool {
            self.present.contains(name)
        }
    }
    let varmap = candle_nn::VarMap::new();
    let backend = Fresh {
        seeded: SeededVarMap::new(varmap.clone(), seed),
        names: names.clone(),
        present,
    };
    let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, Device::Cpu);
    drop(UniRes::new(cfg, prompt.clone(), vb)?);
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::shape("fresh glue", "variable map lock poisoned"))?;
    Ok(data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect())
}

/// Materialises one planned tensor in the output dtype.
fn materialise(p: &Planned, inputs: &[(Component, Input)], dtype: Option<DType>) -> Result<Tensor> {
    let src = |i: usize, n: &str| -> Result<Tensor> {
        inputs
            .get(i)
            .ok_or_else(|| Error::shape("assemble", "bad input index"))?
            .1
            .load(n)
    };
    let t = match &p.fetch {
        Fetch::Copy(i, n) => src(*i, n)?,
        Fetch::Rows(i, n, rows) => {
            let t = src(*i, n)?;
            let idx = Tensor::new(
                rows.iter()
                    .map(|&r| r as u32)
                    .collect::<Vec<_>>()
                    .as_slice(),
                &Device::Cpu,
            )?;
            t.index_select(&idx, 0)?
        }
        Fetch::Grow(i, n, rows) => {
            let t = src(*i, n)?;
            let have = t.dim(0)?;
            let mean = t.to_dtype(DType::F32)?.mean_keepdim(0)?;
            let extra = mean
                .broadcast_as((rows - have, t.dim(1)?))?
                .to_dtype(t.dtype())?;
            Tensor::cat(&[&t, &extra], 0)?
        }
        Fetch::Made(t) => t.clone(),
    };
    let t = match dtype {
        Some(d) => t.to_dtype(d)?,
        None => t,
    };
    Ok(t.contiguous()?)
}

fn out_bytes(info: &TensorInfo, dtype: Option<DType>) -> u64 {
    let size = match dtype {
        Some(d) => d.size_in_bytes(),
        None => info.float_dtype().map_or(4, |d| d.size_in_bytes()),
    };
    (info.numel() * size) as u64
}

/// Writes the plan as one file or as shards with an index.
fn write_weights(
    plan: &Plan,
    inputs: &[(Component, Input)],
    opts: &AssembleOptions,
) -> Result<Vec<PathBuf>> {
    let mut shards: Vec<Vec<&String>> = vec![Vec::new()];
    let mut size = 0u64;
    let mut total = 0u64;
    for (name, p) in &plan.tensors {
        let b = out_bytes(&p.info, opts.dtype);
        total += b;
        if size > 0 && size + b > opts.max_shard_bytes {
            shards.push(Vec::new());
            size = 0;
        }
        size += b;
        if let Some(last) = shards.last_mut() {
            last.push(name);
        }
    }
    let n = shards.len();
    let bar = if opts.progress {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut written = Vec::new();
    let mut weight_map = BTreeMap::new();
    let meta: std::collections::HashMap<String, String> =
        [("format".to_string(), "pt".to_string())].into();
    for (i, names) in shards.iter().enumerate() {
        let file = if n == 1 {
            SINGLE_FILE.to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", i + 1)
        };
        let path = opts.out.join(&file);
        let mut tensors = Vec::with_capacity(names.len());
        for name in names {
            let p = &plan.tensors[name.as_str()];
            tensors.push((name.to_string(), materialise(p, inputs, opts.dtype)?));
            bar.inc(out_bytes(&p.info, opts.dtype));
            weight_map.insert(name.to_string(), file.clone());
        }
        safetensors::serialize_to_file(tensors, Some(meta.clone()), &path).map_err(|e| {
            Error::Safetensors {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?;
        written.push(path);
    }
    bar.finish_and_clear();
    if n > 1 {
        let path = opts.out.join(INDEX_FILE);
        let v = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        let text = serde_json::to_string_pretty(&v).map_err(|e| Error::Json {
            path: path.clone(),
            source: e,
        })?;
        std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))?;
        written.push(path);
    }
    Ok(written)
}

fn prepare_out(out: &Path) -> Result<()> {
    if out.exists() {
        let meta = std::fs::metadata(out).map_err(|e| Error::io(out, e))?;
        if !meta.is_dir() {
            return Err(Error::NotADirectory {
                path: out.to_path_buf(),
            });
        }
        let mut it = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
        if it.next().is_some() {
            return Err(Error::Io {
                path: out.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the output directory is not empty",
                ),
            });
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))
}

/// Adds the glue file's tensors; returns how many were ignored.
fn add_glue_file(
    input: &Input,
    idx: usize,
    with_sam: bool,
    plan: &mut Plan,
) -> Result<(usize, ComponentReport)> {
    let layout = layout_by_name("unires-glue").ok_or_else(|| Error::shape("glue", "no layout"))?;
    let keys = input.names();
    let c = classify(layout, &keys);
    let mut ignored = 0;
    let mut unknown = Vec::new();
    for k in &c.unknown {
        match Component::of(k) {
            Component::Clip | Component::ConvNext | Component::Llm => ignored += 1,
            _ => unknown.push(k.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(Error::UnknownLayout {
            path: input.label(),
            component: "glue",
            reason: format!(
                "{} tensor(s) are not unires glue: {}",
                unknown.len(),
                first_names(&unknown)
            ),
        });
    }
    let mut taken = 0;
    for (published, ours) in &c.renamed {
        if with_sam && Component::of(ours) == Component::Sam {
            ignored += 1;
            continue;
        }
        if let Some(info) = input.info(published).cloned() {
            plan.tensors.insert(
                ours.clone(),
                Planned {
                    fetch: Fetch::Copy(idx, published.clone()),
                    info,
                    file: input.file_of(published),
                },
            );
            taken += 1;
        }
    }
    let report = ComponentReport {
        component: Component::Glue,
        layout: layout.name,
        path: input.label(),
        tensors: taken,
        dropped: 0,
        dropped_examples: String::new(),
        config_from: "the preset".into(),
    };
    Ok((ignored, report))
}

/// Builds the checkpoint directory `opts.out`.
pub fn assemble(opts: &AssembleOptions) -> Result<AssembleReport> {
    let mut cfg = opts.config.clone();
    let mut report = AssembleReport::default();
    let mut inputs: Vec<(Component, Input)> = Vec::new();
    let mut plan = Plan {
        origin: opts.out.clone(),
        tensors: BTreeMap::new(),
    };
    let mut parts = vec![
        (Component::Clip, &opts.clip),
        (Component::ConvNext, &opts.convnext),
        (Component::Llm, &opts.llm),
    ];
    if let Some(s) = &opts.sam {
        parts.push((Component::Sam, s));
    }
    let mut reports = Vec::new();
    for (component, paths) in parts {
        let input = Input::open(paths)?;
        reports.push(add_component(component, &input, inputs.len(), &mut plan)?);
        inputs.push((component, input));
    }
    let sam_dropped = select_sam_tokens(&mut plan)?;
    if let Some(r) = reports.iter_mut().find(|r| r.component == Component::Sam) {
        r.dropped += sam_dropped;
        r.tensors -= sam_dropped.min(r.tensors);
    }
    adopt_configs(&mut cfg, &inputs, &mut reports, &plan)?;

    // Tokenizer: add the special tokens, grow the embedding rows to cover them.
    std::fs::metadata(&opts.tokenizer).map_err(|e| Error::io(&opts.tokenizer, e))?;
    let mut tok =
        tokenizers::Tokenizer::from_file(&opts.tokenizer).map_err(|e| Error::Tokenizer {
            reason: format!("{}: {e}", opts.tokenizer.display()),
        })?;
    report.added_tokens = extend_tokenizer(&mut tok, &cfg)?;
    let rows = plan
        .info("llm.model.embed_tokens.weight")
        .and_then(|i| i.shape.first().copied())
        .unwrap_or(cfg.llm.vocab_size);
    let new_rows = rows.max(id_bound(&tok));
    report.vocab_rows = (rows, new_rows);
    cfg.llm.vocab_size = new_rows;
    grow_embeddings(&mut plan, new_rows);
    cfg.validate("assembled config")?;
    let prompt = PromptBuilder::new(tok.clone(), &cfg.tokens, &cfg.prompt, &cfg.limits)?;

    // Glue: from a file, or fresh for whatever the graph asks for and no component supplies.
    let glue_owned = |name: &str| {
        let c = Component::of(name);
        c == Component::Glue || (c == Component::Sam && opts.sam.is_none())
    };
    match &opts.glue {
        GlueSource::File(path) => {
            let input = Input::open(std::slice::from_ref(path))?;
            let (ignored, r) = add_glue_file(&input, inputs.len(), opts.sam.is_some(), &mut plan)?;
            report.ignored_glue = ignored;
            reports.push(r);
            inputs.push((Component::Glue, input));
        }
        GlueSource::Fresh { seed } => {
            let present: HashSet<String> = plan.tensors.keys().cloned().collect();
            let wanted = requested_tensors(&cfg, &prompt, present.clone())?;
            let names: HashSet<String> = wanted
                .iter()
                .filter(|r| glue_owned(&r.name) && !present.contains(&r.name))
                .map(|r| r.name.clone())
                .collect();
            for (name, t) in fresh_tensors(&cfg, &prompt, &names, present, *seed)? {
                let info = TensorInfo::new(dtype_name(t.dtype()), t.dims().to_vec());
                plan.tensors.insert(
                    name,
                    Planned {
                        fetch: Fetch::Made(t),
                        info,
                        file: PathBuf::from(format!("fresh glue (seed {seed})")),
                    },
                );
            }
            report.fresh_tensors = names.len();
            report.warnings.push(format!(
                "{} glue tensors (projector, region encoder, [SEG] head, region selection, neck, \
                 skip projections, target head{}) are freshly initialised from seed {seed}: \
                 this model is untrained and its masks are meaningless",
                names.len(),
                if opts.sam.is_none() {
                    ", mask decoder"
                } else {
                    ""
                }
            ));
        }
    }

    // Check the plan exactly as loading will check the written files.
    check_checkpoint(&cfg, &prompt, &plan, "assembled config").map_err(|e| match e {
        Error::MissingTensor { name, .. } => {
            let c = Component::of(&name);
            let from = if glue_owned(&name) {
                match &opts.glue {
                    GlueSource::File(p) => Some(p.clone()),
                    GlueSource::Fresh { .. } => None,
                }
            } else {
                inputs.iter().find(|(k, _)| *k == c).map(|(_, i)| i.label())
            };
            Error::MissingTensor { name, file: from }
        }
        other => other,
    })?;

    prepare_out(&opts.out)?;
    report.files = write_weights(&plan, &inputs, opts)?;
    let cfg_path = opts.out.join("config.json");
    std::fs::write(&cfg_path, cfg.to_json_string() + "\n").map_err(|e| Error::io(&cfg_path, e))?;
    let tok_path = opts.out.join("tokenizer.json");
    tok.save(&tok_path, true).map_err(|e| Error::Tokenizer {
        reason: format!("{}: {e}", tok_path.display()),
    })?;
    report.files.push(cfg_path);
    report.files.push(tok_path);
    report.components = reports;
    check_dir(&opts.out)?;
    Ok(report)
}

/// Parses a size such as `5GB`, `500MB`, `64KiB` or a plain byte count.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KIB" => 1 << 10,
        "MIB" => 1 << 20,
        "GIB" => 1 << 30,
        _ => 0,
    };
    let n: f64 = num.parse().unwrap_or(-1.0);
    if mult == 0 || !n.is_finite() || n <= 0.0 {
        return Err(Error::Config {
            what: "size".into(),
            reason: format!("cannot read {s:?} as a size (e.g. 5GB, 500MB)"),
        });
    }
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("5GB").unwrap(), 5_000_000_000);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("five").is_err());
        assert!(parse_size("5XB").is_err());
    }
}
