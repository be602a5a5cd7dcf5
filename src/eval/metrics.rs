//! Referring-segmentation metrics with the official definitions, in percent.
//!
//! - gRefCOCO, as ReLA's `ReferEvaluator.evaluate` (`gres_model/evaluation/refer_evaluation.py`):
//!   a predicted empty mask means "no target". gIoU is the mean per-sample IoU over all
//!   samples, where a no-target sample scores 1 when predicted empty and 0 otherwise; cIoU is
//!   ΣI/ΣU, where a no-target sample predicted non-empty adds its predicted area to U (and one
//!   predicted empty adds nothing); N-acc = TP/(TP+FN) over no-target samples, T-acc =
//!   TN/(TN+FP) over targeted ones (ReLA prints these two as fractions; here they are in
//!   percent like the rest); Pr@0.7/0.8/0.9 count targeted samples with IoU ≥ the threshold.
//! - RefCOCO/+/g and RefCOCOm, as LAVT's `test.py`: oIoU = ΣI/ΣU, mIoU = mean per-sample IoU
//!   (0 when the union is empty), Pr@0.5…0.9 with IoU ≥ the threshold.
//!
//! Where the reference code would divide by zero, the value is 0 (as ReLA reports N-acc and
//! T-acc for a split without no-target samples).

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Result;
use crate::eval::dataset::MetricFamily;
use crate::types::Mask;

/// ReLA's precision thresholds.
pub const GENERALIZED_PR_THRESHOLDS: [f64; 3] = [0.7, 0.8, 0.9];
/// LAVT's precision thresholds.
pub const CLASSIC_PR_THRESHOLDS: [f64; 5] = [0.5, 0.6, 0.7, 0.8, 0.9];

/// Named metric values in a fixed order; serialises as a JSON object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics(pub Vec<(String, f64)>);

impl Metrics {
    /// The value named `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// Names and values in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.0.iter().map(|(n, v)| (n.as_str(), *v))
    }

    fn push(&mut self, name: impl Into<String>, value: f64) {
        self.0.push((name.into(), value));
    }
}

impl Serialize for Metrics {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Metrics {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Metrics;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of metric names to numbers")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Metrics, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, f64>()? {
                    out.push((k, v));
                }
                Ok(Metrics(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The name of a precision metric: `Pr@0.7`.
pub fn pr_name(threshold: f64) -> String {
    format!("Pr@{threshold:.1}")
}

fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// What one sample contributes: pixel counts and the no-target flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleStats {
    /// |pred ∩ gt|.
    pub intersection: u64,
    /// |pred ∪ gt|.
    pub union: u64,
    /// The prediction is empty ("no target").
    pub pred_empty: bool,
    /// The ground truth says the expression refers to nothing.
    pub gt_no_target: bool,
}

impl SampleStats {
    /// Compares a prediction with the ground truth (same size required).
    pub fn new(pred: &Mask, gt: &Mask, gt_no_target: bool) -> Result<Self> {
        Ok(Self {
            intersection: pred.intersection_area(gt)?,
            union: pred.union_area(gt)?,
            pred_empty: pred.is_empty(),
            gt_no_target,
        })
    }
}

/// ReLA's gRefCOCO accumulator.
#[derive(Debug, Clone, Default)]
pub struct GeneralizedAccumulator {
    accum_i: u64,
    accum_u: u64,
    accum_iou: f64,
    pr_count: [usize; GENERALIZED_PR_THRESHOLDS.len()],
    total: usize,
    targeted: usize,
    no_target: usize,
    /// No-target sample predicted empty.
    tp: usize,
    /// Targeted sample predicted non-empty.
    tn: usize,
    /// Targeted sample predicted empty.
    fp: usize,
    /// No-target sample predicted non-empty.
    fn_: usize,
}

impl GeneralizedAccumulator {
    /// Adds one sample (prediction, ground truth, whether the ground truth is "no target").
    pub fn add(&mut self, pred: &Mask, gt: &Mask, gt_no_target: bool) -> Result<()> {
        self.add_stats(SampleStats::new(pred, gt, gt_no_target)?);
        Ok(())
    }

    /// Adds one sample's counts.
    pub fn add_stats(&mut self, s: SampleStats) {
        if s.gt_no_target {
            self.no_target += 1;
            if s.pred_empty {
                self.tp += 1;
                self.accum_iou += 1.0;
            } else {
                self.fn_ += 1;
                self.accum_u += s.union;
            }
        } else {
            let i = if s.pred_empty {
                self.fp += 1;
                0
            } else {
                self.tn += 1;
                s.intersection
            };
            let iou = if s.union == 0 {
                0.0
            } else {
                i as f64 / s.union as f64
            };
            self.accum_iou += iou;
            self.accum_i += i;
            self.accum_u += s.union;
            self.targeted += 1;
            for (count, &t) in self.pr_count.iter_mut().zip(&GENERALIZED_PR_THRESHOLDS) {
                if iou >= t {
                    *count += 1;
                }
            }
        }
        self.total += 1;
    }

    /// Number of samples added.
    pub fn count(&self) -> usize {
        self.total
    }

    /// `gIoU`, `cIoU`, `N-acc`, `T-acc`, `Pr@0.7`, `Pr@0.8`, `Pr@0.9`.
    pub fn metrics(&self) -> Metrics {
        let mut m = Metrics::default();
        m.push("gIoU", 100.0 * ratio(self.accum_iou, self.total as f64));
        m.push(
            "cIoU",
            ratio(self.accum_i as f64 * 100.0, self.accum_u as f64),
        );
        let (n_acc, t_acc) = if self.no_target > 0 {
            (
                100.0 * ratio(self.tp as f64, (self.tp + self.fn_) as f64),
                100.0 * ratio(self.tn as f64, (self.tn + self.fp) as f64),
            )
        } else {
            (0.0, 0.0)
        };
        m.push("N-acc", n_acc);
        m.push("T-acc", t_acc);
        for (&t, &c) in GENERALIZED_PR_THRESHOLDS.iter().zip(&self.pr_count) {
            m.push(pr_name(t), ratio(c as f64 * 100.0, self.targeted as f64));
        }
        m
    }
}

/// LAVT's RefCOCO-family accumulator.
#[derive(Debug, Clone, Default)]
pub struct ClassicAccumulator {
    cum_i: u64,
    cum_u: u64,
    ious: Vec<f64>,
    correct: [usize; CLASSIC_PR_THRESHOLDS.len()],
}

impl ClassicAccumulator {
    /// Adds one sample (prediction, ground truth).
    pub fn add(&mut self, pred: &Mask, gt: &Mask) -> Result<()> {
        self.add_stats(SampleStats::new(pred, gt, false)?);
        Ok(())
    }

    /// Adds one sample's counts.
    pub fn add_stats(&mut self, s: SampleStats) {
        let iou = if s.union == 0 {
            0.0
        } else {
            s.intersection as f64 / s.union as f64
        };
        self.ious.push(iou);
        self.cum_i += s.intersection;
        self.cum_u += s.union;
        for (count, &t) in self.correct.iter_mut().zip(&CLASSIC_PR_THRESHOLDS) {
            if iou >= t {
                *count += 1;
            }
        }
    }

    /// Number of samples added.
    pub fn count(&self) -> usize {
        self.ious.len()
    }

    /// `oIoU`, `mIoU`, `Pr@0.5` … `Pr@0.9`.
    pub fn metrics(&self) -> Metrics {
        let n = self.ious.len() as f64;
        let mut m = Metrics::default();
        m.push("oIoU", ratio(self.cum_i as f64 * 100.0, self.cum_u as f64));
        m.push("mIoU", ratio(self.ious.iter().sum::<f64>(), n) * 100.0);
        for (&t, &c) in CLASSIC_PR_THRESHOLDS.iter().zip(&self.correct) {
            m.push(pr_name(t), ratio(c as f64 * 100.0, n));
        }
        m
    }
}

/// Either accumulator, chosen by the benchmark's [`MetricFamily`].
#[derive(Debug, Clone)]
pub enum Accumulator {
    Generalized(GeneralizedAccumulator),
    Classic(ClassicAccumulator),
}

impl Accumulator {
    pub fn new(family: MetricFamily) -> Self {
        match family {
            MetricFamily::Generalized => Accumulator::Generalized(Default::default()),
            MetricFamily::Classic => Accumulator::Classic(Default::default()),
        }
    }

    /// Adds one sample (the no-target flag only matters to the generalized metrics).
    pub fn add(&mut self, pred: &Mask, gt: &Mask, gt_no_target: bool) -> Result<()> {
        self.add_stats(SampleStats::new(pred, gt, gt_no_target)?);
        Ok(())
    }

    pub fn add_stats(&mut self, s: SampleStats) {
        match self {
            Accumulator::Generalized(a) => a.add_stats(s),
            Accumulator::Classic(a) => a.add_stats(s),
        }
    }

    pub fn count(&self) -> usize {
        match self {
            Accumulator::Generalized(a) => a.count(),
            Accumulator::Classic(a) => a.count(),
        }
    }

    pub fn metrics(&self) -> Metrics {
        match self {
            Accumulator::Generalized(a) => a.metrics(),
            Accumulator::Classic(a) => a.metrics(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(bits: &[u8]) -> Mask {
        Mask::from_vec(1, bits.len(), bits.to_vec()).unwrap()
    }

    #[test]
    fn generalized_hand_counted() {
        let mut acc = GeneralizedAccumulator::default();
        // Targeted, IoU 2/4; targeted predicted empty; no-target predicted empty;
        // no-target predicted with 3 pixels.
        acc.add(&mask(&[1, 1, 1, 0]), &mask(&[0, 1, 1, 1]), false)
            .unwrap();
        acc.add(&mask(&[0, 0, 0, 0]), &mask(&[0, 1, 1, 0]), false)
            .unwrap();
        acc.add(&mask(&[0, 0, 0, 0]), &mask(&[0, 0, 0, 0]), true)
            .unwrap();
        acc.add(&mask(&[1, 1, 1, 0]), &mask(&[0, 0, 0, 0]), true)
            .unwrap();
        let m = acc.metrics();
        assert!((m.get("gIoU").unwrap() - 100.0 * (0.5 + 0.0 + 1.0 + 0.0) / 4.0).abs() < 1e-12);
        assert!((m.get("cIoU").unwrap() - 100.0 * 2.0 / (4.0 + 2.0 + 3.0)).abs() < 1e-12);
        assert_eq!(m.get("N-acc"), Some(50.0));
        assert_eq!(m.get("T-acc"), Some(50.0));
        assert_eq!(m.get("Pr@0.7"), Some(0.0));
        let names: Vec<&str> = m.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["gIoU", "cIoU", "N-acc", "T-acc", "Pr@0.7", "Pr@0.8", "Pr@0.9"]
        );
    }

    #[test]
    fn classic_threshold_is_inclusive() {
        let mut acc = ClassicAccumulator::default();
        // IoU exactly 0.5 and exactly 0.7 (5/10, 7/10).
        let gt = mask(&[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
        acc.add(&mask(&[1, 1, 1, 1, 1, 0, 0, 0, 0, 0]), &gt)
            .unwrap();
        acc.add(&mask(&[1, 1, 1, 1, 1, 1, 1, 0, 0, 0]), &gt)
            .unwrap();
        let m = acc.metrics();
        assert_eq!(m.get("Pr@0.5"), Some(100.0));
        assert_eq!(m.get("Pr@0.7"), Some(50.0));
        assert_eq!(m.get("Pr@0.8"), Some(0.0));
        assert!((m.get("oIoU").unwrap() - 60.0).abs() < 1e-12);
        assert!((m.get("mIoU").unwrap() - 60.0).abs() < 1e-12);
        let js = serde_json::to_string(&m).unwrap();
        assert!(js.starts_with("{\"oIoU\":"), "{js}");
        let back: Metrics = serde_json::from_str(&js).unwrap();
        assert_eq!(back, m);
    }
}
