//! The embedded weights and the `train_log.json` of the run that wrote them
//! (`examples/train_synthetic.rs`): the logged configuration is the shipped one, and scoring
//! the shipped weights again gives the run's own final evaluation.

use std::path::PathBuf;

use candle_core::{DType, Device};
use unires::eval::synthetic::{evaluate_model, SyntheticEvalOptions};
use unires::synthetic::ProposalMode;
use unires::{load, Source, UniResConfig};

fn tiny(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("weights/tiny")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn train_log_matches_the_shipped_config_and_steps() {
    let log = tiny("train_log.json");
    // Compared as configurations (the log writes f32 fields widened to f64 digits).
    let logged: UniResConfig = serde_json::from_value(log["config"].clone()).unwrap();
    let shipped: UniResConfig = serde_json::from_value(tiny("config.json")).unwrap();
    assert_eq!(logged, shipped, "logged config != shipped config");
    assert_eq!(log["steps"], log["planned_steps"], "the run stopped early");
    let steps = log["steps"].as_u64().unwrap();
    let entries = log["log"].as_array().unwrap();
    assert_eq!(entries.last().unwrap()["step"].as_u64(), Some(steps));
    assert_eq!(log["store_dtype"], "f16");
}

/// The run scored its saved checkpoint (f16, read back in f32) on seed 1000 with each
/// proposal mode; the same evaluation of the embedded weights now must agree to 0.05 points
/// (the same weights, scenes and code give the same masks; a changed file or a changed graph
/// moves several metrics by a point or more).
#[test]
fn shipped_weights_reproduce_the_logged_final_evaluation() {
    let log = tiny("train_log.json");
    let fe = &log["final_eval"];
    let scenes = fe["scenes"].as_u64().unwrap() as usize;
    let seed = fe["seed"].as_u64().unwrap();
    let model = load(&Source::Embedded, &Device::Cpu, DType::F32).unwrap();
    let opts = SyntheticEvalOptions {
        proposals: ProposalMode::Simulated,
        ..SyntheticEvalOptions::new(seed, scenes)
    };
    let report = evaluate_model(&model, &opts).unwrap();
    let logged = fe["simulated"].as_object().unwrap();
    let mut checked = 0;
    for (k, v) in logged {
        let want = v.as_f64().unwrap();
        let got = report.metrics[k.as_str()];
        assert!(
            (got - want).abs() <= 0.05,
            "{k}: {got:.3} now, {want:.3} logged"
        );
        checked += 1;
    }
    assert_eq!(checked, 8);
}
