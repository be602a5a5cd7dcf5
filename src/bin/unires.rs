//! The `unires` command-line program.
//!
//! Every failure is a typed [`unires::Error`] printed as one line on stderr with exit code 1;
//! usage errors exit with code 2 (clap's convention).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use candle_core::{DType, Device};
use clap::{Parser, Subcommand};
use unires::io::rle::CocoRle;
use unires::io::weights::{load, Source};
use unires::{Error, Granularity, Result};

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
    /// Proposal boxes JSON: {"objects": [[x1,y1,x2,y2],...], "parts": [...]}. Without it the
    /// built-in proposal generator is used.
    #[arg(long)]
    boxes: Option<PathBuf>,
    /// A unires checkpoint directory (default: the embedded tiny model).
    #[arg(long)]
    weights: Option<PathBuf>,
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
    let image = unires::io::image::load_image(&args.image, &limits)?;
    let proposals = match &args.boxes {
        Some(p) => unires::io::boxes::load_boxes(p, image.width(), image.height())?,
        None => {
            use unires::ProposalSource;
            unires::proposals::SelectiveSearch::default().propose(&image)?
        }
    };
    let source = match &args.weights {
        Some(dir) => Source::Dir(dir.clone()),
        None => Source::Embedded,
    };
    let dtype = if args.bf16 { DType::BF16 } else { DType::F32 };
    let model = load(&source, &Device::Cpu, dtype)?;
    let encoded = model.encode(&image, &proposals)?;
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
        let instances: Vec<serde_json::Value> = seg
            .instances
            .iter()
            .map(|i| {
                serde_json::json!({
                    "bbox": i.bbox.to_xywh(),
                    "score": i.score,
                    "rle": CocoRle::from_mask(&i.mask),
                })
            })
            .collect();
        let v = serde_json::json!({
            "granularity": seg.granularity.as_str(),
            "score": seg.score,
            "empty": seg.is_empty(),
            "size": [seg.mask.height(), seg.mask.width()],
            "rle": CocoRle::from_mask(&seg.mask),
            "instances": instances,
        });
        write_json(path, &v)?;
    }
    eprintln!(
        "{}: granularity {} (p = {:.2}/{:.2}/{:.2}), target score {:.3}, {} px, {} instance(s) → {}",
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Segment(a) => segment(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
