//! Parity suite: every folder in `tests/fixtures/parity/` is one case made by the reference
//! implementation (see `tests/fixtures/gen/`). Each case is run in f32 against the fixture's
//! own `rtol`/`atol` (torch.allclose semantics: |a − b| ≤ atol + rtol·|b|) and, for model
//! kinds, again in bf16 against the looser `bf16_rtol`/`bf16_atol` it states. A bf16 output
//! is compared only where that atol is below a quarter of the output's largest reference
//! magnitude (otherwise zeros would pass); the others are listed as skipped.
//!
//! Run: `cargo test --release --test parity`. Prints one line per case and run.

#[path = "../common/mod.rs"]
mod common;

mod clip_vision;
mod convnext;
mod harness;
mod interpolate;
mod llama;
mod roi_align;
mod sam_mask_decoder;

use harness::{Case, Outcome};

type Runner = fn(&Case) -> harness::Res<Vec<(String, candle_core::Tensor)>>;

fn runner(kind: &str) -> Option<Runner> {
    match kind {
        "clip_vision" => Some(clip_vision::run),
        "convnext" => Some(convnext::run),
        "llama" => Some(llama::run),
        "sam_mask_decoder" => Some(sam_mask_decoder::run),
        "sam_prompt_encoder" => Some(sam_mask_decoder::run_prompt),
        "interpolate" => Some(interpolate::run),
        "roi_align" => Some(roi_align::run),
        _ => None,
    }
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let root = common::fixtures("parity");
    let mut dirs: Vec<_> = match std::fs::read_dir(&root) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect(),
        Err(e) => {
            eprintln!("parity: cannot read {}: {e}", root.display());
            std::process::exit(1);
        }
    };
    dirs.sort();
    let (mut passed, mut failed) = (0usize, 0usize);
    let (mut bf16_checked, mut bf16_skipped) = (0usize, 0usize);
    for dir in dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(f) = &filter {
            if !name.contains(f.as_str()) {
                continue;
            }
        }
        let outcomes = match Case::load(&dir) {
            Ok(case) => match runner(&case.kind) {
                Some(run) => harness::run_case(&case, run),
                None => vec![Outcome::error(&name, &case.kind, "no runner for this kind")],
            },
            Err(e) => vec![Outcome::error(&name, "?", &e.to_string())],
        };
        for o in outcomes {
            for line in &o.lines {
                println!("{line}");
            }
            bf16_checked += o.bf16_checked;
            bf16_skipped += o.bf16_skipped;
            if o.ok {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    println!(
        "parity bf16: {bf16_checked} outputs compared, {bf16_skipped} skipped (atol ≥ max|ref|/4)"
    );
    println!("parity: {passed} passed, {failed} failed");
    if failed > 0 || passed == 0 {
        std::process::exit(1);
    }
}
