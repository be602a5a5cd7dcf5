//! The `unires` binary: `segment` on a shipped scene with the embedded model (mask PNG,
//! overlay, JSON whose RLE decodes to exactly the PNG), `eval --dataset synthetic`, and the
//! table of bad inputs (each exit code 1 with a one-line message naming the problem; never a
//! panic, never exit code 101).

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

/// A bad-input case: how to set up the files, the extra arguments, and a phrase the one-line
/// error message must contain.
struct Case {
    name: &'static str,
    setup: fn(&TempDir) -> Vec<String>,
    needle: &'static str,
}

fn path(t: &TempDir, rel: &str) -> String {
    t.join(rel).display().to_string()
}

fn good_image(t: &TempDir) -> String {
    let p = path(t, "ok.png");
    image::RgbImage::from_pixel(40, 30, image::Rgb([90, 120, 150]))
        .save(&p)
        .unwrap();
    p
}

fn with_image(image: String, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--image".to_string(),
        image,
        "--expression".into(),
        "the red mug".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn boxes(t: &TempDir, text: &str) -> Vec<String> {
    let b = path(t, "boxes.json");
    std::fs::write(&b, text).unwrap();
    let img = good_image(t);
    with_image(img, &["--boxes", &b])
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "missing file",
            setup: |t| with_image(path(t, "nope.png"), &[]),
            needle: "nope.png",
        },
        Case {
            name: "directory instead of file",
            setup: |t| with_image(t.0.display().to_string(), &[]),
            needle: "directory",
        },
        Case {
            name: "truncated image",
            setup: |t| {
                let p = good_image(t);
                let bytes = std::fs::read(&p).unwrap();
                std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
                with_image(p, &[])
            },
            needle: "ok.png",
        },
        Case {
            name: "corrupt image",
            setup: |t| {
                let p = path(t, "bad.png");
                let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
                bytes.extend_from_slice(&[7u8; 64]);
                std::fs::write(&p, bytes).unwrap();
                with_image(p, &[])
            },
            needle: "bad.png",
        },
        Case {
            name: "unsupported format",
            setup: |t| {
                let p = path(t, "img.gif");
                std::fs::write(&p, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
                with_image(p, &[])
            },
            needle: "format",
        },
        Case {
            name: "1x1 image",
            setup: |t| {
                let p = path(t, "tiny.png");
                image::RgbImage::new(1, 1).save(&p).unwrap();
                with_image(p, &[])
            },
            needle: "1x1",
        },
        Case {
            name: "0x0 image (header only)",
            setup: |t| {
                // A PNG signature and an IHDR chunk claiming 0×0.
                let p = path(t, "zero.png");
                let mut b = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
                b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 8, 2, 0, 0, 0]);
                b.extend_from_slice(&[0, 0, 0, 0]);
                std::fs::write(&p, b).unwrap();
                with_image(p, &[])
            },
            needle: "zero.png",
        },
        Case {
            name: "image over the size limit",
            setup: |t| {
                let p = path(t, "wide.png");
                image::GrayImage::new(16_385, 8).save(&p).unwrap();
                with_image(p, &[])
            },
            needle: "16385",
        },
        Case {
            name: "empty expression",
            setup: |t| {
                let img = good_image(t);
                vec!["--image".into(), img, "--expression".into(), "".into()]
            },
            needle: "empty",
        },
        Case {
            name: "whitespace-only expression",
            setup: |t| {
                let img = good_image(t);
                vec!["--image".into(), img, "--expression".into(), " \t ".into()]
            },
            needle: "empty",
        },
        Case {
            name: "expression over the length limit",
            setup: |t| {
                let img = good_image(t);
                let long = "mug ".repeat(200);
                vec!["--image".into(), img, "--expression".into(), long]
            },
            needle: "limit is 512",
        },
        Case {
            name: "unknown granularity",
            setup: |t| with_image(good_image(t), &["--granularity", "pixel"]),
            needle: "pixel",
        },
        Case {
            name: "box outside the image",
            setup: |t| boxes(t, r#"{"objects": [[2, 3, 400, 20]], "parts": []}"#),
            needle: "box",
        },
        Case {
            name: "box with x2 < x1",
            setup: |t| boxes(t, r#"{"objects": [[20, 3, 10, 20]], "parts": []}"#),
            needle: "box",
        },
        Case {
            name: "malformed boxes JSON",
            setup: |t| boxes(t, r#"{"objects": [[1, 2, 3]"#),
            needle: "boxes.json",
        },
    ]
}

#[test]
fn every_bad_input_is_a_one_line_typed_error_with_exit_code_1() {
    for case in cases() {
        let t = TempDir::new("cli-bad");
        let mut args = vec!["segment".to_string()];
        args.extend((case.setup)(&t));
        args.push("--out".into());
        args.push(path(&t, "mask.png"));
        let o = bin().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{}: {err}", case.name);
        assert_eq!(err.trim_end().lines().count(), 1, "{}: {err}", case.name);
        assert!(
            err.contains(case.needle),
            "{}: {err:?} lacks {:?}",
            case.name,
            case.needle
        );
        assert!(!t.join("mask.png").exists(), "{}: wrote a mask", case.name);
    }
}
