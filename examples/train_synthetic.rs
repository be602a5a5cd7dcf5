//! Trains the `tiny` preset on the synthetic multi-granularity benchmark and writes a
//! checkpoint directory (`config.json`, `model.safetensors`, `tokenizer.json`,
//! `train_log.json`) that `unires segment --weights DIR` and `unires eval` load, plus
//! `aux.safetensors` (the training-only heads, read back by `--init` to continue a run).
//!
//! ```text
//! cargo run --release --example train_synthetic -- --out weights/tiny
//! ```
//!
//! The shipped weights are the output of one command (weights.md section 6):
//!
//! ```text
//! cargo run --release --example train_synthetic -- --recipe shipped --out weights/tiny
//! ```
//!
//! Every run is a function of `--seed` (initialisation), `--data-seed` (scenes) and the
//! options: scene `i` of the data seed feeds step `i / batch`. The evaluation seeds used in
//! weights.md are different from the data seed, so the reported numbers are on unseen scenes.
//! At the end the run scores the saved checkpoint on unseen scenes with each proposal mode
//! and writes that into `train_log.json`.

use std::path::PathBuf;
use std::time::Instant;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use unires::config::UniResConfig;
use unires::eval::synthetic::{evaluate_model, SyntheticEvalOptions};
use unires::model::unires::prompt::{word_level_prompt, PromptBuilder};
use unires::proposals::SelectiveSearch;
use unires::synthetic::{self, vocabulary, DetectorConfig, ProposalMode, SyntheticConfig};
use unires::train::{RegionAttribute, TrainOptions, TrainQuery, TrainScene, Trainer};
use unires::ProposalSource;

#[derive(Parser, Debug)]
#[command(about = "Train the tiny UniRES++ preset on synthetic scenes")]
struct Args {
    /// A named set of options: `shipped` is the recipe of the embedded weights (options
    /// given on the command line still win).
    #[arg(long)]
    recipe: Option<String>,
    /// Output checkpoint directory.
    #[arg(long, default_value = "weights/tiny")]
    out: PathBuf,
    /// Optimisation steps.
    #[arg(long, default_value_t = 3000)]
    steps: usize,
    /// Scenes per step.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Queries per scene.
    #[arg(long, default_value_t = 4)]
    queries: usize,
    /// Peak learning rate (AdamW, warm-up then cosine decay).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = 150)]
    warmup: usize,
    /// Seed of the variable initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seed of the training scenes.
    #[arg(long, default_value_t = 1)]
    data_seed: u64,
    /// Fraction of scenes whose proposals come from the built-in selective search instead of
    /// the simulated detector.
    #[arg(long, default_value_t = 0.2)]
    selective_search: f64,
    /// Fraction of scenes whose proposals come from the noisy simulated detector
    /// ([`DetectorConfig::noisy`]: misses, wide jitter, false and merged boxes).
    #[arg(long, default_value_t = 0.0)]
    noisy: f64,
    /// Fraction of queries whose phrase is perturbed (function words dropped, an unknown word
    /// inserted: `unires::synthetic::perturb`), so that the granularity is read from the nouns.
    #[arg(long, default_value_t = 0.0)]
    perturb: f64,
    /// Fraction of scenes given no proposals at all (the model then sees the whole-image
    /// object box, as at inference).
    #[arg(long, default_value_t = 0.0)]
    zero_proposals: f64,
    /// Let the region tokens attend to each other in the LLM (`region.bidirectional_regions`;
    /// saved in the checkpoint's config).
    #[arg(long)]
    bidirectional_regions: bool,
    /// Long side of the high-resolution input (the preset's value when absent).
    #[arg(long)]
    hires: Option<usize>,
    /// Print the losses every this many steps.
    #[arg(long, default_value_t = 25)]
    log_every: usize,
    /// Save the weights every this many steps (and at the end).
    #[arg(long, default_value_t = 500)]
    save_every: usize,
    /// Dtype of the saved weights: f32, f16 or bf16 (training is always f32).
    #[arg(long, default_value = "f16")]
    store_dtype: String,
    /// Weight of the auxiliary region-attribute loss (class and colour of objects, kind and
    /// parent colour of parts, predicted from the LLM's region states; 0 = off).
    #[arg(long, default_value_t = 0.5)]
    attribute_weight: f64,
    /// Weight of the auxiliary position loss (the box encoding of each region and of the
    /// target of single-target expressions, regressed from the LLM states by one head; 0 = off).
    #[arg(long, default_value_t = 0.0)]
    position_weight: f64,
    /// Probability that a positive object/part expression is about an object whose class
    /// repeats in the scene (these need colour or a relation); the benchmark's default is 0.3.
    #[arg(long, default_value_t = 0.3)]
    sibling_target_prob: f32,
    /// Weight of the no-target (target score) loss.
    #[arg(long, default_value_t = 0.5)]
    target_weight: f64,
    /// Weight of the competing-selection cross-entropy (part and object queries).
    #[arg(long, default_value_t = 1.0)]
    rank_weight: f64,
    /// Weight of the region-selection loss.
    #[arg(long, default_value_t = 1.0)]
    select_weight: f64,
    /// Teacher forcing of the box prompts: the weight of the ground-truth region selection
    /// in what the mask decoder sees, decayed linearly to 0 over the steps.
    #[arg(long, default_value_t = 0.0)]
    teacher_forcing: f64,
    /// Steps over which teacher forcing decays to 0 (default: all of them).
    #[arg(long)]
    teacher_forcing_steps: Option<usize>,
    /// Scenes of each proposal mode scored at the end (unseen seed 1000; 0 = no evaluation).
    #[arg(long, default_value_t = 200)]
    eval_scenes: usize,
    /// Start from the weights of this checkpoint directory instead of a fresh initialisation.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Stop after this many seconds (the learning-rate schedule still assumes `--steps`).
    #[arg(long)]
    max_seconds: Option<f64>,
}

/// Sets the options of `recipe` that were not given on the command line.
fn apply_recipe(args: &mut Args, m: &ArgMatches) -> unires::Result<()> {
    let Some(name) = args.recipe.clone() else {
        return Ok(());
    };
    if name != "shipped" {
        return Err(unires::Error::Config {
            what: "recipe".into(),
            reason: format!("unknown recipe `{name}` (known: shipped)"),
        });
    }
    let unset = |id: &str| m.value_source(id) != Some(ValueSource::CommandLine);
    macro_rules! set {
        ($field:ident, $value:expr) => {
            if unset(stringify!($field)) {
                args.$field = $value;
            }
        };
    }
    set!(steps, 6500);
    set!(batch, 4);
    set!(queries, 4);
    set!(lr, 1e-3);
    set!(warmup, 150);
    set!(seed, 0);
    set!(data_seed, 1);
    set!(hires, Some(160));
    set!(selective_search, 0.2);
    set!(noisy, 0.3);
    set!(zero_proposals, 0.03);
    set!(perturb, 0.25);
    set!(teacher_forcing, 1.0);
    set!(teacher_forcing_steps, Some(2500));
    set!(select_weight, 2.0);
    set!(attribute_weight, 0.5);
    set!(position_weight, 1.0);
    set!(target_weight, 1.0);
    set!(rank_weight, 1.0);
    set!(sibling_target_prob, 0.45);
    set!(store_dtype, "f16".to_string());
    Ok(())
}

/// Attribute classes: object = class × colour (30), part = 30 + kind × parent colour (66).
const ATTRIBUTE_CLASSES: usize = 30 + 11 * 6;

fn attributes(scene: &synthetic::Scene) -> Vec<RegionAttribute> {
    let mut out = Vec::new();
    for o in &scene.objects {
        let colour = o.colour as u32;
        out.push(RegionAttribute {
            bbox: o.bbox,
            part: false,
            label: o.class as u32 * 6 + colour,
        });
        for p in &o.parts {
            out.push(RegionAttribute {
                bbox: p.bbox,
                part: true,
                label: 30 + p.kind as u32 * 6 + colour,
            });
        }
    }
    out
}

/// Where a training scene's proposals come from.
enum Source {
    /// The episode's simulated detector (σ 3 % jitter, 5 % misses).
    Episode,
    /// The built-in selective search.
    Builtin,
    /// The noisy detector, on its own stream of the scene.
    Noisy(synthetic::SplitMix64),
    /// None (the whole-image box stands in).
    Zero,
}

/// Converts an episode into a training scene with `q` queries (a deterministic choice).
fn train_scene(
    ep: synthetic::Episode,
    q: usize,
    rng: &mut synthetic::SplitMix64,
    source: Source,
    perturb: f64,
) -> unires::Result<TrainScene> {
    let proposals = match source {
        Source::Episode => ep.proposals,
        Source::Builtin => SelectiveSearch::default().propose(&ep.scene.image)?,
        Source::Noisy(mut prng) => {
            synthetic::detector_proposals(&ep.scene, &mut prng, &DetectorConfig::noisy())
        }
        Source::Zero => unires::Proposals::new(Vec::new(), Vec::new()),
    };
    let mut samples = ep.samples;
    // Fisher-Yates with the episode's generator, then the first `q`.
    for i in (1..samples.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        samples.swap(i, j);
    }
    samples.truncate(q);
    let queries = samples
        .into_iter()
        .map(|s| {
            let mut t = TrainQuery::from(s);
            if rng.unit_f64() < perturb {
                t.expression = synthetic::perturb(&t.expression, rng);
            }
            t
        })
        .collect();
    let attributes = attributes(&ep.scene);
    Ok(TrainScene {
        attributes,
        image: ep.scene.image,
        proposals,
        queries,
    })
}

fn main() -> unires::Result<()> {
    let matches = Args::command().get_matches();
    let mut args = Args::from_arg_matches(&matches).map_err(|e| unires::Error::Config {
        what: "arguments".into(),
        reason: e.to_string(),
    })?;
    apply_recipe(&mut args, &matches)?;
    let mut cfg = UniResConfig::tiny();
    if let Some(h) = args.hires {
        cfg.hires.image_size = h;
    }
    cfg.region.bidirectional_regions = args.bidirectional_regions;
    // A run that starts from a checkpoint keeps that checkpoint's tokenizer: its embedding
    // rows are indexed by those ids (a freshly built vocabulary may order words differently).
    let init_tokenizer = args
        .init
        .as_ref()
        .map(|d| d.join("tokenizer.json"))
        .filter(|p| p.exists());
    let (prompt, tokenizer_json) = match &init_tokenizer {
        Some(path) => {
            let json = std::fs::read_to_string(path).map_err(|e| unires::Error::io(path, e))?;
            let tok = PromptBuilder::tokenizer_from_json(json.as_bytes())?;
            let prompt = PromptBuilder::new(tok, &cfg.tokens, &cfg.prompt, &cfg.limits)?;
            eprintln!("tokenizer from {}", path.display());
            (prompt, json)
        }
        None => word_level_prompt(&cfg.prompt, &cfg.tokens, &cfg.limits, &vocabulary())?,
    };
    let opts = TrainOptions {
        seed: args.seed,
        steps: args.steps,
        lr: args.lr,
        warmup: args.warmup,
        weights: unires::train::LossWeights {
            select: args.select_weight,
            attributes: args.attribute_weight,
            position: args.position_weight,
            target: args.target_weight,
            rank: args.rank_weight,
            ..Default::default()
        },
        ..TrainOptions::default()
    };
    let store = unires::weights::parse_dtype(&args.store_dtype)?;
    let mut trainer =
        Trainer::with_attribute_classes(&cfg, prompt, opts.clone(), ATTRIBUTE_CLASSES)?;
    if let Some(dir) = &args.init {
        let path = dir.join("model.safetensors");
        let mut loaded = candle_core::safetensors::load(&path, &candle_core::Device::Cpu)?;
        // The training-only heads of the run it continues, when that run saved them.
        let aux = dir.join("aux.safetensors");
        if aux.exists() {
            loaded.extend(candle_core::safetensors::load(
                &aux,
                &candle_core::Device::Cpu,
            )?);
        }
        let vars = trainer
            .varmap
            .data()
            .lock()
            .map_err(|_| unires::Error::shape("init", "variable map lock poisoned"))?;
        for (name, var) in vars.iter() {
            match loaded.get(name) {
                Some(t) => var.set(&t.to_dtype(candle_core::DType::F32)?)?,
                None => eprintln!("{name}: not in {}, keeps its fresh value", path.display()),
            }
        }
        eprintln!("initialised from {}", path.display());
    }
    let n_params: usize = trainer
        .varmap
        .all_vars()
        .iter()
        .map(|v| v.as_tensor().elem_count())
        .sum();
    eprintln!(
        "tiny preset: {n_params} parameters; {} steps of {} scenes × {} queries",
        args.steps, args.batch, args.queries
    );
    std::fs::create_dir_all(&args.out).map_err(|e| unires::Error::io(&args.out, e))?;
    let cfg_json = serde_json::to_string_pretty(&cfg).map_err(|e| unires::Error::Config {
        what: "config".into(),
        reason: e.to_string(),
    })?;
    let write = |name: &str, text: &str| {
        let p = args.out.join(name);
        std::fs::write(&p, text).map_err(|e| unires::Error::io(&p, e))
    };
    write("config.json", &cfg_json)?;
    write("tokenizer.json", &tokenizer_json)?;
    let data_cfg = SyntheticConfig {
        sibling_target_prob: args.sibling_target_prob,
        ..SyntheticConfig::mixed_sizes()
    };
    let mut rng = synthetic::SplitMix64::new(args.data_seed ^ 0x7472_6169_6e00);
    let start = Instant::now();
    let mut log = Vec::new();
    let mut avg = [0f64; 9];
    let mut n_avg = 0usize;
    let mut done = 0usize;
    for step in 0..args.steps {
        let batch = (0..args.batch)
            .map(|b| {
                let index = (step * args.batch + b) as u64;
                let ep = synthetic::episode(args.data_seed, index, &data_cfg);
                let u = rng.unit_f64();
                let source = if rng.unit_f64() < args.zero_proposals {
                    Source::Zero
                } else if u < args.selective_search {
                    Source::Builtin
                } else if u < args.selective_search + args.noisy {
                    Source::Noisy(synthetic::SplitMix64::stream(args.data_seed, &[index, 3]))
                } else {
                    Source::Episode
                };
                train_scene(ep, args.queries, &mut rng, source, args.perturb)
            })
            .collect::<unires::Result<Vec<_>>>()?;
        let tf_steps = args.teacher_forcing_steps.unwrap_or(args.steps).max(1);
        trainer.opts.weights.teacher_forcing =
            args.teacher_forcing * (1.0 - step as f64 / tf_steps as f64).max(0.0);
        let (parts, norm) = trainer.step(&batch)?;
        done = step + 1;
        for (a, v) in avg.iter_mut().zip([
            parts.total,
            parts.mask_bce,
            parts.mask_dice,
            parts.granularity,
            parts.target,
            parts.select,
            parts.attributes,
            parts.position,
            parts.rank,
        ]) {
            *a += f64::from(v);
        }
        n_avg += 1;
        if done % args.log_every == 0 || done == args.steps {
            let m: Vec<f64> = avg.iter().map(|a| a / n_avg as f64).collect();
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "step {done:5}  loss {:.4}  bce {:.4}  dice {:.4}  gran {:.4}  target {:.4}  select {:.4}  attr {:.4}  pos {:.4}  rank {:.4}  |g| {norm:.2}  lr {:.2e}  {secs:.0}s",
                m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8],
                unires::train::lr_at(&opts, step)
            );
            log.push(serde_json::json!({
                "step": done, "seconds": secs, "loss": m[0], "mask_bce": m[1],
                "mask_dice": m[2], "granularity": m[3], "target": m[4], "select": m[5],
                "attributes": m[6], "position": m[7], "rank": m[8],
                "grad_norm": norm,
            }));
            avg = [0.0; 9];
            n_avg = 0;
        }
        if done % args.save_every == 0 {
            trainer.save(&args.out.join("model.safetensors"), store)?;
            trainer.save_aux(&args.out.join("aux.safetensors"))?;
        }
        if let Some(max) = args.max_seconds {
            if start.elapsed().as_secs_f64() > max {
                eprintln!("time limit reached after {done} steps");
                break;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    trainer.save(&args.out.join("model.safetensors"), store)?;
    trainer.save_aux(&args.out.join("aux.safetensors"))?;
    drop(trainer);
    let final_eval = final_eval(&args)?;
    let summary = serde_json::json!({
        "recipe": args.recipe, "steps": done, "planned_steps": args.steps,
        "batch": args.batch, "queries": args.queries, "seed": args.seed,
        "data_seed": args.data_seed, "lr": args.lr, "warmup": args.warmup,
        "selective_search": args.selective_search, "noisy": args.noisy,
        "zero_proposals": args.zero_proposals, "perturb": args.perturb, "teacher_forcing": args.teacher_forcing,
        "teacher_forcing_steps": args.teacher_forcing_steps,
        "attribute_weight": args.attribute_weight, "select_weight": args.select_weight,
        "position_weight": args.position_weight, "target_weight": args.target_weight,
        "rank_weight": args.rank_weight, "sibling_target_prob": args.sibling_target_prob,
        "init": args.init, "hires": cfg.hires.image_size, "store_dtype": args.store_dtype,
        "config": cfg, "parameters": n_params, "seconds": secs, "log": log,
        "final_eval": final_eval,
    });
    write(
        "train_log.json",
        &serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )?;
    eprintln!(
        "trained {done} steps in {secs:.0} s; wrote {}",
        args.out.display()
    );
    Ok(())
}

/// Scores the saved checkpoint (as users load it: stored dtype, read back in f32) on
/// `--eval-scenes` scenes of the unseen seed 1000 with each proposal mode.
fn final_eval(args: &Args) -> unires::Result<serde_json::Value> {
    if args.eval_scenes == 0 {
        return Ok(serde_json::Value::Null);
    }
    let model = unires::load(
        &unires::Source::Dir(args.out.clone()),
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
    )?;
    let mut out = serde_json::Map::new();
    out.insert("seed".into(), 1000.into());
    out.insert("scenes".into(), args.eval_scenes.into());
    for mode in ProposalMode::ALL {
        let opts = SyntheticEvalOptions {
            proposals: mode,
            ..SyntheticEvalOptions::new(1000, args.eval_scenes)
        };
        let report = evaluate_model(&model, &opts)?;
        eprintln!(
            "eval ({mode}): {}",
            report
                .metrics
                .iter()
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        out.insert(
            mode.name().into(),
            serde_json::to_value(&report.metrics).unwrap_or_default(),
        );
    }
    Ok(serde_json::Value::Object(out))
}
