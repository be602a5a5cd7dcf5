//! A segmentation result as JSON: the object `unires segment --json` writes and the body of a
//! successful `unires serve` response.

use serde_json::{json, Value};

use crate::io::rle::CocoRle;
use crate::types::Segmentation;

/// `{"granularity", "score", "empty", "size": [h, w], "rle", "instances": [{"bbox": [x, y, w,
/// h], "score", "rle"}]}`, masks in COCO compressed RLE.
pub fn segmentation_json(seg: &Segmentation) -> Value {
    let instances: Vec<Value> = seg
        .instances
        .iter()
        .map(|i| {
            json!({
                "bbox": i.bbox.to_xywh(),
                "score": i.score,
                "rle": CocoRle::from_mask(&i.mask),
            })
        })
        .collect();
    json!({
        "granularity": seg.granularity.as_str(),
        "score": seg.score,
        "empty": seg.is_empty(),
        "size": [seg.mask.height(), seg.mask.width()],
        "rle": CocoRle::from_mask(&seg.mask),
        "instances": instances,
    })
}
