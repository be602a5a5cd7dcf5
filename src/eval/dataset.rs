//! What every benchmark loader yields: one [`Sample`] per referring sentence, with the ground
//! truth decoded only when asked for, and which metric family the benchmark is scored with.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::types::{Granularity, Mask};

/// The published benchmarks `unires` reads.
/// A split scheme of the refer toolkit (`refs(<scheme>).p`): UNC, Google or UMD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SplitBy {
    Unc,
    Google,
    Umd,
}

impl SplitBy {
    pub fn as_str(self) -> &'static str {
        match self {
            SplitBy::Unc => "unc",
            SplitBy::Google => "google",
            SplitBy::Umd => "umd",
        }
    }
}

impl fmt::Display for SplitBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SplitBy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "unc" => Ok(SplitBy::Unc),
            "google" => Ok(SplitBy::Google),
            "umd" => Ok(SplitBy::Umd),
            _ => Err(Error::UnknownSplit {
                dataset: "split-by".into(),
                split: s.to_string(),
                known: "unc, google, umd".into(),
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DatasetKind {
    /// RefCOCO (UNC splits by default, Google splits with `split_by = "google"`).
    #[serde(rename = "refcoco")]
    RefCoco,
    /// RefCOCO+ (UNC splits).
    #[serde(rename = "refcoco+")]
    RefCocoPlus,
    /// RefCOCOg (UMD splits by default, Google splits with `split_by = "google"`).
    #[serde(rename = "refcocog")]
    RefCocoG,
    /// gRefCOCO (GRES): multi-target and no-target expressions.
    #[serde(rename = "grefcoco")]
    GRefCoco,
    /// RefCOCOm (UniRES): part-level and object-level expressions.
    #[serde(rename = "refcocom")]
    RefCocoM,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 5] = [
        DatasetKind::RefCoco,
        DatasetKind::RefCocoPlus,
        DatasetKind::RefCocoG,
        DatasetKind::GRefCoco,
        DatasetKind::RefCocoM,
    ];

    /// The name used on the command line, in reports and as the folder under `--root`.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetKind::RefCoco => "refcoco",
            DatasetKind::RefCocoPlus => "refcoco+",
            DatasetKind::RefCocoG => "refcocog",
            DatasetKind::GRefCoco => "grefcoco",
            DatasetKind::RefCocoM => "refcocom",
        }
    }

    /// How the benchmark is scored.
    pub fn metric_family(self) -> MetricFamily {
        match self {
            DatasetKind::GRefCoco => MetricFamily::Generalized,
            _ => MetricFamily::Classic,
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatasetKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let found = match lower.as_str() {
            "refcocop" | "refcoco_plus" | "refcoco-plus" => Some(DatasetKind::RefCocoPlus),
            "refcoco-m" | "refcoco_m" => Some(DatasetKind::RefCocoM),
            "grefcoco" | "g-refcoco" | "gres" => Some(DatasetKind::GRefCoco),
            other => DatasetKind::ALL.into_iter().find(|k| k.as_str() == other),
        };
        found.ok_or_else(|| Error::UnknownDataset {
            name: s.to_string(),
            known: DatasetKind::ALL.map(|k| k.as_str()).join(", "),
        })
    }
}

/// Which official evaluator a benchmark's numbers follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MetricFamily {
    /// gRefCOCO, as ReLA's `ReferEvaluator`: gIoU, cIoU, N-acc, T-acc, Pr@0.7/0.8/0.9.
    Generalized,
    /// RefCOCO/+/g and RefCOCOm, as LAVT's `test.py`: oIoU, mIoU, Pr@0.5…0.9.
    Classic,
}

/// One referring sentence of a benchmark split.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Position in the split (0-based).
    pub index: usize,
    /// The sentence id of the annotation files (what prediction files are keyed by).
    pub sent_id: i64,
    /// The referent's id: `ref_id` (RefCOCO family, gRefCOCO) or `segment_id` (RefCOCOm).
    pub ref_id: i64,
    /// The expression.
    pub sentence: String,
    /// Where the image is expected (it is only read by model runs).
    pub image_path: PathBuf,
    /// Image (and ground-truth mask) height in pixels.
    pub height: usize,
    /// Image (and ground-truth mask) width in pixels.
    pub width: usize,
    /// True when the expression refers to nothing in the image (gRefCOCO).
    pub no_target: bool,
    /// Number of annotated objects the expression refers to (0 for no-target).
    pub n_targets: usize,
    /// The granularity the benchmark implies, when it says (e.g. RefCOCOm `*_part_only`).
    pub granularity: Option<Granularity>,
}

/// Counts of what a split holds, to compare with the published figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoadSummary {
    /// Distinct images.
    pub images: usize,
    /// Referents: referred objects (RefCOCO family), target sets (gRefCOCO), masks (RefCOCOm).
    pub refs: usize,
    /// Distinct annotated instances the referents point at.
    pub instances: usize,
    /// Sentences, i.e. samples.
    pub sentences: usize,
    /// Sentences with no target.
    pub no_target: usize,
    /// Sentences with more than one target.
    pub multi_target: usize,
    /// Whether the image folder was found (scoring prediction files does not need it).
    pub images_found: bool,
}

/// A benchmark split, ready to be scored.
///
/// Implementations keep only what is needed to build each sample and decode its ground truth
/// on demand (a RefCOCO split has ~10k sentences; masks are not held in memory).
pub trait Dataset: Send + Sync {
    /// Benchmark name as used in reports (`refcoco`, `grefcoco`, …).
    fn name(&self) -> &str;
    /// Split name as published (`val`, `testA`, `val_part_only`, …).
    fn split(&self) -> &str;
    /// Which evaluator the benchmark follows.
    fn metric_family(&self) -> MetricFamily;
    /// Number of samples (sentences).
    fn len(&self) -> usize;
    /// True when the split holds no sample.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The `index`-th sample's metadata (cheap).
    fn sample(&self, index: usize) -> Result<Sample>;
    /// The `index`-th sample's sentence id (no I/O, unlike [`Dataset::sample`] may need).
    fn sent_id(&self, index: usize) -> Result<i64> {
        Ok(self.sample(index)?.sent_id)
    }
    /// The `index`-th sample's ground-truth mask at image resolution (all zeros for no-target).
    fn gt_mask(&self, index: usize) -> Result<Mask>;
    /// Counts of what was loaded.
    fn summary(&self) -> LoadSummary;
}

/// The error for an index past the end of a split.
pub(crate) fn out_of_range(name: &str, split: &str, index: usize, len: usize) -> Error {
    Error::shape(
        "Dataset::sample",
        format!("index {index} is past the end of {name} {split} ({len} samples)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_print() {
        for k in DatasetKind::ALL {
            assert_eq!(k.as_str().parse::<DatasetKind>().unwrap(), k);
            let js = serde_json::to_string(&k).unwrap();
            assert_eq!(js, format!("\"{}\"", k.as_str()));
        }
        assert_eq!(
            "RefCOCOm".parse::<DatasetKind>().unwrap(),
            DatasetKind::RefCocoM
        );
        assert!(matches!(
            "refclef".parse::<DatasetKind>(),
            Err(Error::UnknownDataset { .. })
        ));
    }
}
