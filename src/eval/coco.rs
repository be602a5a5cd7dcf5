//! COCO `instances.json` (images, polygon and RLE segmentations) as shipped with the refer
//! toolkit's RefCOCO/+/g folders and with gRefCOCO, and the ground-truth masks built from it
//! the way the benchmarks' own loaders build them.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};
use crate::io::read::{read_capped_to_string, MAX_DATASET_BYTES};
use crate::io::rle::{RawCocoRle, Rle};
use crate::types::Mask;

/// An image record.
#[derive(Debug, Clone, Deserialize)]
pub struct CocoImage {
    pub id: i64,
    pub file_name: String,
    pub height: usize,
    pub width: usize,
}

/// An annotation record (only what the masks need).
#[derive(Debug, Clone, Deserialize)]
pub struct CocoAnnotation {
    pub id: i64,
    pub image_id: i64,
    #[serde(default, deserialize_with = "int_or_bool")]
    pub iscrowd: bool,
    pub segmentation: CocoSegmentation,
}

/// A segmentation: polygons `[[x0, y0, x1, y1, ...], ...]` or an RLE object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CocoSegmentation {
    Polygons(Vec<Vec<f64>>),
    Rle(RawCocoRle),
}

/// How polygon lists become a mask; the benchmarks' loaders differ in the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolygonPolicy {
    /// All polygons as given (`frPyObjects` + union), as the refer toolkit's `getMask` and
    /// `COCO.annToMask` use them (RefCOCO/+/g).
    AsGiven,
    /// Polygons with an odd number of coordinates or fewer than three points dropped first,
    /// and crowd annotations skipped, as ReLA's gRefCOCO loader does.
    ValidOnly,
}

fn int_or_bool<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrBool {
        Int(i64),
        Bool(bool),
    }
    Ok(match IntOrBool::deserialize(d)? {
        IntOrBool::Int(v) => v != 0,
        IntOrBool::Bool(b) => b,
    })
}

#[derive(Deserialize)]
struct InstancesFile {
    images: Vec<CocoImage>,
    annotations: Vec<CocoAnnotation>,
}

/// The images and annotations a split needs, indexed by id.
#[derive(Debug, Clone, Default)]
pub struct Instances {
    pub images: HashMap<i64, CocoImage>,
    pub annotations: HashMap<i64, CocoAnnotation>,
}

impl Instances {
    /// Reads `instances.json`, keeping only the listed images and annotations.
    pub fn read(path: &Path, image_ids: &HashSet<i64>, ann_ids: &HashSet<i64>) -> Result<Self> {
        let text = read_capped_to_string(path, MAX_DATASET_BYTES, "annotation file")?;
        let file: InstancesFile = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let images = file
            .images
            .into_iter()
            .filter(|im| image_ids.contains(&im.id))
            .map(|im| (im.id, im))
            .collect();
        let annotations = file
            .annotations
            .into_iter()
            .filter(|a| ann_ids.contains(&a.id))
            .map(|a| (a.id, a))
            .collect();
        Ok(Self {
            images,
            annotations,
        })
    }
}

/// Tags an RLE error with the annotation it came from.
fn in_annotation(id: i64, e: Error) -> Error {
    match e {
        Error::BadRle { reason } => Error::BadRle {
            reason: format!("annotation {id}: {reason}"),
        },
        other => other,
    }
}

/// The RLE of one annotation on a `height × width` image; `None` when the policy drops it.
pub fn annotation_rle(
    ann: &CocoAnnotation,
    height: usize,
    width: usize,
    policy: PolygonPolicy,
) -> Result<Option<Rle>> {
    /// Fewest coordinates of a polygon ReLA keeps (three points).
    const MIN_POLY_COORDS: usize = 6;
    if policy == PolygonPolicy::ValidOnly && ann.iscrowd {
        return Ok(None);
    }
    let rle = match &ann.segmentation {
        CocoSegmentation::Polygons(polys) => match policy {
            PolygonPolicy::AsGiven => Rle::from_polygons(polys, height, width),
            PolygonPolicy::ValidOnly => {
                let valid: Vec<Vec<f64>> = polys
                    .iter()
                    .filter(|p| p.len() % 2 == 0 && p.len() >= MIN_POLY_COORDS)
                    .cloned()
                    .collect();
                if valid.is_empty() {
                    return Ok(None);
                }
                Rle::from_polygons(&valid, height, width)
            }
        },
        CocoSegmentation::Rle(raw) => raw.to_rle(),
    }
    .map_err(|e| in_annotation(ann.id, e))?;
    if rle.height != height || rle.width != width {
        return Err(Error::SizeMismatch {
            what: format!("segmentation of annotation {}", ann.id),
            expected_h: height,
            expected_w: width,
            got_h: rle.height,
            got_w: rle.width,
        });
    }
    Ok(Some(rle))
}

/// The union of the listed annotations' masks (all zeros when none is left).
pub fn union_mask(
    anns: &[&CocoAnnotation],
    height: usize,
    width: usize,
    policy: PolygonPolicy,
) -> Result<Mask> {
    let mut rles = Vec::with_capacity(anns.len());
    for ann in anns {
        if let Some(r) = annotation_rle(ann, height, width, policy)? {
            rles.push(r);
        }
    }
    if rles.is_empty() {
        return Ok(Mask::zeros(height, width));
    }
    Rle::merge(&rles, false)?.decode()
}
