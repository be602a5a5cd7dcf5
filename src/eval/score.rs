//! Scoring a split: from a prediction file (`[{"sent_id", "rle"}]`, no model needed) or from
//! any function that segments a sample; one report per run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::dataset::{Dataset, Sample};
use crate::eval::metrics::{Accumulator, Metrics, SampleStats};
use crate::io::read::{read_capped_to_string, MAX_DATASET_BYTES};
use crate::io::rle::{CocoRle, RawCocoRle, Rle};
use crate::types::Mask;

/// The result of scoring a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Benchmark name (`refcoco`, `grefcoco`, …).
    pub dataset: String,
    /// Split name.
    pub split: String,
    /// Samples scored.
    pub n: usize,
    /// Metric values in percent, in the benchmark's order.
    pub metrics: Metrics,
    /// Samples without a prediction (scored as empty, i.e. "no target"); omitted when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missing_predictions: usize,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// How a split is scored.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    /// Score only the first `limit` samples.
    pub limit: Option<usize>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

#[derive(Deserialize)]
struct PredictionJson {
    sent_id: i64,
    #[serde(default)]
    rle: Option<RawCocoRle>,
}

/// Predicted masks keyed by `sent_id`; `None` (or an empty mask) means "no target".
#[derive(Debug, Clone, Default)]
pub struct Predictions {
    /// Where they were read from (for error messages).
    pub source: PathBuf,
    by_sent: HashMap<i64, Option<Rle>>,
}

impl Predictions {
    /// An empty set; `source` names it in error messages.
    pub fn new(source: impl Into<PathBuf>) -> Self {
        Self {
            source: source.into(),
            by_sent: HashMap::new(),
        }
    }

    /// Reads `[{"sent_id": int, "rle": {"size": [h, w], "counts": "..."}}, ...]`; `rle` may be
    /// missing or null for "no target", and its counts may be compressed or a list.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = read_capped_to_string(path, MAX_DATASET_BYTES, "prediction file")?;
        Self::from_json_str(&text, path)
    }

    /// Parses the prediction JSON; `source` names it in error messages.
    pub fn from_json_str(text: &str, source: impl Into<PathBuf>) -> Result<Self> {
        let source = source.into();
        let raw: Vec<PredictionJson> = serde_json::from_str(text).map_err(|e| Error::Json {
            path: source.clone(),
            source: e,
        })?;
        let mut out = Self::new(source);
        for p in raw {
            let rle = match p.rle {
                None => None,
                Some(r) => Some(r.to_rle().map_err(|e| match e {
                    Error::BadRle { reason } => Error::BadRle {
                        reason: format!("prediction for sent_id {}: {reason}", p.sent_id),
                    },
                    other => other,
                })?),
            };
            out.insert(p.sent_id, rle)?;
        }
        Ok(out)
    }

    /// Adds one prediction; a second one for the same sentence is an error.
    pub fn insert(&mut self, sent_id: i64, rle: Option<Rle>) -> Result<()> {
        if self.by_sent.insert(sent_id, rle).is_some() {
            return Err(Error::Dataset {
                path: self.source.clone(),
                reason: format!("sent_id {sent_id} is predicted more than once"),
            });
        }
        Ok(())
    }

    /// Adds one predicted mask (empty = "no target").
    pub fn insert_mask(&mut self, sent_id: i64, mask: &Mask) -> Result<()> {
        self.insert(sent_id, Some(Rle::encode(mask)))
    }

    pub fn len(&self) -> usize {
        self.by_sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_sent.is_empty()
    }

    /// The entry for `sent_id`: `None` when absent, `Some(None)` when predicted "no target".
    pub fn get(&self, sent_id: i64) -> Option<Option<&Rle>> {
        self.by_sent.get(&sent_id).map(Option::as_ref)
    }

    /// Writes the prediction JSON (compressed counts).
    pub fn to_json(&self) -> serde_json::Value {
        let mut ids: Vec<&i64> = self.by_sent.keys().collect();
        ids.sort();
        serde_json::Value::Array(
            ids.into_iter()
                .map(|id| {
                    let rle = self.by_sent[id].as_ref().map(CocoRle::from);
                    serde_json::json!({"sent_id": id, "rle": rle})
                })
                .collect(),
        )
    }
}

fn progress_bar(n: usize, show: bool, label: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(n as u64);
    let style = ProgressStyle::with_template(
        "{msg} {bar:40} {pos}/{len} [{elapsed_precise} < {eta_precise}]",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_message(label.to_string());
    pb
}

fn scored_len(dataset: &dyn Dataset, opts: &EvalOptions) -> usize {
    opts.limit.map_or(dataset.len(), |l| l.min(dataset.len()))
}

fn check_size(what: impl FnOnce() -> String, pred: &Mask, sample: &Sample) -> Result<()> {
    if (pred.height(), pred.width()) != (sample.height, sample.width) {
        return Err(Error::SizeMismatch {
            what: what(),
            expected_h: sample.height,
            expected_w: sample.width,
            got_h: pred.height(),
            got_w: pred.width(),
        });
    }
    Ok(())
}

fn report(dataset: &dyn Dataset, acc: &Accumulator, missing: usize) -> EvalReport {
    EvalReport {
        dataset: dataset.name().to_string(),
        split: dataset.split().to_string(),
        n: acc.count(),
        metrics: acc.metrics(),
        missing_predictions: missing,
    }
}

/// Scores a prediction file against a split.
///
/// A sample without a prediction counts as predicted empty and is counted in
/// `missing_predictions`; a prediction for a `sent_id` the split does not hold is an error, as
/// is one whose size differs from the image's. With `limit`, only the first samples are
/// scored (predictions for later samples of the split are ignored).
pub fn score_predictions(
    dataset: &dyn Dataset,
    preds: &Predictions,
    opts: &EvalOptions,
) -> Result<EvalReport> {
    let n = scored_len(dataset, opts);
    // Every predicted sentence must be in the split, and name exactly one sample.
    let mut owners: HashMap<i64, usize> = HashMap::with_capacity(dataset.len());
    for i in 0..dataset.len() {
        *owners.entry(dataset.sent_id(i)?).or_insert(0) += 1;
    }
    let mut predicted: Vec<i64> = preds.by_sent.keys().copied().collect();
    predicted.sort_unstable();
    for id in predicted {
        match owners.get(&id) {
            None => {
                return Err(Error::Dataset {
                    path: preds.source.clone(),
                    reason: format!(
                        "sent_id {id} is not in {} {}",
                        dataset.name(),
                        dataset.split()
                    ),
                })
            }
            Some(&c) if c > 1 => {
                return Err(Error::Dataset {
                    path: preds.source.clone(),
                    reason: format!(
                    "sent_id {id} names {c} samples of {} {}; predictions by sent_id are ambiguous",
                    dataset.name(),
                    dataset.split()
                ),
                })
            }
            Some(_) => {}
        }
    }

    let pb = progress_bar(n, opts.progress, "scoring");
    let per_sample: Vec<(SampleStats, bool)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let sample = dataset.sample(i)?;
            let gt = dataset.gt_mask(i)?;
            let entry = preds.get(sample.sent_id);
            let pred = match entry.flatten() {
                Some(rle) => {
                    // Checked before decoding, so a wrong size cannot make a huge mask.
                    if (rle.height, rle.width) != (sample.height, sample.width) {
                        return Err(Error::SizeMismatch {
                            what: format!("prediction for sent_id {}", sample.sent_id),
                            expected_h: sample.height,
                            expected_w: sample.width,
                            got_h: rle.height,
                            got_w: rle.width,
                        });
                    }
                    rle.decode()?
                }
                None => Mask::zeros(sample.height, sample.width),
            };
            let stats = SampleStats::new(&pred, &gt, sample.no_target)?;
            pb.inc(1);
            Ok((stats, entry.is_none()))
        })
        .collect::<Result<_>>()?;
    pb.finish_and_clear();

    let mut acc = Accumulator::new(dataset.metric_family());
    let mut missing = 0;
    for (stats, is_missing) in per_sample {
        acc.add_stats(stats);
        missing += usize::from(is_missing);
    }
    Ok(report(dataset, &acc, missing))
}

/// Scores `segment(sample) -> mask` over a split (a model run). The mask must have the
/// sample's image size; an empty mask means "no target".
pub fn evaluate<F>(dataset: &dyn Dataset, opts: &EvalOptions, mut segment: F) -> Result<EvalReport>
where
    F: FnMut(&Sample) -> Result<Mask>,
{
    let n = scored_len(dataset, opts);
    let pb = progress_bar(n, opts.progress, "evaluating");
    let mut acc = Accumulator::new(dataset.metric_family());
    for i in 0..n {
        let sample = dataset.sample(i)?;
        let pred = segment(&sample)?;
        check_size(
            || format!("mask for sent_id {}", sample.sent_id),
            &pred,
            &sample,
        )?;
        let gt = dataset.gt_mask(i)?;
        acc.add(&pred, &gt, sample.no_target)?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(report(dataset, &acc, 0))
}
