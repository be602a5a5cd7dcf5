//! The `unires` binary: `segment` on a shipped scene with the embedded model (mask PNG,
//! overlay, JSON whose RLE decodes to exactly the PNG) and `eval --dataset synthetic`. The
//! table of bad inputs is tests/cli_bad_input.rs.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use common::{bin, TempDir};
use unires::eval::synthetic::{evaluate_model, SyntheticEvalOptions};
use unires::io::rle::CocoRle;
use unires::{load, Source};

fn scene(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/scenes")
        .join(name)
}

#[test]
fn segment_writes_mask_overlay_and_json_that_agree() {
    let t = TempDir::new("cli-segment");
    let o = bin()
        .arg("segment")
        .arg("--image")
        .arg(scene("tall.png"))
        .arg("--boxes")
        .arg(scene("tall.json"))
        .args(["--expression", "the two cars", "--granularity", "auto"])
        .arg("--out")
        .arg(t.join("mask.png"))
        .arg("--overlay")
        .arg(t.join("overlay.png"))
        .arg("--json")
        .arg(t.join("result.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let img = image::open(scene("tall.png")).unwrap().to_rgb8();
    let mask = image::open(t.join("mask.png")).unwrap().to_luma8();
    assert_eq!(mask.dimensions(), img.dimensions());
    assert!(mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
    let overlay = image::open(t.join("overlay.png")).unwrap().to_rgb8();
    assert_eq!(overlay.dimensions(), img.dimensions());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.join("result.json")).unwrap()).unwrap();
    assert_eq!(v["size"][0], img.height());
    assert_eq!(v["size"][1], img.width());
    assert_eq!(v["granularity"], "multi");
    let rle: CocoRle = serde_json::from_value(v["rle"].clone()).unwrap();
    let decoded = rle.decode().unwrap();
    let png: Vec<u8> = mask.pixels().map(|p| u8::from(p.0[0] > 0)).collect();
    let dec: Vec<u8> = decoded
        .as_slice()
        .iter()
        .map(|&b| u8::from(b > 0))
        .collect();
    assert_eq!(dec, png, "the JSON's RLE decodes to the PNG mask");
    assert_eq!(v["empty"], png.iter().all(|&b| b == 0));
    // "the two cars": two instances, each inside the union mask.
    let inst = v["instances"].as_array().unwrap();
    assert_eq!(inst.len(), 2, "{v}");
    for i in inst {
        let r: CocoRle = serde_json::from_value(i["rle"].clone()).unwrap();
        let m = r.decode().unwrap();
        assert!(m
            .as_slice()
            .iter()
            .zip(&png)
            .all(|(&a, &b)| a == 0 || b == 1));
    }
}

/// Seed and scene count of the `eval --dataset synthetic` run.
const SEED: u64 = 7_200_000;
const SCENES: usize = 3;

#[test]
fn eval_synthetic_report_is_the_library_evaluation() {
    let t = TempDir::new("cli-eval");
    let o = bin()
        .args(["eval", "--dataset", "synthetic"])
        .args(["--seed", &SEED.to_string(), "--n", &SCENES.to_string()])
        .arg("--quiet")
        .arg("--report")
        .arg(t.join("report.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("| mIoU_part |"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.join("report.json")).unwrap()).unwrap();
    assert_eq!(v["n"], 3);

    // The same evaluation through the library (what `unires eval` is documented to run: the
    // embedded model on CPU in f32, scenes of the seed, scored at the configured threshold).
    // The report's numbers must be the library's, up to JSON printing of floats (serde_json
    // round-trips f64 exactly; 1e-9 leaves room for nothing but that).
    let model = load(&Source::Embedded, &Device::Cpu, DType::F32).unwrap();
    let lib = evaluate_model(&model, &SyntheticEvalOptions::new(SEED, SCENES)).unwrap();
    assert_eq!(v["samples"], lib.samples);
    let c = &v["counts"];
    let counts = [&c["part"], &c["object"], &c["multi"], &c["no_target"]];
    let want = [
        lib.counts.part,
        lib.counts.object,
        lib.counts.multi,
        lib.counts.no_target,
    ];
    for (got, want) in counts.iter().zip(want) {
        assert_eq!(got.as_u64(), Some(want as u64), "counts: {c}");
    }
    let threshold = v["no_target_threshold"].as_f64().unwrap() as f32;
    assert_eq!(threshold, model.config().no_target_threshold);
    let metrics = v["metrics"].as_object().unwrap();
    assert_eq!(metrics.len(), lib.metrics.len(), "{metrics:?}");
    for key in unires::eval::synthetic::METRICS {
        let x = metrics[key].as_f64().unwrap();
        let want = lib.metrics[key];
        assert!(
            (x - want).abs() <= 1e-9,
            "{key}: CLI report {x}, library {want}"
        );
        assert!((0.0..=100.0).contains(&x), "{key} = {x}");
        // The printed table shows the same numbers.
        let row = format!("| {key} | {want:.2} |");
        assert!(out.contains(&row), "{row:?} not in {out}");
    }
    let rows = v["by_cue"].as_array().unwrap();
    assert_eq!(rows.len(), lib.by_cue.len());
    for (r, w) in rows.iter().zip(&lib.by_cue) {
        assert_eq!(r["granularity"], w.granularity, "{r}");
        assert_eq!(r["cue"], w.cue.as_str(), "{r}");
        assert_eq!(r["n"].as_u64(), Some(w.n as u64), "{r}");
        for (got, want) in [(&r["miou"], w.miou), (&r["empty"], w.empty)] {
            assert!((got.as_f64().unwrap() - want).abs() <= 1e-9, "{r} vs {w:?}");
        }
    }

    // Internal consistency: 8 expressions a scene, each counted once by kind and by cue.
    assert_eq!(lib.samples, SCENES * 8);
    let c = lib.counts;
    assert_eq!(c.part + c.object + c.multi + c.no_target, lib.samples);
    assert_eq!(lib.by_cue.iter().map(|r| r.n).sum::<usize>(), lib.samples);
}
