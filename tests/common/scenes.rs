//! The shipped showcase scenes (`examples/scenes/NAME.{png,json}`): each image, its
//! proposals and its annotated queries; and the answers of a model on all of them.

use std::path::PathBuf;

use unires::io::boxes::load_boxes;
use unires::{Granularity, Proposals, Segmentation, UniRes};

/// The scene names, in the order [`showcase`] returns them.
pub const NAMES: [&str; 6] = ["colour", "multi", "no_target", "parts", "relation", "tall"];

/// One annotated query of a scene.
pub struct Query {
    pub expression: String,
    /// The granularity the expression asks for.
    pub granularity: Granularity,
    /// Whether nothing in the scene matches it.
    pub empty: bool,
}

pub struct Scene {
    pub name: &'static str,
    pub image: image::RgbImage,
    pub boxes: Proposals,
    pub queries: Vec<Query>,
}

/// `examples/scenes` of this package.
pub fn dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scenes")
}

/// The six scenes (48 queries), their proposals clipped to the image without change.
pub fn showcase() -> Vec<Scene> {
    let dir = dir();
    NAMES
        .iter()
        .map(|&name| {
            let image = image::open(dir.join(format!("{name}.png")))
                .unwrap()
                .to_rgb8();
            let json = dir.join(format!("{name}.json"));
            let (boxes, report) =
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
                boxes,
                queries,
            }
        })
        .collect()
}

/// `model`'s answer to every query of every scene under `granularity` (one encoding per
/// scene), in the order of the scenes and their queries.
pub fn segment_all(
    model: &UniRes,
    scenes: &[Scene],
    granularity: Granularity,
) -> Vec<Segmentation> {
    let mut out = Vec::new();
    for s in scenes {
        let enc = model.encode(&s.image, &s.boxes).unwrap();
        for q in &s.queries {
            out.push(model.segment(&enc, &q.expression, granularity).unwrap());
        }
    }
    out
}
