//! Core value types of the public API: granularity, boxes, proposals, masks and results.

mod boxes;
mod mask;

pub use boxes::{
    BoxXyxy, ClipReport, DroppedBox, FixedProposals, ProposalSource, Proposals, RegionKind,
};
pub use mask::{connected_components, Mask};

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// What an expression refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// A part of one object ("the handle of the mug").
    Part,
    /// One whole object ("the mug on the left").
    Object,
    /// Several objects ("all the mugs").
    #[serde(rename = "multi")]
    MultiObject,
    /// Let the model decide (argmax over the granularity tokens).
    Auto,
}

impl Granularity {
    /// The three concrete granularities, in the order the model scores them.
    pub const CONCRETE: [Granularity; 3] = [
        Granularity::Part,
        Granularity::Object,
        Granularity::MultiObject,
    ];

    /// Index into [`Granularity::CONCRETE`]; `None` for `Auto`.
    pub fn index(self) -> Option<usize> {
        match self {
            Granularity::Part => Some(0),
            Granularity::Object => Some(1),
            Granularity::MultiObject => Some(2),
            Granularity::Auto => None,
        }
    }

    /// The concrete granularity at `i` of [`Granularity::CONCRETE`].
    pub fn from_index(i: usize) -> Option<Self> {
        Self::CONCRETE.get(i).copied()
    }

    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Part => "part",
            Granularity::Object => "object",
            Granularity::MultiObject => "multi",
            Granularity::Auto => "auto",
        }
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Granularity {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "part" => Ok(Granularity::Part),
            "object" | "obj" => Ok(Granularity::Object),
            "multi" | "multi-object" | "multi_object" | "multiobject" => {
                Ok(Granularity::MultiObject)
            }
            "auto" => Ok(Granularity::Auto),
            _ => Err(Error::UnknownGranularity { got: s.to_string() }),
        }
    }
}

/// Index of the largest value (ties → the first; 0 for an empty slice).
pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(
            (0usize, f32::MIN),
            |acc, (i, &p)| if p > acc.1 { (i, p) } else { acc },
        )
        .0
}

/// One object of a (multi-object) result.
#[derive(Debug, Clone)]
pub struct Instance {
    pub mask: Mask,
    pub bbox: BoxXyxy,
    pub score: f32,
}

/// The result of one referring-expression query.
#[derive(Debug, Clone)]
pub struct Segmentation {
    /// Full-resolution union mask (all zero when nothing matches).
    pub mask: Mask,
    /// Per-object masks (one for part/object queries, several for multi-object).
    pub instances: Vec<Instance>,
    /// The granularity used (the one asked for, or the one `Auto` predicted).
    pub granularity: Granularity,
    /// Probability that the expression refers to something in the image.
    pub score: f32,
    /// Softmax over the three granularity tokens (part, object, multi) at the answer position.
    pub granularity_probs: [f32; 3],
    /// The proposals the mask decoder was prompted with (objects first, then parts, after
    /// clipping and capping) and the weight the model gave each box prompt: a softmax over
    /// the proposals of the asked kind for part and object queries, independent sigmoids for
    /// multi-object ones. Empty for families without proposals (EVF-SAM).
    pub regions: Vec<RegionWeight>,
}

/// One proposal of a [`Segmentation`] and the weight its box prompt got.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionWeight {
    /// The box, original image coordinates.
    pub bbox: BoxXyxy,
    pub kind: RegionKind,
    /// Selection weight in [0, 1].
    pub weight: f32,
}

impl Segmentation {
    /// True when the model says nothing matches (empty mask).
    pub fn is_empty(&self) -> bool {
        self.mask.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granularity_round_trips() {
        for g in [
            Granularity::Part,
            Granularity::Object,
            Granularity::MultiObject,
            Granularity::Auto,
        ] {
            assert_eq!(g.to_string().parse::<Granularity>().unwrap(), g);
        }
        assert!(matches!(
            "parts".parse::<Granularity>(),
            Err(Error::UnknownGranularity { .. })
        ));
    }
}
