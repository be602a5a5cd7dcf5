//! Parity suite: every folder in `tests/fixtures/parity/` is one case made by the reference
//! implementation (see `tests/fixtures/gen/`). Each case is run in f32 against the fixture's
//! own `rtol`/`atol` (torch.allclose semantics: |a − b| ≤ atol + rtol·|b|) and, for model
//! kinds, again in bf16 against the looser `bf16_rtol`/`bf16_atol` it states (or, per output,
//! `bf16_atol_per_output`). A bf16 output is compared only where that atol is below a quarter
//! of the output's largest reference magnitude (otherwise zeros would pass); the others are
//! listed as skipped.
//!
//! Environment: `UNIRES_DEVICE` = `cpu` (default), `cuda[:N]` or `metal` picks the device
//! (the GPUs need their cargo feature); the tolerances are the same on every device.
//! `UNIRES_PARITY_DTYPES` (default `f32,bf16`) picks the runs; `f16` adds a run in f16 under
//! the bf16 tolerances. `UNIRES_FIXTURES` points at another copy of `tests/fixtures`.
//!
//! Run: `cargo test --release --test parity [-- FILTER... | --list | --exact | --skip F]`
//! (libtest's arguments, see `args.rs`). Prints one line per case and run, per bf16 output
//! whether it was compared, `test <case> ... ok|FAILED`, libtest's `test result:` line (one
//! test per case) and last `parity: N passed, M failed` (one per run: f32, bf16, f16).

#[path = "../common/mod.rs"]
mod common;

mod args;
mod beit3;
mod clip_vision;
mod convnext;
mod evf_sam;
mod harness;
mod interpolate;
mod llama;
mod roi_align;
mod sam_image_encoder;
mod sam_mask_decoder;

use std::time::Instant;

use args::{plural, Args};
use harness::{Case, Outcome};

type Runner = fn(&Case) -> harness::Res<Vec<(String, candle_core::Tensor)>>;

fn runner(kind: &str) -> Option<Runner> {
    match kind {
        "beit3" => Some(beit3::run),
        "clip_vision" => Some(clip_vision::run),
        "convnext" => Some(convnext::run),
        "evf_sam" => Some(evf_sam::run),
        "llama" => Some(llama::run),
        "sam_image_encoder" => Some(sam_image_encoder::run),
        "sam_mask_decoder" => Some(sam_mask_decoder::run),
        "sam_prompt_encoder" => Some(sam_mask_decoder::run_prompt),
        "interpolate" => Some(interpolate::run),
        "roi_align" => Some(roi_align::run),
        _ => None,
    }
}

/// The case folders, by name.
fn case_dirs() -> Vec<(String, std::path::PathBuf)> {
    let root = common::fixtures("parity");
    let mut dirs: Vec<_> = match std::fs::read_dir(&root) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .map(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (name, p)
            })
            .collect(),
        Err(e) => {
            eprintln!("parity: cannot read {}: {e}", root.display());
            std::process::exit(1);
        }
    };
    dirs.sort();
    dirs
}

fn run_one(
    name: &str,
    dir: &std::path::Path,
    device: &candle_core::Device,
    dtypes: &[candle_core::DType],
) -> Vec<Outcome> {
    match Case::load(dir, device) {
        Ok(case) => match runner(&case.kind) {
            Some(run) => harness::run_case(&case, run, dtypes),
            None => vec![Outcome::error(name, &case.kind, "no runner for this kind")],
        },
        Err(e) => vec![Outcome::error(name, "?", &e.to_string())],
    }
}

fn main() {
    let args = Args::parse(std::env::args().skip(1));
    for note in &args.notes {
        eprintln!("parity: {note}");
    }
    if args.help {
        println!("{}", args::USAGE);
        return;
    }
    let all = case_dirs();
    let selected: Vec<_> = all.iter().filter(|(n, _)| args.selects(n)).collect();
    let filtered_out = all.len() - selected.len();

    if args.list {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        if !args.quiet {
            if !selected.is_empty() {
                println!();
            }
            println!("{}, 0 benchmarks", plural(selected.len(), "test"));
        }
        return;
    }

    let dtypes = match harness::run_dtypes() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("parity: {e}");
            std::process::exit(2);
        }
    };
    let device = common::device();
    let names: Vec<&str> = dtypes.iter().map(|d| harness::dtype_name(*d)).collect();
    eprintln!(
        "parity: device {} ({:?}), runs {}",
        common::device_name(),
        device.location(),
        names.join(", ")
    );

    let start = Instant::now();
    println!("\nrunning {}", plural(selected.len(), "test"));
    let (mut runs_passed, mut runs_failed) = (0usize, 0usize);
    let (mut half_checked, mut half_skipped) = (0usize, 0usize);
    let mut failed_cases = Vec::new();
    for (name, dir) in &selected {
        let outcomes = run_one(name, dir, &device, &dtypes);
        let ok = outcomes.iter().all(|o| o.ok);
        for o in &outcomes {
            if o.ok {
                runs_passed += 1;
            } else {
                runs_failed += 1;
            }
            half_checked += o.half_checked;
            half_skipped += o.half_skipped;
            if !args.quiet || !ok {
                for line in &o.lines {
                    println!("{line}");
                }
            }
        }
        if !args.quiet || !ok {
            println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        }
        if !ok {
            failed_cases.push(name.as_str());
        }
    }
    if half_checked + half_skipped > 0 {
        let half: Vec<&str> = names.iter().copied().filter(|n| *n != "f32").collect();
        println!(
            "\nparity {}: {half_checked} outputs compared, {half_skipped} skipped (atol ≥ max|ref|/4)",
            half.join("+")
        );
    }
    if !failed_cases.is_empty() {
        println!("\nfailures:");
        for name in &failed_cases {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; 0 ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s\n",
        if failed_cases.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failed_cases.len(),
        failed_cases.len(),
        start.elapsed().as_secs_f64()
    );
    println!("parity: {runs_passed} passed, {runs_failed} failed");
    if !failed_cases.is_empty() {
        std::process::exit(101);
    }
}
