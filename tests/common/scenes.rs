//! The showcase scenes shipped in examples/scenes: each image, its proposal boxes and the
//! annotated queries (expression, granularity, whether it refers to nothing).

use std::path::PathBuf;

use image::RgbImage;
use unires::io::boxes::load_boxes;
use unires::{Granularity, Proposals};

/// The scene names, in a fixed order.
pub const NAMES: [&str; 6] = ["colour", "multi", "no_target", "parts", "relation", "tall"];

/// One annotated query of a scene.
pub struct Query {
    pub expression: String,
    pub granularity: Granularity,
    pub empty: bool,
}

/// A scene: its image, its proposals (the JSON's boxes, which lie inside the image) and
/// its queries.
pub struct Scene {
    pub name: &'static str,
    pub image: RgbImage,
    pub proposals: Proposals,
    pub queries: Vec<Query>,
}

/// examples/scenes of this package.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/scenes")
}

/// Every showcase scene (48 queries in all).
pub fn all() -> Vec<Scene> {
    NAMES.iter().map(|&n| scene(n)).collect()
}

/// The scene `name`.
pub fn scene(name: &'static str) -> Scene {
    let image = image::open(dir().join(format!("{name}.png")))
        .unwrap()
        .to_rgb8();
    let json = dir().join(format!("{name}.json"));
    let (proposals, report) =
        load_boxes(&json, image.width(), image.height(), &Default::default()).unwrap();
    assert!(report.is_clean(), "{name}: {report:?}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let queries = v["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| Query {
            expression: q["expression"].as_str().unwrap().to_string(),
            granularity: q["granularity"].as_str().unwrap().parse().unwrap(),
            empty: q["empty"].as_bool().unwrap(),
        })
        .collect();
    Scene {
        name,
        image,
        proposals,
        queries,
    }
}

/// [`all`], under the name the dtype tests use.
pub fn showcase() -> Vec<Scene> {
    all()
}

/// `model`'s answer to every query of every scene under `granularity` (one encoding per
/// scene), in the order of the scenes and their queries.
pub fn segment_all(
    model: &unires::UniRes,
    scenes: &[Scene],
    granularity: Granularity,
) -> Vec<unires::Segmentation> {
    let mut out = Vec::new();
    for s in scenes {
        let enc = model.encode(&s.image, &s.proposals).unwrap();
        for q in &s.queries {
            out.push(model.segment(&enc, &q.expression, granularity).unwrap());
        }
    }
    out
}
