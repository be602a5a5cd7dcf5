//! Proposal boxes from JSON files.
//!
//! Format: `{"objects": [[x1, y1, x2, y2], ...], "parts": [[x1, y1, x2, y2], ...]}` in
//! pixel coordinates of the image; either key may be missing. The same object may also sit
//! under a top-level `"proposals"` key (as the example scenes' JSON files have it).
//!
//! Files are read through [`crate::io::read`] (regular files only, at most
//! `Limits::max_boxes_bytes`). Boxes reaching outside the image are clipped to it, and those
//! left empty dropped and reported ([`Proposals::clip_to`]); non-finite and inverted boxes
//! are errors.

use std::path::Path;

use serde::Deserialize;

use crate::config::Limits;
use crate::error::{Error, Result};
use crate::io::read::{check_len, read_capped};
use crate::types::{BoxXyxy, ClipReport, Proposals};

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
    boxes_from_value(value, what)
}

/// Reads the boxes of an already parsed JSON value (a request's `"boxes"` field, say), in
/// either shape of the file format (`what` names it in errors).
pub fn boxes_from_value(value: serde_json::Value, what: &Path) -> Result<Proposals> {
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

/// Parses in-memory boxes JSON of at most `limits.max_boxes_bytes` bytes.
pub fn parse_boxes_bytes(bytes: &[u8], what: &Path, limits: &Limits) -> Result<Proposals> {
    let name = what.display().to_string();
    check_len(bytes.len(), limits.max_boxes_bytes, &name, "boxes JSON")?;
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| Error::Json {
        path: what.to_path_buf(),
        source: e,
    })?;
    boxes_from_value(value, what)
}

/// Reads a boxes JSON file: a regular file of at most `limits.max_boxes_bytes` bytes
/// (refused before it is read otherwise).
pub fn read_boxes(path: &Path, limits: &Limits) -> Result<Proposals> {
    let bytes = read_capped(path, limits.max_boxes_bytes, "boxes JSON")?;
    parse_boxes_bytes(&bytes, path, limits)
}

/// Reads a boxes JSON file ([`read_boxes`]) and clips its boxes to a `width × height` image
/// ([`Proposals::clip_to`]): the boxes to use, and the report of those clipped or dropped.
pub fn load_boxes(
    path: &Path,
    width: u32,
    height: u32,
    limits: &Limits,
) -> Result<(Proposals, ClipReport)> {
    read_boxes(path, limits)?.clip_to(width, height)
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

    #[test]
    fn in_memory_boxes_are_capped() {
        let limits = Limits {
            max_boxes_bytes: 40,
            ..Limits::default()
        };
        let ok = br#"{"objects": [[1,2,3,4]]}"#;
        assert_eq!(
            parse_boxes_bytes(ok, Path::new("r"), &limits)
                .unwrap()
                .objects
                .len(),
            1
        );
        let big = format!(r#"{{"objects": [{}]}}"#, ["[1,2,3,4]"; 5].join(","));
        assert!(matches!(
            parse_boxes_bytes(big.as_bytes(), Path::new("r"), &limits),
            Err(Error::TooLarge {
                kind: "boxes JSON",
                max: 40,
                ..
            })
        ));
    }

    #[test]
    fn loading_clips_and_reports() {
        let dir = std::env::temp_dir().join(format!("unires-boxes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("b.json");
        std::fs::write(&p, r#"{"objects": [[-5, 0, 10, 10], [50, 50, 60, 60]]}"#).unwrap();
        let (boxes, report) = load_boxes(&p, 20, 20, &Limits::default()).unwrap();
        assert_eq!(boxes.objects, [BoxXyxy::new(0.0, 0.0, 10.0, 10.0)]);
        assert_eq!((report.clipped, report.dropped.len()), (1, 1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
