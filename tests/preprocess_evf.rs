//! EVF-SAM's two preprocessing branches against hustvl/EVF-SAM's inference.py (fixtures from
//! tests/fixtures/gen/fixtures_evf_preprocess.py, Pillow 10.4, torch 2.1, torchvision 0.16):
//! six images from 23 to 1400 px, up- and downscaled, odd sizes, one already 1024 wide.
//!
//! * SAM: the longest-side resize to 1024 with Pillow's bilinear filter, compared as 8-bit
//!   images before normalisation: within 0.5 on the 0–255 scale means equal.
//! * BEiT-3: the bicubic float resize and normalisation, within 1e-4.

mod common;

use std::collections::HashMap;

use candle_core::Device;
use unires::pipeline::evf_sam::preprocess::{beit3_pixels, sam_resize_shape, sam_resized_image};

#[derive(serde::Deserialize)]
struct Sam {
    image: String,
    target_length: usize,
    resize_shape: [usize; 2],
    file: String,
}

#[derive(serde::Deserialize)]
struct Beit {
    image: String,
    size: usize,
    key: String,
}

#[derive(serde::Deserialize)]
struct Cases {
    images: HashMap<String, [u32; 2]>,
    sam: Vec<Sam>,
    beit: Vec<Beit>,
}

fn dir() -> std::path::PathBuf {
    common::fixtures("preprocess_evf")
}

fn cases() -> Cases {
    serde_json::from_str(&std::fs::read_to_string(dir().join("cases.json")).unwrap()).unwrap()
}

fn load(name: &str) -> image::RgbImage {
    image::open(dir().join(name)).unwrap().to_rgb8()
}

#[test]
fn sam_resize_equals_pillow_bilinear() {
    let c = cases();
    assert!(c.sam.len() >= 5);
    let (mut up, mut down) = (0, 0);
    for s in &c.sam {
        let img = load(&format!("{}.png", s.image));
        let [w, h] = c.images[&s.image];
        assert_eq!(img.dimensions(), (w, h));
        let shape = sam_resize_shape(h as usize, w as usize, s.target_length);
        assert_eq!([shape.0, shape.1], s.resize_shape, "{}", s.image);
        let got = sam_resized_image(&img, s.target_length).unwrap();
        let want = load(&s.file);
        assert_eq!(got.dimensions(), want.dimensions(), "{}", s.image);
        let max = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        assert!(max == 0, "{}: max |Δ| = {max} on the 0–255 scale", s.image);
        if (h.max(w) as usize) < s.target_length {
            up += 1;
        } else if (h.max(w) as usize) > s.target_length {
            down += 1;
        }
    }
    assert!(up >= 2 && down >= 2, "{up} upscaled, {down} downscaled");
}

#[test]
fn beit3_tensor_matches_torch_bicubic() {
    let c = cases();
    let expected =
        candle_core::safetensors::load(dir().join("expected.safetensors"), &Device::Cpu).unwrap();
    assert!(c.beit.len() >= 5);
    for b in &c.beit {
        let img = load(&format!("{}.png", b.image));
        let got = beit3_pixels(&img, b.size).unwrap();
        let want = expected[&b.key]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(got.len(), want.len(), "{}", b.key);
        let max = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("{}: max |Δ| = {max:.2e}", b.key);
        assert!(max <= 1e-4, "{}: max |Δ| = {max}", b.key);
    }
}
