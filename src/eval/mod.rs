//! Evaluation: the published referring-segmentation benchmarks read as distributed (RefCOCO,
//! RefCOCO+, RefCOCOg, gRefCOCO, RefCOCOm), their official metrics, and the synthetic
//! benchmark ([`synthetic`]). Models are reached only through the
//! [`Segmenter`](crate::pipeline::Segmenter) seam.
//!
//! ```no_run
//! use unires::eval::{self, DatasetKind, EvalOptions, Predictions};
//! # fn main() -> unires::Result<()> {
//! let ds = eval::load_dataset(DatasetKind::GRefCoco, "data".as_ref(), "val", None)?;
//! let preds = Predictions::from_path("pred.json")?;
//! let report = eval::score_predictions(ds.as_ref(), &preds, &EvalOptions::default())?;
//! println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
//! # Ok(()) }
//! ```

pub mod box_fill;
pub mod coco;
pub mod dataset;
pub mod metrics;
pub mod refcocom;
pub mod refer;
pub mod refs;
pub mod score;
pub mod synthetic;

use std::path::Path;

pub use dataset::{Dataset, DatasetKind, LoadSummary, MetricFamily, Sample, SplitBy};
pub use metrics::{Accumulator, ClassicAccumulator, GeneralizedAccumulator, Metrics};
pub use score::{evaluate, score_predictions, EvalOptions, EvalReport, Predictions};

use crate::error::{Error, Result};

/// Loads a benchmark split from `root` (see `docs/eval.md` for the layouts).
///
/// `split_by` picks the split scheme of RefCOCO (`unc`, default, or `google`) and RefCOCOg
/// (`umd`, default, or `google`); RefCOCO+ and gRefCOCO only have `unc`; RefCOCOm has none.
/// An unknown split gives [`Error::UnknownSplit`] listing the known ones.
pub fn load_dataset(
    kind: DatasetKind,
    root: &Path,
    split: &str,
    split_by: Option<SplitBy>,
) -> Result<Box<dyn Dataset>> {
    Ok(match kind {
        DatasetKind::RefCoco | DatasetKind::RefCocoPlus | DatasetKind::RefCocoG => {
            Box::new(refer::load_refer(kind, root, split, split_by)?)
        }
        DatasetKind::GRefCoco => Box::new(refer::load_grefcoco(root, split, split_by)?),
        DatasetKind::RefCocoM => {
            if let Some(by) = split_by {
                return Err(Error::UnknownSplit {
                    dataset: format!("{kind} (split-by)"),
                    split: by.as_str().to_string(),
                    known: "none (RefCOCOm has one split scheme)".into(),
                });
            }
            Box::new(refcocom::load_refcocom(root, split)?)
        }
    })
}
