//! `unires assemble`: builds a unires checkpoint directory from component checkpoints in
//! their published layouts (CLIP ViT, ConvNeXt, LLaMA, SAM decoder) plus the glue UniRES++
//! trains itself, from a file or freshly initialised (see weights.md).
//!
//! Steps: read each component and pick the layout that explains all its keys
//! ([`crate::weights::rename`]); take each component's configuration from its own `config.json`
//! (ConvNeXt: from its tensors); add the unires special tokens to the tokenizer and grow the
//! LLM's embedding rows to match; map SAM's four mask tokens to the three granularity tokens;
//! check the resulting tensor set against the graph exactly as loading would; write shards,
//! `config.json`, `tokenizer.json`; check the written directory.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;

use super::assemble_plan::{
    add_component, adopt_configs, extend_tokenizer, grow_embeddings, select_sam_tokens, Fetch,
    Plan, Planned,
};
use crate::config::UniResConfig;
use crate::error::{Error, Result};
use crate::io::read::{read_capped, MAX_TOKENIZER_BYTES};
use crate::model::init::SeededVarMap;
use crate::model::unires::check::{check_checkpoint, requested_tensors};
use crate::model::unires::load::check_dir;
use crate::model::unires::prompt::PromptBuilder;
use crate::model::unires::UniRes;
use crate::weights::checkpoint::{
    dtype_name, first_names, TensorIndex, TensorInfo, INDEX_FILE, SINGLE_FILE,
};
use crate::weights::inputs::Input;
use crate::weights::rename::{classify, layout_by_name, Component};
use crate::weights::validate::id_bound;

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
    /// Seeded initialisation as [`UniRes::fresh`]: masks will be meaningless.
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
    let tok_bytes = read_capped(&opts.tokenizer, MAX_TOKENIZER_BYTES, "tokenizer")?;
    let mut tok = tokenizers::Tokenizer::from_bytes(&tok_bytes).map_err(|e| Error::Tokenizer {
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
