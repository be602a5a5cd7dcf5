//! Proposal boxes from JSON files.
//!
//! Format: `{"objects": [[x1, y1, x2, y2], ...], "parts": [[x1, y1, x2, y2], ...]}` in
//! pixel coordinates of the image; either key may be missing. The same object may also sit
//! under a top-level `"proposals"` key (as the example scenes' JSON files have it).

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::types::{BoxXyxy, Proposals};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BoxesFile {
    #[serde(default)]
    objects: Vec<[f32; 4]>,
    #[serde(default)]
    parts: Vec<[f32; 4]>,
}

#[derive(Deserialize)]
struct Wrapped {
    proposals: BoxesFile,
}

fn to_boxes(v: Vec<[f32; 4]>) -> Vec<BoxXyxy> {
    v.into_iter()
        .map(|[x1, y1, x2, y2]| BoxXyxy::new(x1, y1, x2, y2))
        .collect()
}

/// Parses the boxes JSON text (`what` names it in errors).
pub fn parse_boxes(text: &str, what: &Path) -> Result<Proposals> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Json {
        path: what.to_path_buf(),
        source: e,
    })?;
    let parsed = if value.get("proposals").is_some() {
        serde_json::from_value::<Wrapped>(value).map(|w| w.proposals)
    } else {
        serde_json::from_value::<BoxesFile>(value)
    }
    .map_err(|e| Error::Json {
        path: what.to_path_buf(),
        source: e,
    })?;
    Ok(Proposals::new(
        to_boxes(parsed.objects),
        to_boxes(parsed.parts),
    ))
}

/// Reads a boxes JSON file and validates every box against a `width × height` image.
pub fn load_boxes(path: &Path, width: u32, height: u32) -> Result<Proposals> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::IsADirectory {
            path: path.to_path_buf(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let p = parse_boxes(&text, path)?;
    p.validate(width, height)?;
    Ok(p)
}

/// Writes proposals in the same format.
pub fn boxes_to_json(p: &Proposals) -> serde_json::Value {
    let conv =
        |v: &[BoxXyxy]| -> Vec<[f32; 4]> { v.iter().map(|b| [b.x1, b.y1, b.x2, b.y2]).collect() };
    serde_json::json!({"objects": conv(&p.objects), "parts": conv(&p.parts)})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_shapes() {
        let p = parse_boxes(r#"{"objects": [[1,2,3,4]], "parts": []}"#, Path::new("t")).unwrap();
        assert_eq!(p.objects, vec![BoxXyxy::new(1.0, 2.0, 3.0, 4.0)]);
        let p = parse_boxes(
            r#"{"proposals": {"parts": [[0,0,5,5]]}, "queries": []}"#,
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(p.parts.len(), 1);
        assert!(parse_boxes(r#"{"objects": [[1,2,3]]}"#, Path::new("t")).is_err());
        assert!(parse_boxes(r#"{"objets": []}"#, Path::new("t")).is_err());
    }
}
