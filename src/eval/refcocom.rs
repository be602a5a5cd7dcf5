//! RefCOCOm (UniRES, CVPR 2024) in the layout CRIS's `data_process.py` prepares:
//! `anns/<name>/<split>.json` — a list of `{"bbox": [x1, y1, x2, y2], "cat", "segment_id",
//! "img_name", "sentences": [{"idx", "sent_id", "sent"}], "sentences_num"}` — with 0/255
//! masks at `masks/<name>/<segment_id>.png` and images at `images/train2014/<img_name>`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::eval::dataset::{out_of_range, Dataset, DatasetKind, LoadSummary, MetricFamily, Sample};
use crate::eval::refer::{check_root, dataset_err, image_dir};
use crate::io::read::{read_capped_to_string, MAX_DATASET_BYTES};
use crate::types::{Granularity, Mask};

/// The published splits: val, testA and testB, each part-only and object+part.
pub const SPLITS: [&str; 6] = [
    "val_part_only",
    "val_object_part",
    "testA_part_only",
    "testA_object_part",
    "testB_part_only",
    "testB_object_part",
];

/// Folder names under `anns/` and `masks/` preferred when several hold the split.
const PREFERRED_NAMES: [&str; 3] = ["refcocom", "refcoco_m", "refcoco-m"];

#[derive(Debug, Clone, Deserialize)]
struct SentenceJson {
    sent_id: i64,
    sent: String,
}

#[derive(Debug, Clone, Deserialize)]
struct EntryJson {
    segment_id: i64,
    img_name: String,
    sentences: Vec<SentenceJson>,
}

#[derive(Debug, Clone)]
struct Entry {
    sent_id: i64,
    segment_id: i64,
    text: String,
    img: usize,
}

/// A RefCOCOm split.
#[derive(Debug, Clone)]
pub struct RefCocoMDataset {
    split: String,
    mask_dir: PathBuf,
    image_dir: PathBuf,
    img_names: Vec<String>,
    entries: Vec<Entry>,
    summary: LoadSummary,
}

/// The split file: `anns/<name>/<split>.json` for any `<name>` (preferring `refcocom`), or
/// `anns/<split>.json`.
fn find_split_file(root: &Path, split: &str) -> Result<PathBuf> {
    let anns = root.join("anns");
    let file = format!("{split}.json");
    let mut found: Vec<PathBuf> = Vec::new();
    if let Ok(dirs) = std::fs::read_dir(&anns) {
        let mut subdirs: Vec<PathBuf> = dirs
            .filter_map(|d| d.ok().map(|d| d.path()))
            .filter(|p| p.is_dir())
            .collect();
        subdirs.sort();
        found.extend(
            subdirs
                .iter()
                .map(|d| d.join(&file))
                .filter(|p| p.is_file()),
        );
    }
    if anns.join(&file).is_file() {
        found.push(anns.join(&file));
    }
    let looked = [
        anns.join("<name>").join(&file).display().to_string(),
        anns.join(&file).display().to_string(),
    ];
    match found.len() {
        0 => Err(dataset_err(
            root,
            format!(
                "no RefCOCOm split file found; looked for: {}",
                looked.join(", ")
            ),
        )),
        1 => Ok(found.remove(0)),
        _ => {
            let preferred = found.iter().find(|p| {
                p.parent()
                    .and_then(|d| d.file_name())
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| PREFERRED_NAMES.contains(&n.to_ascii_lowercase().as_str()))
            });
            preferred.cloned().ok_or_else(|| {
                let all: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
                dataset_err(
                    root,
                    format!("several RefCOCOm split files found: {}", all.join(", ")),
                )
            })
        }
    }
}

/// Loads a RefCOCOm split from `root` (holding `anns/`, `masks/` and `images/train2014/`).
pub fn load_refcocom(root: &Path, split: &str) -> Result<RefCocoMDataset> {
    if !SPLITS.contains(&split) {
        return Err(Error::UnknownSplit {
            dataset: DatasetKind::RefCocoM.to_string(),
            split: split.to_string(),
            known: SPLITS.join(", "),
        });
    }
    check_root(root)?;
    let split_path = find_split_file(root, split)?;
    let text = read_capped_to_string(&split_path, MAX_DATASET_BYTES, "split file")?;
    let raw: Vec<EntryJson> = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: split_path.clone(),
        source,
    })?;
    let Some(first) = raw.first() else {
        return Err(dataset_err(&split_path, "the split file lists no masks"));
    };
    // The mask folder, with or without the `<name>` level.
    let name = split_path
        .parent()
        .filter(|d| d.file_name().is_some_and(|n| n != "anns"))
        .and_then(|d| d.file_name())
        .map(PathBuf::from);
    let mut mask_dirs: Vec<PathBuf> = Vec::new();
    if let Some(n) = &name {
        mask_dirs.push(root.join("masks").join(n));
    }
    mask_dirs.push(root.join("masks"));
    let probe = format!("{}.png", first.segment_id);
    let mask_dir = mask_dirs
        .iter()
        .find(|d| d.join(&probe).is_file())
        .cloned()
        .ok_or_else(|| {
            let looked: Vec<String> = mask_dirs
                .iter()
                .map(|d| d.join(&probe).display().to_string())
                .collect();
            dataset_err(
                root,
                format!(
                    "no mask for segment {} of {}; looked for: {}",
                    first.segment_id,
                    split_path.display(),
                    looked.join(", ")
                ),
            )
        })?;

    let mut img_names: Vec<String> = Vec::new();
    let mut img_index = std::collections::HashMap::new();
    let mut entries = Vec::new();
    for e in &raw {
        let img = *img_index.entry(e.img_name.clone()).or_insert_with(|| {
            img_names.push(e.img_name.clone());
            img_names.len() - 1
        });
        for s in &e.sentences {
            entries.push(Entry {
                sent_id: s.sent_id,
                segment_id: e.segment_id,
                text: s.sent.clone(),
                img,
            });
        }
    }
    let (image_dir, images_found) = image_dir(root);
    let segments: std::collections::HashSet<i64> = raw.iter().map(|e| e.segment_id).collect();
    let summary = LoadSummary {
        images: img_names.len(),
        refs: raw.len(),
        instances: segments.len(),
        sentences: entries.len(),
        no_target: 0,
        multi_target: 0,
        images_found,
    };
    Ok(RefCocoMDataset {
        split: split.to_string(),
        mask_dir,
        image_dir,
        img_names,
        entries,
        summary,
    })
}

impl RefCocoMDataset {
    fn entry(&self, index: usize) -> Result<&Entry> {
        self.entries.get(index).ok_or_else(|| {
            out_of_range(
                DatasetKind::RefCocoM.as_str(),
                &self.split,
                index,
                self.entries.len(),
            )
        })
    }

    fn mask_path(&self, e: &Entry) -> PathBuf {
        self.mask_dir.join(format!("{}.png", e.segment_id))
    }
}

fn image_error(path: &Path, e: image::ImageError) -> Error {
    match e {
        image::ImageError::IoError(source) => Error::io(path, source),
        other => Error::BadImage {
            what: path.display().to_string(),
            reason: other.to_string(),
        },
    }
}

impl Dataset for RefCocoMDataset {
    fn name(&self) -> &str {
        DatasetKind::RefCocoM.as_str()
    }

    fn split(&self) -> &str {
        &self.split
    }

    fn metric_family(&self) -> MetricFamily {
        MetricFamily::Classic
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn sent_id(&self, index: usize) -> Result<i64> {
        Ok(self.entry(index)?.sent_id)
    }

    /// Reads the size from the mask PNG's header (the mask has the image's size).
    fn sample(&self, index: usize) -> Result<Sample> {
        let e = self.entry(index)?;
        let mask_path = self.mask_path(e);
        let (w, h) =
            image::image_dimensions(&mask_path).map_err(|err| image_error(&mask_path, err))?;
        Ok(Sample {
            index,
            sent_id: e.sent_id,
            ref_id: e.segment_id,
            sentence: e.text.clone(),
            image_path: self.image_dir.join(&self.img_names[e.img]),
            height: h as usize,
            width: w as usize,
            no_target: false,
            n_targets: 1,
            granularity: self
                .split
                .ends_with("_part_only")
                .then_some(Granularity::Part),
        })
    }

    fn gt_mask(&self, index: usize) -> Result<Mask> {
        let e = self.entry(index)?;
        let path = self.mask_path(e);
        let img = image::open(&path).map_err(|err| image_error(&path, err))?;
        Ok(Mask::from_gray_image(&img.to_luma8()))
    }

    fn summary(&self) -> LoadSummary {
        self.summary.clone()
    }
}
