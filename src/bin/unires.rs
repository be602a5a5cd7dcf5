//! The `unires` command-line program.
//!
//! Every failure is a typed [`unires::Error`] printed as one line on stderr with exit code 1;
//! usage errors exit with code 2 (clap's convention). Inputs that are only suspicious (boxes
//! clipped or dropped, no object proposals) are `warning:` lines, and the command goes on.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use candle_core::DType;
use clap::{Parser, Subcommand};
use unires::model::unires::assemble::{assemble, parse_size, AssembleOptions, GlueSource};
use unires::weights::hub::HubOptions;
use unires::weights::inputs::{resolve, resolve_tokenizer};
use unires::weights::{parse_device, parse_dtype, Source};
use unires::{load_segmenter, Error, Granularity, Result};

#[derive(Parser)]
#[command(
    name = "unires",
    version,
    about = "Multi-granularity referring expression segmentation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Segment what an expression refers to in an image.
    Segment(SegmentArgs),
    /// Build a unires checkpoint directory from published component checkpoints.
    Assemble(AssembleArgs),
    /// Score a model (or a prediction file) on a benchmark, or on fresh synthetic scenes.
    Eval(EvalArgs),
    /// Hold a model and answer requests: JSON lines on stdin/stdout, or HTTP.
    #[cfg(feature = "serve")]
    Serve(ServeArgs),
}

#[cfg(feature = "serve")]
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("transport").required(true).args(["stdio", "listen"])))]
struct ServeArgs {
    /// JSON lines: one request per line on stdin, one response per line on stdout.
    #[arg(long)]
    stdio: bool,
    /// HTTP on this address (e.g. 127.0.0.1:8080; port 0 picks one, printed on stderr).
    #[arg(long)]
    listen: Option<String>,
    #[command(flatten)]
    model: ModelArgs,
    /// Compute dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Threads answering requests (they share one model).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Requests waiting for a thread before new ones are answered "busy".
    #[arg(long, default_value_t = 16)]
    queue: usize,
    /// Memory for encoded frames, in MiB (0: no cache).
    #[arg(long, default_value_t = 512)]
    cache_mb: usize,
    /// Image paths in requests are resolved under this folder only. Without it, HTTP accepts
    /// only inline images (image_b64) and stdio takes paths as given.
    #[arg(long)]
    image_root: Option<PathBuf>,
    /// A file holding the bearer token HTTP requests must carry (needed off loopback).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Largest request (body or line), in MiB.
    #[arg(long, default_value_t = 48)]
    max_request_mb: usize,
}

#[cfg(feature = "serve")]
fn run_serve(a: ServeArgs) -> Result<()> {
    use std::sync::Arc;
    use unires::serve::{
        serve_lines, stop_on_signals, Engine, EngineOptions, HttpOptions, HttpServer, ServeLimits,
        StdioOptions,
    };
    let token = match &a.token_file {
        Some(p) => {
            let t = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            let t = t.trim().to_string();
            if t.is_empty() {
                return Err(Error::Config {
                    what: p.display().to_string(),
                    reason: "the token file is empty".into(),
                });
            }
            Some(t)
        }
        None => None,
    };
    // Bind before loading the model, so that a bad address fails at once.
    let server = match &a.listen {
        Some(addr) => Some(HttpServer::bind(HttpOptions {
            addr: addr.clone(),
            workers: a.workers,
            queue: a.queue,
            token,
        })?),
        None => None,
    };
    let stop = stop_on_signals()?;
    let model = load_model(&a.model, parse_dtype(&a.dtype)?)?;
    let limits = ServeLimits {
        max_request_bytes: a.max_request_mb << 20,
        ..ServeLimits::default()
    };
    let engine = Arc::new(Engine::new(
        model,
        EngineOptions {
            cache_bytes: a.cache_mb << 20,
            image_root: a.image_root.clone(),
            paths_without_root: server.is_none(),
            limits,
        },
    )?);
    match server {
        Some(server) => {
            eprintln!("unires serve: listening on http://{}", server.addr());
            server.serve(engine, stop)
        }
        None => {
            let opts = StdioOptions {
                workers: a.workers,
                queue: a.queue,
            };
            let out = std::io::stdout();
            let input = std::io::BufReader::new(std::io::stdin());
            serve_lines(engine, input, out, opts, stop)?;
            Ok(())
        }
    }
}

#[derive(clap::Args)]
struct EvalArgs {
    /// synthetic, refcoco, refcoco+, refcocog, grefcoco or refcocom.
    #[arg(long)]
    dataset: String,
    /// Synthetic: seed of the generated scenes (the embedded model was trained on seed 1).
    #[arg(long, default_value_t = 1000)]
    seed: u64,
    /// Synthetic: number of scenes (8 expressions each).
    #[arg(long, default_value_t = 200)]
    n: usize,
    /// Synthetic: where the proposals come from: simulated (a clean detector), noisy (misses,
    /// wide jitter, false and merged boxes) or builtin (the crate's own generator).
    #[arg(long, default_value = "simulated")]
    proposals: String,
    /// Synthetic: trained (the training templates) or heldout (phrasings never trained on).
    #[arg(long, default_value = "trained")]
    phrasing: String,
    /// Published benchmarks: the dataset root (see docs/eval.md).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Published benchmarks: the split (val, testA, …).
    #[arg(long)]
    split: Option<String>,
    /// Published benchmarks: the split scheme (unc, google, umd).
    #[arg(long)]
    split_by: Option<String>,
    /// Published benchmarks: score this prediction file instead of running a model.
    #[arg(long, conflicts_with_all = ["weights", "hub"])]
    predictions: Option<PathBuf>,
    /// Published benchmarks: score only the first N samples.
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    model: ModelArgs,
    /// Compute dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Also write the report as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Synthetic: also print gIoU, N-acc and T-acc at no-target thresholds 0.05, 0.10, …,
    /// 0.95 (to choose `no_target_threshold` on a seed that is not the test seed).
    #[arg(long)]
    sweep_threshold: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn model_source(m: &ModelArgs) -> Source {
    match (&m.weights, &m.hub) {
        (Some(dir), _) => Source::Dir(dir.clone()),
        (None, Some(spec)) => Source::hub(spec),
        (None, None) => Source::Embedded,
    }
}

fn run_eval(a: EvalArgs) -> Result<()> {
    use unires::eval::{self, DatasetKind, EvalOptions, Predictions};
    let dtype = parse_dtype(&a.dtype)?;
    if a.dataset.trim().eq_ignore_ascii_case("synthetic") {
        let mut opts = eval::synthetic::SyntheticEvalOptions::new(a.seed, a.n);
        opts.proposals = a.proposals.parse()?;
        opts.phrasing = a.phrasing.parse()?;
        opts.progress = !a.quiet;
        let model = load_model(&a.model, dtype)?;
        let start = std::time::Instant::now();
        let outcomes = eval::synthetic::score_scenes(model.as_ref(), &opts)?;
        let report = eval::synthetic::summarise(
            a.n,
            &outcomes,
            model.no_target_threshold(),
            start.elapsed().as_secs_f64(),
        )
        .with_setup(&opts);
        print!("{}", report.table());
        if a.sweep_threshold {
            let ts: Vec<f32> = (1..20).map(|i| i as f32 * 0.05).collect();
            println!("\n| no-target threshold | gIoU | N-acc | T-acc |\n|---:|---:|---:|---:|");
            for r in eval::synthetic::threshold_sweep(&outcomes, &ts) {
                println!(
                    "| {:.2} | {:.2} | {:.2} | {:.2} |",
                    r.threshold, r.giou, r.n_acc, r.t_acc
                );
            }
        }
        if let Some(path) = &a.report {
            let v = serde_json::to_value(&report).map_err(|e| Error::Json {
                path: path.clone(),
                source: e,
            })?;
            write_json(path, &v)?;
        }
        return Ok(());
    }
    let kind: DatasetKind = a.dataset.parse()?;
    let root = a.root.as_ref().ok_or(Error::MissingArgument {
        what: "--root (the dataset directory)",
    })?;
    let split = a
        .split
        .as_deref()
        .ok_or(Error::MissingArgument { what: "--split" })?;
    let split_by = a.split_by.as_deref().map(str::parse).transpose()?;
    let ds = eval::load_dataset(kind, root, split, split_by)?;
    let sum = ds.summary();
    eprintln!(
        "loaded {} {}: {} images, {} referents, {} instances, {} sentences ({} no-target, {} multi-target)",
        ds.name(),
        ds.split(),
        sum.images,
        sum.refs,
        sum.instances,
        sum.sentences,
        sum.no_target,
        sum.multi_target
    );
    let opts = EvalOptions {
        limit: a.limit,
        progress: !a.quiet,
    };
    let report = match &a.predictions {
        Some(p) => {
            let preds = Predictions::from_path(p)?;
            eval::score_predictions(ds.as_ref(), &preds, &opts)?
        }
        None => {
            use unires::ProposalSource;
            let model = load_model(&a.model, dtype)?;
            let limits = unires::config::Limits::default();
            let search = unires::proposals::SelectiveSearch::default();
            eval::evaluate(ds.as_ref(), &opts, |s| {
                let image = unires::io::image::load_image(&s.image_path, &limits)?;
                let proposals = search.propose(&image)?;
                let enc = model.encode(&image, &proposals)?;
                let g = s.granularity.unwrap_or(match kind {
                    DatasetKind::GRefCoco => Granularity::Auto,
                    _ => Granularity::Object,
                });
                Ok(model.segment(&enc, &s.sentence, g)?.mask)
            })?
        }
    };
    println!("{} {}: {} samples", report.dataset, report.split, report.n);
    println!("| metric | value |\n|---|---:|");
    for (k, v) in report.metrics.iter() {
        println!("| {k} | {v:.2} |");
    }
    if let Some(path) = &a.report {
        let v = serde_json::to_value(&report).map_err(|e| Error::Json {
            path: path.clone(),
            source: e,
        })?;
        write_json(path, &v)?;
    }
    Ok(())
}

/// Where the model comes from and where it runs.
#[derive(clap::Args)]
struct ModelArgs {
    /// A checkpoint directory: unires, or EVF-SAM as published (default: the embedded tiny
    /// model).
    #[arg(long, conflicts_with = "hub")]
    weights: Option<PathBuf>,
    /// A hub repository holding a checkpoint (unires, or EVF-SAM such as YxZhang/evf-sam):
    /// owner/name[@revision]. Honours HF_HOME,
    /// HF_HUB_OFFLINE, HF_ENDPOINT, HF_TOKEN.
    #[arg(long)]
    hub: Option<String>,
    /// cpu, cuda[:N] or metal (GPUs need the matching cargo feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Quantise the LLM's linear weights at load: q8_0 or q4k (UniRES++ only; see weights.md).
    #[arg(long)]
    quantize: Option<String>,
}

/// Loads the model `m` names onto its device in `dtype`, quantised when asked.
fn load_model(m: &ModelArgs, dtype: DType) -> Result<Box<dyn unires::Segmenter>> {
    let quantize = m
        .quantize
        .as_deref()
        .map(str::parse::<unires::Quantization>)
        .transpose()?;
    let device = parse_device(&m.device)?;
    let mut model = load_segmenter(&model_source(m), &device, dtype)?;
    if let Some(q) = quantize {
        let r = model.quantize(q)?;
        eprintln!(
            "quantised {} linear layers to {q}: {:.1} MiB -> {:.1} MiB",
            r.layers,
            r.bytes_before as f64 / 1048576.0,
            r.bytes_after as f64 / 1048576.0
        );
    }
    Ok(model)
}

#[derive(clap::Args)]
struct SegmentArgs {
    /// Input image (PNG, JPEG or BMP).
    #[arg(long)]
    image: PathBuf,
    /// The referring expression.
    #[arg(long)]
    expression: String,
    /// part, object, multi or auto.
    #[arg(long, default_value = "auto")]
    granularity: String,
    /// Proposal boxes JSON: {"objects": [[x1,y1,x2,y2],...], "parts": [...]}. Boxes reaching
    /// outside the image are clipped, those left empty dropped (with a warning); without
    /// object boxes the whole image is the object proposal. Without the option the built-in
    /// proposal generator is used.
    #[arg(long)]
    boxes: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Compute dtype: f32, f16 or bf16.
    #[arg(long, conflicts_with = "bf16")]
    dtype: Option<String>,
    /// Where to write the mask PNG (0/255).
    #[arg(long)]
    out: PathBuf,
    /// Where to write an overlay PNG (mask tinted over the image).
    #[arg(long)]
    overlay: Option<PathBuf>,
    /// Where to write the result JSON (granularity, score, COCO RLE, instances).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Compute in bf16 instead of f32.
    #[arg(long)]
    bf16: bool,
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        source: e,
    })?;
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}

fn segment(args: SegmentArgs) -> Result<()> {
    let granularity: Granularity = args.granularity.parse()?;
    // Cheap input checks first, so bad input fails before the model loads.
    if args.expression.trim().is_empty() {
        return Err(Error::EmptyExpression);
    }
    let limits = unires::config::Limits::default();
    let chars = args.expression.trim().chars().count();
    if chars > limits.max_expression_chars {
        return Err(Error::ExpressionTooLong {
            chars,
            max: limits.max_expression_chars,
        });
    }
    let image = unires::io::image::load_image(&args.image, &limits)?;
    let boxes = match &args.boxes {
        Some(p) => {
            let (boxes, report) =
                unires::io::boxes::load_boxes(p, image.width(), image.height(), &limits)?;
            if let Some(w) = report.warning() {
                eprintln!("warning: {}: {w}", p.display());
            }
            Some(boxes)
        }
        None => None,
    };
    let dtype = match &args.dtype {
        Some(d) => parse_dtype(d)?,
        None if args.bf16 => DType::BF16,
        None => DType::F32,
    };
    let model = load_model(&args.model, dtype)?;
    let proposals = match boxes {
        Some(b) => b,
        None if model.uses_proposals() => {
            use unires::ProposalSource;
            unires::proposals::SelectiveSearch::default().propose(&image)?
        }
        None => unires::Proposals::default(),
    };
    let encoded = model.encode(&image, &proposals)?;
    if proposals.objects.is_empty() && !encoded.proposals.objects.is_empty() {
        eprintln!("warning: no object proposals; the whole image is the one object proposal");
    }
    let seg = model.segment(&encoded, &args.expression, granularity)?;

    unires::io::mask::save_mask_png(&seg.mask, &args.out)?;
    if let Some(path) = &args.overlay {
        let masks: Vec<&unires::Mask> = if seg.instances.is_empty() {
            vec![&seg.mask]
        } else {
            seg.instances.iter().map(|i| &i.mask).collect()
        };
        unires::io::mask::save_overlay(&image, &masks, path)?;
    }
    if let Some(path) = &args.json {
        let v = unires::io::result::segmentation_json(&seg);
        write_json(path, &v)?;
    }
    eprintln!(
        "{}: granularity {} (p = {:.2}/{:.2}/{:.2}), score {:.3}, {} px, {} instance(s) → {}",
        args.expression.trim(),
        seg.granularity,
        seg.granularity_probs[0],
        seg.granularity_probs[1],
        seg.granularity_probs[2],
        seg.score,
        seg.mask.area(),
        seg.instances.len(),
        args.out.display()
    );
    Ok(())
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("glue_source").required(true).args(["glue", "fresh_glue"])))]
struct AssembleArgs {
    /// Output directory (created; must be empty if it exists).
    #[arg(long)]
    out: PathBuf,
    /// Preset the configuration starts from: tiny or base.
    #[arg(long, default_value = "base", conflicts_with = "config")]
    preset: String,
    /// A unires config.json to start from instead of a preset.
    #[arg(long)]
    config: Option<PathBuf>,
    /// CLIP ViT: HF CLIPModel / CLIPVisionModel file or directory, or hf:owner/name[@rev].
    #[arg(long)]
    clip: PathBuf,
    /// ConvNeXt: open_clip checkpoint (visual.trunk.*), timm or HF ConvNextModel (or hf:…).
    #[arg(long)]
    convnext: PathBuf,
    /// LLM: HF LlamaForCausalLM directory, index file, comma-separated shards, or hf:….
    #[arg(long, value_delimiter = ',', required = true)]
    llm: Vec<PathBuf>,
    /// SAM: segment-anything .pth or HF SamModel (or hf:…), for the mask decoder and prompt
    /// encoder.
    #[arg(long)]
    sam: Option<PathBuf>,
    /// Trained glue tensors (unires naming): a safetensors file or a unires checkpoint.
    #[arg(long)]
    glue: Option<PathBuf>,
    /// Initialise the glue from a seed instead: the model is untrained, masks are meaningless.
    #[arg(long)]
    fresh_glue: bool,
    /// Seed of --fresh-glue.
    #[arg(long, default_value_t = 0, requires = "fresh_glue")]
    seed: u64,
    /// The LLM's tokenizer.json (or hf:owner/name); unires's special tokens are added if
    /// missing.
    #[arg(long)]
    tokenizer: PathBuf,
    /// Store tensors as f32, f16 or bf16 (default: keep each tensor's dtype).
    #[arg(long)]
    dtype: Option<String>,
    /// Largest shard, e.g. 5GB or 500MB.
    #[arg(long, default_value = "5GB")]
    max_shard_size: String,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn run_assemble(a: AssembleArgs) -> Result<()> {
    let config = match &a.config {
        Some(p) => unires::UniResConfig::from_file(p)?,
        None => unires::UniResConfig::preset(&a.preset)?,
    };
    let glue = match &a.glue {
        Some(p) => GlueSource::File(p.clone()),
        None => GlueSource::Fresh { seed: a.seed },
    };
    // `hf:owner/name[@rev]` components come from the hub (HF_HOME, HF_HUB_OFFLINE, …).
    let hub = HubOptions::from_env();
    let get = |p: &PathBuf| resolve(p, &hub);
    let glue = match glue {
        GlueSource::File(p) => GlueSource::File(get(&p)?),
        fresh => fresh,
    };
    let opts = AssembleOptions {
        out: a.out.clone(),
        config,
        clip: vec![get(&a.clip)?],
        convnext: vec![get(&a.convnext)?],
        llm: a.llm.iter().map(get).collect::<Result<Vec<_>>>()?,
        sam: a.sam.as_ref().map(get).transpose()?.map(|p| vec![p]),
        glue,
        tokenizer: resolve_tokenizer(&a.tokenizer, &hub)?,
        dtype: a.dtype.as_deref().map(parse_dtype).transpose()?,
        max_shard_bytes: parse_size(&a.max_shard_size)?,
        progress: !a.quiet,
    };
    let r = assemble(&opts)?;
    for c in &r.components {
        eprintln!(
            "{:<9} {:<20} {} tensors from {} (config from {}){}",
            c.component.as_str(),
            c.layout,
            c.tensors,
            c.path.display(),
            c.config_from,
            if c.dropped > 0 {
                format!("; {} unused dropped: {}", c.dropped, c.dropped_examples)
            } else {
                String::new()
            }
        );
    }
    if !r.added_tokens.is_empty() {
        eprintln!(
            "tokenizer: added {}; embedding rows {} -> {} (new rows = mean of the old ones)",
            r.added_tokens.join(" "),
            r.vocab_rows.0,
            r.vocab_rows.1
        );
    }
    if r.ignored_glue > 0 {
        eprintln!(
            "glue file: {} tensors of other components ignored",
            r.ignored_glue
        );
    }
    for w in &r.warnings {
        eprintln!("\n*** WARNING: {w} ***\n");
    }
    eprintln!("wrote {} ({} files)", a.out.display(), r.files.len());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Segment(a) => segment(a),
        Command::Assemble(a) => run_assemble(a),
        Command::Eval(a) => run_eval(a),
        #[cfg(feature = "serve")]
        Command::Serve(a) => run_serve(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own consistency checks (argument ids named in conflicts exist, no clashes).
    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
