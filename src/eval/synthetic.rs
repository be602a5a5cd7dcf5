//! Running a model (any [`Segmenter`]) on fresh synthetic scenes and scoring it
//! (`unires eval --dataset synthetic`).
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

use crate::error::Result;
use crate::eval::box_fill;
use crate::eval::metrics::{GeneralizedAccumulator, Metrics, SampleStats};
use crate::pipeline::{Encoded, Segmenter};
use crate::rng::SplitMix64;
use crate::synthetic::{
    episode, heldout_text, Cue, Phrasing, ProposalMode, Sample, SyntheticConfig,
};
use crate::types::{argmax, Granularity, Mask, Proposals, RegionKind};

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
    /// Where the proposals come from (default: the simulated detector of `config`).
    pub proposals: ProposalMode,
    /// The phrasing of the expressions (default: the trained templates).
    pub phrasing: Phrasing,
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
            proposals: ProposalMode::Simulated,
            phrasing: Phrasing::Trained,
            progress: false,
        }
    }
}

/// The result of [`evaluate_model`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyntheticReport {
    /// Scenes.
    pub n: usize,
    /// Seed of the scenes, proposal mode and phrasing (set by [`SyntheticReport::with_setup`];
    /// [`summarise`] alone leaves the defaults).
    pub seed: u64,
    pub proposals: String,
    pub phrasing: String,
    /// Samples (expressions).
    pub samples: usize,
    /// Samples per granularity with a target, and without one.
    pub counts: SampleCounts,
    /// Metric name → value (percent).
    pub metrics: std::collections::BTreeMap<String, f64>,
    /// The no-target threshold the metrics were computed at.
    pub no_target_threshold: f32,
    /// mIoU and empty-prediction rate per granularity and cue.
    pub by_cue: Vec<CueRow>,
    /// The box-fill baselines (`box_fill`: the model's own selection, `oracle_box_fill`: the
    /// ground-truth selection): mIoU per granularity, gIoU and cIoU, in percent.
    pub baselines: std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>>,
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

/// One sample's outcome, before the no-target threshold is applied (so that one run can be
/// scored at any threshold, see [`threshold_sweep`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleOutcome {
    /// The expression's granularity.
    pub granularity: Granularity,
    /// How the phrase singles out its referent.
    pub cue: Cue,
    /// True when the ground truth is "no target".
    pub no_target: bool,
    /// The model's target probability (the result is empty below the threshold).
    pub score: f32,
    /// Counts of the mask the model predicts when it is not rejected by the score.
    pub raw: SampleStats,
    /// Area of the ground truth (0 for no-target samples).
    pub gt_area: u64,
    /// The granularity `Auto` would pick.
    pub auto_granularity: Granularity,
    /// Counts of the box-fill baseline with the model's own selection
    /// ([`box_fill::model_selection`]), before the no-target threshold.
    pub box_fill: SampleStats,
    /// Counts of the oracle box-fill ([`box_fill::oracle_selection`]; no threshold applies).
    pub oracle: SampleStats,
}

impl SampleOutcome {
    /// The counts at no-target threshold `t`: an empty prediction when the score is below it.
    pub fn stats_at(&self, t: f32) -> SampleStats {
        self.thresholded(self.raw, t)
    }

    /// The counts of `method` at no-target threshold `t` (the oracle ignores `t`).
    pub fn method_stats_at(&self, method: Method, t: f32) -> SampleStats {
        match method {
            Method::Model => self.stats_at(t),
            Method::BoxFill => self.thresholded(self.box_fill, t),
            Method::OracleBoxFill => self.oracle,
        }
    }

    fn thresholded(&self, raw: SampleStats, t: f32) -> SampleStats {
        if self.score < t {
            SampleStats {
                intersection: 0,
                union: self.gt_area,
                pred_empty: true,
                gt_no_target: self.no_target,
            }
        } else {
            raw
        }
    }

    /// IoU at threshold `t` (for no-target samples: 1 when predicted empty, else 0; an empty
    /// prediction of a target scores 0).
    pub fn iou_at(&self, t: f32) -> f64 {
        self.method_iou_at(Method::Model, t)
    }

    /// [`SampleOutcome::iou_at`] of `method`.
    pub fn method_iou_at(&self, method: Method, t: f32) -> f64 {
        let s = self.method_stats_at(method, t);
        if self.no_target {
            f64::from(u8::from(s.pred_empty))
        } else if s.union == 0 || s.pred_empty {
            0.0
        } else {
            s.intersection as f64 / s.union as f64
        }
    }
}

/// What produced a sample's mask: the model, or one of the box-fill baselines
/// ([`box_fill`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Model,
    BoxFill,
    OracleBoxFill,
}

/// Segments one sample (its granularity forced, no rejection by the score) and compares
/// with the ground truth; also scores the two box-fill baselines on `proposals` (the
/// proposals as given; the model's clipped and capped ones are used when it reports them).
pub fn score_sample(
    model: &dyn Segmenter,
    enc: &Encoded,
    sample: &Sample,
    proposals: &Proposals,
) -> Result<SampleOutcome> {
    let seg = model.segment_with_threshold(
        enc,
        &sample.expression,
        sample.granularity,
        f32::NEG_INFINITY,
    )?;
    let (h, w) = (seg.mask.height(), seg.mask.width());
    let empty_gt;
    let gt = match &sample.mask {
        Some(m) => m,
        None => {
            empty_gt = Mask::zeros(h, w);
            &empty_gt
        }
    };
    let raw = SampleStats::new(&seg.mask, gt, sample.mask.is_none())?;
    let filled = |boxes: &[crate::types::BoxXyxy]| box_fill::fill_boxes(boxes, h, w);
    let chosen = box_fill::model_selection(&seg.regions, sample.granularity);
    let box_fill = SampleStats::new(&filled(&chosen), gt, sample.mask.is_none())?;
    let seen = if seg.regions.is_empty() {
        proposals.clone()
    } else {
        let of = |k: RegionKind| {
            seg.regions
                .iter()
                .filter(|r| r.kind == k)
                .map(|r| r.bbox)
                .collect()
        };
        Proposals::new(of(RegionKind::Object), of(RegionKind::Part))
    };
    let oracle_boxes = box_fill::oracle_selection(&seen, sample);
    let oracle = SampleStats::new(&filled(&oracle_boxes), gt, sample.mask.is_none())?;
    let auto =
        Granularity::from_index(argmax(&seg.granularity_probs)).unwrap_or(Granularity::Object);
    Ok(SampleOutcome {
        granularity: sample.granularity,
        cue: sample.cue,
        no_target: sample.mask.is_none(),
        score: seg.score,
        raw,
        gt_area: sample.mask.as_ref().map_or(0, |m| m.area()),
        auto_granularity: auto,
        box_fill,
        oracle,
    })
}

/// One row of the per-cue breakdown of a report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CueRow {
    /// `part`, `object` or `multi`.
    pub granularity: &'static str,
    /// The cue's name (`Class`, `Colour`, `Relation`, `AbsentClass`, …).
    pub cue: String,
    /// Samples.
    pub n: usize,
    /// Mean IoU in percent (no-target samples: the share predicted empty).
    pub miou: f64,
    /// Percent of the samples predicted empty.
    pub empty: f64,
    /// Mean IoU of the box-fill baseline with the model's selection.
    pub box_fill: f64,
    /// Mean IoU of the oracle box-fill.
    pub oracle_box_fill: f64,
}

/// gIoU, N-acc and T-acc at one no-target threshold.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ThresholdRow {
    pub threshold: f32,
    #[serde(rename = "gIoU")]
    pub giou: f64,
    #[serde(rename = "N-acc")]
    pub n_acc: f64,
    #[serde(rename = "T-acc")]
    pub t_acc: f64,
}

/// gRefCOCO's generalised metrics of the outcomes at no-target threshold `t`.
fn generalized_at(outcomes: &[SampleOutcome], t: f32) -> Metrics {
    method_generalized_at(outcomes, Method::Model, t)
}

fn method_generalized_at(outcomes: &[SampleOutcome], method: Method, t: f32) -> Metrics {
    let mut acc = GeneralizedAccumulator::default();
    for o in outcomes {
        acc.add_stats(o.method_stats_at(method, t));
    }
    acc.metrics()
}

/// mIoU per granularity (samples with a target), gIoU and cIoU of `method`, in percent.
fn method_metrics(
    outcomes: &[SampleOutcome],
    method: Method,
    t: f32,
) -> std::collections::BTreeMap<String, f64> {
    let mut m = std::collections::BTreeMap::new();
    for (name, g) in GRANULARITY_METRICS {
        let (_, v) = mean(
            outcomes
                .iter()
                .filter(|o| !o.no_target && o.granularity == g)
                .map(|o| o.method_iou_at(method, t)),
        );
        m.insert(name.to_string(), 100.0 * v);
    }
    let g = method_generalized_at(outcomes, method, t);
    for key in ["gIoU", "cIoU"] {
        m.insert(key.to_string(), g.get(key).unwrap_or(0.0));
    }
    m
}

const GRANULARITY_METRICS: [(&str, Granularity); 3] = [
    ("mIoU_part", Granularity::Part),
    ("mIoU_object", Granularity::Object),
    ("mIoU_multi", Granularity::MultiObject),
];

/// The outcomes scored at each of `thresholds`.
pub fn threshold_sweep(outcomes: &[SampleOutcome], thresholds: &[f32]) -> Vec<ThresholdRow> {
    thresholds
        .iter()
        .map(|&t| {
            let m = generalized_at(outcomes, t);
            ThresholdRow {
                threshold: t,
                giou: m.get("gIoU").unwrap_or(0.0),
                n_acc: m.get("N-acc").unwrap_or(0.0),
                t_acc: m.get("T-acc").unwrap_or(0.0),
            }
        })
        .collect()
}

fn mean(v: impl Iterator<Item = f64>) -> (usize, f64) {
    let (n, s) = v.fold((0usize, 0f64), |(n, s), x| (n + 1, s + x));
    (n, if n == 0 { 0.0 } else { s / n as f64 })
}

/// Scores the outcomes at no-target threshold `threshold` into a report.
pub fn summarise(
    n: usize,
    outcomes: &[SampleOutcome],
    threshold: f32,
    seconds: f64,
) -> SyntheticReport {
    let mut metrics = std::collections::BTreeMap::new();
    let mut counts = SampleCounts::default();
    for (name, g) in GRANULARITY_METRICS {
        let (k, m) = mean(
            outcomes
                .iter()
                .filter(|o| !o.no_target && o.granularity == g)
                .map(|o| o.iou_at(threshold)),
        );
        match g {
            Granularity::Part => counts.part = k,
            Granularity::Object => counts.object = k,
            _ => counts.multi = k,
        }
        metrics.insert(name.to_string(), 100.0 * m);
    }
    counts.no_target = outcomes.iter().filter(|o| o.no_target).count();
    let g = generalized_at(outcomes, threshold);
    for key in ["gIoU", "cIoU", "N-acc", "T-acc"] {
        metrics.insert(key.to_string(), g.get(key).unwrap_or(0.0));
    }
    let (_, acc_g) = mean(
        outcomes
            .iter()
            .map(|o| f64::from(u8::from(o.auto_granularity == o.granularity))),
    );
    metrics.insert("granularity_acc".into(), 100.0 * acc_g);
    let mut keys: Vec<(Granularity, Cue)> = Vec::new();
    for o in outcomes {
        if !keys.contains(&(o.granularity, o.cue)) {
            keys.push((o.granularity, o.cue));
        }
    }
    keys.sort_by_key(|(g, c)| (g.index(), format!("{c:?}")));
    let by_cue = keys
        .into_iter()
        .map(|(g, c)| {
            let of = || {
                outcomes
                    .iter()
                    .filter(move |o| o.granularity == g && o.cue == c)
            };
            let (k, m) = mean(of().map(|o| o.iou_at(threshold)));
            let (_, e) = mean(of().map(|o| f64::from(u8::from(o.stats_at(threshold).pred_empty))));
            let (_, bf) = mean(of().map(|o| o.method_iou_at(Method::BoxFill, threshold)));
            let (_, ob) = mean(of().map(|o| o.method_iou_at(Method::OracleBoxFill, threshold)));
            CueRow {
                granularity: g.as_str(),
                cue: format!("{c:?}"),
                n: k,
                miou: 100.0 * m,
                empty: 100.0 * e,
                box_fill: 100.0 * bf,
                oracle_box_fill: 100.0 * ob,
            }
        })
        .collect();
    SyntheticReport {
        n,
        seed: 0,
        proposals: ProposalMode::default().name().into(),
        phrasing: Phrasing::default().name().into(),
        samples: outcomes.len(),
        counts,
        metrics,
        no_target_threshold: threshold,
        by_cue,
        baselines: [
            ("box_fill", Method::BoxFill),
            ("oracle_box_fill", Method::OracleBoxFill),
        ]
        .into_iter()
        .map(|(k, m)| (k.to_string(), method_metrics(outcomes, m, threshold)))
        .collect(),
        seconds,
    }
}

/// Segments every sample of `opts.scenes` scenes of `opts.seed` with `model`, without
/// rejecting any by the score (apply a threshold with [`summarise`] or [`threshold_sweep`]).
pub fn score_scenes(
    model: &dyn Segmenter,
    opts: &SyntheticEvalOptions,
) -> Result<Vec<SampleOutcome>> {
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
    let mut outcomes = Vec::new();
    for i in 0..opts.scenes {
        let ep = episode(opts.seed, i as u64, &opts.config);
        let proposals = match opts.proposals {
            // The episode's own draw: the same stream and detector.
            ProposalMode::Simulated => ep.proposals.clone(),
            mode => mode.propose(
                &ep.scene,
                &mut SplitMix64::stream(opts.seed, &[i as u64, 2]),
                &opts.config.detector,
            )?,
        };
        let enc = model.encode(&ep.scene.image, &proposals)?;
        let mut rephrase = SplitMix64::stream(opts.seed, &[i as u64, 4]);
        for s in &ep.samples {
            let outcome = match opts.phrasing {
                Phrasing::Trained => score_sample(model, &enc, s, &proposals)?,
                Phrasing::Heldout => {
                    let s = Sample {
                        expression: heldout_text(&s.query, &mut rephrase),
                        ..s.clone()
                    };
                    score_sample(model, &enc, &s, &proposals)?
                }
            };
            outcomes.push(outcome);
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(outcomes)
}

/// Generates `opts.scenes` scenes of `opts.seed`, segments every sample with `model` and
/// scores the predictions at the model's no-target threshold (see the module documentation
/// for the metrics).
pub fn evaluate_model(
    model: &dyn Segmenter,
    opts: &SyntheticEvalOptions,
) -> Result<SyntheticReport> {
    let start = Instant::now();
    let outcomes = score_scenes(model, opts)?;
    Ok(summarise(
        opts.scenes,
        &outcomes,
        model.no_target_threshold(),
        start.elapsed().as_secs_f64(),
    )
    .with_setup(opts))
}

impl SyntheticReport {
    /// The report as a fixed-width table (one metric per row).
    /// Records the seed, proposal mode and phrasing of `opts`.
    pub fn with_setup(mut self, opts: &SyntheticEvalOptions) -> Self {
        self.seed = opts.seed;
        self.proposals = opts.proposals.name().into();
        self.phrasing = opts.phrasing.name().into();
        self
    }

    pub fn table(&self) -> String {
        let mut s = format!(
            "synthetic: seed {}, {} scenes, proposals {}, phrasing {}, {} samples (part {}, object {}, multi {}, no-target {}), {:.1} s\n",
            self.seed,
            self.n,
            self.proposals,
            self.phrasing,
            self.samples,
            self.counts.part,
            self.counts.object,
            self.counts.multi,
            self.counts.no_target,
            self.seconds
        );
        s.push_str("| metric | model | box fill | oracle box fill |\n|---|---:|---:|---:|\n");
        let base = |name: &str, key: &str| {
            self.baselines
                .get(name)
                .and_then(|m| m.get(key))
                .map_or_else(|| "–".to_string(), |v| format!("{v:.2}"))
        };
        for key in METRICS {
            if let Some(v) = self.metrics.get(key) {
                s.push_str(&format!(
                    "| {key} | {v:.2} | {} | {} |\n",
                    base("box_fill", key),
                    base("oracle_box_fill", key)
                ));
            }
        }
        s.push_str(&format!(
            "\nby cue (no-target threshold {:.3}; for no-target cues mIoU = share predicted empty)\n",
            self.no_target_threshold
        ));
        s.push_str(
            "| granularity | cue | n | mIoU | empty % | box fill | oracle box fill |\n|---|---|---:|---:|---:|---:|---:|\n",
        );
        for r in &self.by_cue {
            s.push_str(&format!(
                "| {} | {} | {} | {:.2} | {:.1} | {:.2} | {:.2} |\n",
                r.granularity, r.cue, r.n, r.miou, r.empty, r.box_fill, r.oracle_box_fill
            ));
        }
        s
    }
}
