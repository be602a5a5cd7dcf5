//! Running a model on fresh synthetic scenes and scoring it (`unires eval --dataset synthetic`).
//!
//! Every sample of `n` scenes of a seed is segmented with its ground-truth granularity forced
//! (the task as posed: image, phrase and granularity). The metrics, all in percent:
//! * `mIoU_part`, `mIoU_object`, `mIoU_multi`: mean IoU over the samples of that granularity
//!   that have a target (an empty prediction scores 0);
//! * `gIoU`, `cIoU`, `N-acc`, `T-acc`: gRefCOCO's generalised metrics over all samples (a
//!   no-target sample predicted empty counts as IoU 1 in `gIoU`);
//! * `granularity_acc`: how often the granularity `Auto` would pick (the arg-max of the three
//!   granularity tokens at the answer position, which does not depend on the forced choice)
//!   is the expression's granularity, over all samples.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::{episode, Sample, SyntheticConfig};
use crate::error::Result;
use crate::eval::metrics::{GeneralizedAccumulator, Metrics, SampleStats};
use crate::model::unires::UniRes;
use crate::types::{Granularity, Mask};

/// The metrics of a report, in table order.
pub const METRICS: [&str; 8] = [
    "mIoU_part",
    "mIoU_object",
    "mIoU_multi",
    "gIoU",
    "cIoU",
    "N-acc",
    "T-acc",
    "granularity_acc",
];

/// What to evaluate on.
#[derive(Debug, Clone)]
pub struct SyntheticEvalOptions {
    /// Seed of the scenes (choose one the model was not trained on).
    pub seed: u64,
    /// Number of scenes (each gives `config.samples_per_scene` samples).
    pub scenes: usize,
    /// Scene, sample and proposal settings (default: [`SyntheticConfig::eval`] with mixed
    /// sizes, i.e. a detector without misses).
    pub config: SyntheticConfig,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl SyntheticEvalOptions {
    /// `scenes` scenes of `seed` with the evaluation settings.
    pub fn new(seed: u64, scenes: usize) -> Self {
        Self {
            seed,
            scenes,
            config: SyntheticConfig {
                sizes: SyntheticConfig::mixed_sizes().sizes,
                ..SyntheticConfig::eval()
            },
            progress: false,
        }
    }
}

/// The result of [`evaluate_model`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyntheticReport {
    /// Scenes.
    pub n: usize,
    /// Samples (expressions).
    pub samples: usize,
    /// Samples per granularity with a target, and without one.
    pub counts: SampleCounts,
    /// Metric name → value (percent).
    pub metrics: std::collections::BTreeMap<String, f64>,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
}

/// How many samples of each kind a report covers.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct SampleCounts {
    pub part: usize,
    pub object: usize,
    pub multi: usize,
    pub no_target: usize,
}

/// One sample's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleOutcome {
    /// The expression's granularity.
    pub granularity: Granularity,
    /// True when the ground truth is "no target".
    pub no_target: bool,
    /// IoU with the ground truth (for no-target samples: 1 when predicted empty, else 0).
    pub iou: f64,
    /// The prediction is empty.
    pub pred_empty: bool,
    /// The granularity `Auto` would pick.
    pub auto_granularity: Granularity,
}

/// Segments one sample (its granularity forced) and compares with the ground truth.
pub fn score_sample(
    model: &UniRes,
    enc: &crate::model::unires::EncodedImage,
    sample: &Sample,
    acc: &mut GeneralizedAccumulator,
) -> Result<SampleOutcome> {
    let seg = model.segment(enc, &sample.expression, sample.granularity)?;
    let (h, w) = (seg.mask.height(), seg.mask.width());
    let empty_gt;
    let gt = match &sample.mask {
        Some(m) => m,
        None => {
            empty_gt = Mask::zeros(h, w);
            &empty_gt
        }
    };
    let stats = SampleStats::new(&seg.mask, gt, sample.mask.is_none())?;
    acc.add_stats(stats);
    let iou = if sample.mask.is_none() {
        f64::from(u8::from(stats.pred_empty))
    } else if stats.union == 0 {
        0.0
    } else {
        stats.intersection as f64 / stats.union as f64
    };
    let auto = Granularity::from_index(UniRes::argmax(&seg.granularity_probs))
        .unwrap_or(Granularity::Object);
    Ok(SampleOutcome {
        granularity: sample.granularity,
        no_target: sample.mask.is_none(),
        iou,
        pred_empty: stats.pred_empty,
        auto_granularity: auto,
    })
}

/// Aggregates per-sample outcomes and the generalised accumulator into a report.
pub fn summarise(
    n: usize,
    outcomes: &[SampleOutcome],
    acc: &GeneralizedAccumulator,
    seconds: f64,
) -> SyntheticReport {
    let mut metrics = std::collections::BTreeMap::new();
    let mut counts = SampleCounts::default();
    for (name, g) in [
        ("mIoU_part", Granularity::Part),
        ("mIoU_object", Granularity::Object),
        ("mIoU_multi", Granularity::MultiObject),
    ] {
        let ious: Vec<f64> = outcomes
            .iter()
            .filter(|o| !o.no_target && o.granularity == g)
            .map(|o| o.iou)
            .collect();
        match g {
            Granularity::Part => counts.part = ious.len(),
            Granularity::Object => counts.object = ious.len(),
            _ => counts.multi = ious.len(),
        }
        let mean = if ious.is_empty() {
            0.0
        } else {
            ious.iter().sum::<f64>() / ious.len() as f64
        };
        metrics.insert(name.to_string(), 100.0 * mean);
    }
    counts.no_target = outcomes.iter().filter(|o| o.no_target).count();
    let g: Metrics = acc.metrics();
    for key in ["gIoU", "cIoU", "N-acc", "T-acc"] {
        metrics.insert(key.to_string(), g.get(key).unwrap_or(0.0));
    }
    let right = outcomes
        .iter()
        .filter(|o| o.auto_granularity == o.granularity)
        .count();
    let acc_g = if outcomes.is_empty() {
        0.0
    } else {
        100.0 * right as f64 / outcomes.len() as f64
    };
    metrics.insert("granularity_acc".into(), acc_g);
    SyntheticReport {
        n,
        samples: outcomes.len(),
        counts,
        metrics,
        seconds,
    }
}

/// Generates `opts.scenes` scenes of `opts.seed`, segments every sample with `model` and
/// scores the predictions (see the module documentation for the metrics).
pub fn evaluate_model(model: &UniRes, opts: &SyntheticEvalOptions) -> Result<SyntheticReport> {
    let start = Instant::now();
    let pb = if opts.progress {
        let pb = ProgressBar::new(opts.scenes as u64);
        let style = ProgressStyle::with_template(
            "{msg} {bar:40} {pos}/{len} scenes [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        pb.set_style(style);
        pb.set_message("synthetic");
        pb
    } else {
        ProgressBar::hidden()
    };
    let mut acc = GeneralizedAccumulator::default();
    let mut outcomes = Vec::new();
    for i in 0..opts.scenes {
        let ep = episode(opts.seed, i as u64, &opts.config);
        let enc = model.encode(&ep.scene.image, &ep.proposals)?;
        for s in &ep.samples {
            outcomes.push(score_sample(model, &enc, s, &mut acc)?);
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(summarise(
        opts.scenes,
        &outcomes,
        &acc,
        start.elapsed().as_secs_f64(),
    ))
}

impl SyntheticReport {
    /// The report as a fixed-width table (one metric per row).
    pub fn table(&self) -> String {
        let mut s = format!(
            "synthetic: {} scenes, {} samples (part {}, object {}, multi {}, no-target {}), {:.1} s\n",
            self.n,
            self.samples,
            self.counts.part,
            self.counts.object,
            self.counts.multi,
            self.counts.no_target,
            self.seconds
        );
        s.push_str("| metric | value |\n|---|---:|\n");
        for key in METRICS {
            if let Some(v) = self.metrics.get(key) {
                s.push_str(&format!("| {key} | {v:.2} |\n"));
            }
        }
        s
    }
}
