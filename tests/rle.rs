//! COCO RLE against pycocotools: fixtures made by tests/fixtures/gen/fixtures_rle.py.
//!
//! Every expected string, area, box, merge, IoU and polygon mask below was produced by
//! pycocotools 2.0.11; the Rust side must match exactly (IoU to 1e-12).

use std::path::PathBuf;

use serde::Deserialize;
use unires::io::rle::{CocoRle, Rle};
use unires::{Error, Mask};

fn fixture<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rle")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[derive(Deserialize)]
struct StoredMask {
    h: usize,
    w: usize,
    #[serde(default)]
    bits: Option<String>,
    #[serde(default)]
    rects: Option<Vec<[usize; 4]>>,
}

impl StoredMask {
    fn build(&self) -> Mask {
        let mut data = vec![0u8; self.h * self.w];
        if let Some(hex) = &self.bits {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            for (i, d) in data.iter_mut().enumerate() {
                *d = (bytes[i / 8] >> (7 - i % 8)) & 1;
            }
        }
        if let Some(rects) = &self.rects {
            for &[y0, y1, x0, x1] in rects {
                for y in y0..y1 {
                    for x in x0..x1 {
                        data[y * self.w + x] = 1;
                    }
                }
            }
        }
        Mask::from_vec(self.h, self.w, data).unwrap()
    }
}

#[derive(Deserialize)]
struct EncodeCase {
    name: String,
    mask: StoredMask,
    counts: String,
    area: u64,
    bbox: [f64; 4],
}

#[test]
fn encode_decode_area_bbox_match_pycocotools() {
    let cases: Vec<EncodeCase> = fixture("encode.json");
    assert!(cases.len() > 30);
    for c in &cases {
        let mask = c.mask.build();
        let rle = Rle::encode(&mask);
        assert_eq!(rle.to_compressed(), c.counts, "{}: encode", c.name);
        let parsed = Rle::from_compressed(mask.height(), mask.width(), &c.counts).unwrap();
        assert_eq!(parsed, rle, "{}: counts", c.name);
        assert_eq!(parsed.decode().unwrap(), mask, "{}: decode", c.name);
        assert_eq!(parsed.area(), c.area, "{}: area", c.name);
        assert_eq!(parsed.area(), mask.area(), "{}: area vs mask", c.name);
        assert_eq!(parsed.bbox(), c.bbox, "{}: bbox", c.name);
        let coco = CocoRle::from_mask(&mask);
        assert_eq!(coco.counts, c.counts);
        assert_eq!(coco.size, [mask.height(), mask.width()]);
        let json = serde_json::to_string(&coco).unwrap();
        let back: CocoRle = serde_json::from_str(&json).unwrap();
        assert_eq!(back.decode().unwrap(), mask, "{}: JSON round trip", c.name);
    }
}

#[test]
fn long_runs_use_multi_character_codes() {
    let cases: Vec<EncodeCase> = fixture("encode.json");
    let long = cases.iter().find(|c| c.name == "long_two_boxes").unwrap();
    let rle = Rle::from_compressed(long.mask.h, long.mask.w, &long.counts).unwrap();
    assert!(rle.counts.iter().any(|&c| c > 1 << 20), "{:?}", rle.counts);
}

#[derive(Deserialize)]
struct MergeCase {
    name: String,
    masks: Vec<StoredMask>,
    union_ab: String,
    intersection_ab: String,
    union_abc: String,
    intersection_abc: String,
    iou_ab: f64,
    iou_ac: f64,
}

#[test]
fn merge_and_iou_match_pycocotools() {
    let cases: Vec<MergeCase> = fixture("merge.json");
    for c in &cases {
        let rles: Vec<Rle> = c.masks.iter().map(|m| Rle::encode(&m.build())).collect();
        let s = |r: Rle| r.to_compressed();
        assert_eq!(
            s(Rle::merge(&rles[..2], false).unwrap()),
            c.union_ab,
            "{}",
            c.name
        );
        assert_eq!(
            s(Rle::merge(&rles[..2], true).unwrap()),
            c.intersection_ab,
            "{}",
            c.name
        );
        assert_eq!(
            s(Rle::merge(&rles, false).unwrap()),
            c.union_abc,
            "{}",
            c.name
        );
        assert_eq!(
            s(Rle::merge(&rles, true).unwrap()),
            c.intersection_abc,
            "{}",
            c.name
        );
        assert!((rles[0].iou(&rles[1]).unwrap() - c.iou_ab).abs() < 1e-12);
        assert!((rles[0].iou(&rles[2]).unwrap() - c.iou_ac).abs() < 1e-12);
    }
}

#[derive(Deserialize)]
struct UncompressedCase {
    h: usize,
    w: usize,
    counts_list: Vec<u32>,
    counts: String,
    area: u64,
}

#[test]
fn uncompressed_json_counts_compress_like_pycocotools() {
    let cases: Vec<UncompressedCase> = fixture("uncompressed.json");
    for c in &cases {
        let js = serde_json::json!({"size": [c.h, c.w], "counts": c.counts_list});
        let coco: CocoRle = serde_json::from_value(js).unwrap();
        assert_eq!(coco.counts, c.counts, "{:?}", c.counts_list);
        let rle = coco.to_rle().unwrap();
        assert_eq!(rle.counts, c.counts_list);
        assert_eq!(rle.area(), c.area);
        assert_eq!(rle.decode().unwrap().area(), c.area);
    }
}

#[derive(Deserialize)]
struct PolygonCase {
    name: String,
    h: usize,
    w: usize,
    polygons: Vec<Vec<f64>>,
    parts: Vec<String>,
    counts: String,
    mask: StoredMask,
}

#[test]
fn polygons_rasterise_like_ann_to_mask() {
    let cases: Vec<PolygonCase> = fixture("polygons.json");
    assert!(cases.len() > 30);
    for c in &cases {
        for (p, want) in c.polygons.iter().zip(&c.parts) {
            let got = Rle::from_polygon(p, c.h, c.w).unwrap();
            assert_eq!(&got.to_compressed(), want, "{}: part {p:?}", c.name);
        }
        let merged = Rle::from_polygons(&c.polygons, c.h, c.w).unwrap();
        assert_eq!(merged.to_compressed(), c.counts, "{}: merged", c.name);
        assert_eq!(merged.decode().unwrap(), c.mask.build(), "{}: mask", c.name);
    }
}

#[test]
fn polygon_lists_pycocotools_rejects_are_rejected() {
    assert!(matches!(
        Rle::from_polygons(&[vec![1.0, 2.0, 5.0, 6.0]], 10, 10),
        Err(Error::BadRle { .. })
    ));
    let empty = Rle::from_polygons(&[], 4, 5).unwrap();
    assert_eq!(empty.decode().unwrap(), Mask::zeros(4, 5));
    // Vertices absurdly far away, infinite or NaN: an error or a mask, never a panic.
    let far = vec![0.0, 0.0, 3e9, 0.0, -3e9, 4e9];
    assert!(matches!(
        Rle::from_polygon(&far, 10, 10),
        Err(Error::BadRle { .. })
    ));
    for odd in [
        vec![f64::NAN, 1.0, 5.0, 5.0, 2.0, 8.0],
        vec![f64::INFINITY, 1.0, 5.0, 5.0, 2.0, 8.0],
        vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        vec![3.0],
        vec![],
    ] {
        if let Ok(r) = Rle::from_polygon(&odd, 10, 10) {
            r.decode().unwrap();
        }
    }
    assert_eq!(empty.decode().unwrap(), Mask::zeros(4, 5));
}

#[derive(Deserialize)]
struct BboxCase {
    h: usize,
    w: usize,
    bbox: [f64; 4],
    counts: String,
}

#[test]
fn boxes_rasterise_like_fr_bbox() {
    let cases: Vec<BboxCase> = fixture("bbox.json");
    for c in &cases {
        let got = Rle::from_bbox(c.bbox, c.h, c.w).unwrap();
        assert_eq!(got.to_compressed(), c.counts, "{:?}", c.bbox);
    }
}

#[test]
fn decode_rejects_counts_of_the_wrong_total() {
    let r = Rle {
        height: 3,
        width: 3,
        counts: vec![2, 3],
    };
    assert!(matches!(r.decode(), Err(Error::BadRle { .. })));
    let r = Rle {
        height: 3,
        width: 3,
        counts: vec![u32::MAX, u32::MAX, 20],
    };
    assert!(matches!(r.decode(), Err(Error::BadRle { .. })));
    assert!(matches!(Rle::merge(&[], false), Err(Error::BadRle { .. })));
    let a = Rle::encode(&Mask::zeros(2, 3));
    let b = Rle::encode(&Mask::zeros(3, 2));
    assert!(matches!(
        Rle::merge(&[a.clone(), b.clone()], false),
        Err(Error::SizeMismatch { .. })
    ));
    assert!(matches!(a.iou(&b), Err(Error::SizeMismatch { .. })));
}
