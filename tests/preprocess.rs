//! Preprocessing parity against the reference (Pillow's bicubic resize and transformers'
//! `CLIPImageProcessorPil`), on fixtures made by tests/fixtures/gen/fixtures_preprocess.py.

mod common;

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use common::tensors::max_abs_diff;
use unires::config::{HiresPad, Limits, CLIP_MEAN, CLIP_STD};
use unires::io::image::load_image;
use unires::pipeline::preprocess::{preprocess_hires, preprocess_lowres, resize_bicubic_pil};

fn dir() -> PathBuf {
    common::fixtures("preprocess")
}

fn cases() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("cases.json")).unwrap()).unwrap()
}

fn expected() -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join("expected.safetensors"), &Device::Cpu).unwrap()
}

fn image(name: &str) -> image::RgbImage {
    let limits = Limits {
        min_side: 1,
        ..Limits::default()
    };
    load_image(&dir().join(format!("{name}.png")), &limits).unwrap()
}

/// Pillow's bicubic resize, byte for byte.
#[test]
fn pil_bicubic_resize_is_exact() {
    let exp = expected();
    let mut n = 0;
    for c in cases()["resize"].as_array().unwrap() {
        let img = image(c["image"].as_str().unwrap());
        let (w, h) = (
            c["w"].as_u64().unwrap() as u32,
            c["h"].as_u64().unwrap() as u32,
        );
        let got = resize_bicubic_pil(&img, w, h).unwrap();
        let want: Vec<u8> = exp[c["key"].as_str().unwrap()]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(got.as_raw(), &want, "{}", c["key"]);
        n += 1;
    }
    assert!(n >= 10);
}

/// LLaVA-1.5 low-res path vs `CLIPImageProcessorPil` on the `expand2square` image: the
/// pixels are identical, so only float rounding of the normalisation remains (≤ 1e-5).
#[test]
fn lowres_matches_clip_image_processor() {
    let exp = expected();
    for c in cases()["lowres"].as_array().unwrap() {
        let img = image(c["image"].as_str().unwrap());
        let size = c["size"].as_u64().unwrap() as usize;
        let got = preprocess_lowres(&img, size, CLIP_MEAN, CLIP_STD, &Device::Cpu)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let d = max_abs_diff(&got, &exp[c["key"].as_str().unwrap()]);
        assert!(d <= 1e-5, "{}: max abs diff {d}", c["key"]);
    }
}

/// High-res path: resize of the longest side, normalisation, bottom/right zero padding.
#[test]
fn hires_matches_reference() {
    let exp = expected();
    for c in cases()["hires"].as_array().unwrap() {
        let img = image(c["image"].as_str().unwrap());
        let long = c["long_side"].as_u64().unwrap() as usize;
        let pad = match c["multiple"].as_u64() {
            Some(m) => HiresPad::MultipleOf(m as usize),
            None => HiresPad::Square,
        };
        let (got, g) =
            preprocess_hires(&img, long, pad, CLIP_MEAN, CLIP_STD, &Device::Cpu).unwrap();
        let resized = c["resized"].as_array().unwrap();
        assert_eq!(g.resized_h as u64, resized[0].as_u64().unwrap());
        assert_eq!(g.resized_w as u64, resized[1].as_u64().unwrap());
        let d = max_abs_diff(&got.squeeze(0).unwrap(), &exp[c["key"].as_str().unwrap()]);
        assert!(d <= 1e-5, "{}: max abs diff {d}", c["key"]);
    }
}
