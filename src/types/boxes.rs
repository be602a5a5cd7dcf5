//! Boxes and proposals: validation, clipping to the image with a report of what changed,
//! and where proposals come from.

use crate::error::{BoxProblem, Error, Result};

/// An axis-aligned box in pixel coordinates of the original image, corners `(x1, y1)`
/// (inclusive) and `(x2, y2)` (exclusive), as torchvision and COCO (after `xywh → xyxy`) use.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BoxXyxy {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BoxXyxy {
    pub fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        Self { x1, y1, x2, y2 }
    }

    /// From COCO's `[x, y, w, h]`.
    pub fn from_xywh(x: f32, y: f32, w: f32, h: f32) -> Self {
        Self::new(x, y, x + w, y + h)
    }

    /// COCO's `[x, y, w, h]`.
    pub fn to_xywh(&self) -> [f32; 4] {
        [self.x1, self.y1, self.x2 - self.x1, self.y2 - self.y1]
    }

    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }

    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }

    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    /// Intersection over union with another box (0 when both are empty).
    pub fn iou(&self, other: &BoxXyxy) -> f32 {
        let ix = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let iy = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = ix * iy;
        let union = self.area() + other.area() - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }

    /// Scales every coordinate by `s`.
    pub fn scale(&self, s: f32) -> Self {
        Self::new(self.x1 * s, self.y1 * s, self.x2 * s, self.y2 * s)
    }
    /// Checks that the box can be used: every coordinate finite, and not inverted
    /// (`x2 ≥ x1`, `y2 ≥ y1`). `index` and the `width × height` image only name the box in
    /// the error. Boxes that reach outside the image, or have zero width or height, pass:
    /// [`BoxXyxy::clip_to`] cuts them to the image, and [`Proposals::clip_to`] drops and
    /// reports those that are empty after that.
    pub fn validate(&self, index: usize, width: u32, height: u32) -> Result<()> {
        let err = |reason| Error::BadBox {
            index,
            x1: self.x1,
            y1: self.y1,
            x2: self.x2,
            y2: self.y2,
            width,
            height,
            reason,
        };
        if ![self.x1, self.y1, self.x2, self.y2]
            .iter()
            .all(|v| v.is_finite())
        {
            return Err(err(BoxProblem::NotFinite));
        }
        if self.x2 < self.x1 || self.y2 < self.y1 {
            return Err(err(BoxProblem::Inverted));
        }
        Ok(())
    }

    /// The part of the box inside a `width × height` image (every coordinate clamped to
    /// `[0, width]` or `[0, height]`); `None` when nothing is left (the box lies outside the
    /// image, has zero width or height, or is not a valid box at all).
    pub fn clip_to(&self, width: u32, height: u32) -> Option<BoxXyxy> {
        let (w, h) = (width as f32, height as f32);
        // `max`/`min` rather than `clamp`: they never panic and map NaN to a bound, and the
        // comparison below then drops the box.
        let c = BoxXyxy::new(
            self.x1.max(0.0).min(w),
            self.y1.max(0.0).min(h),
            self.x2.max(0.0).min(w),
            self.y2.max(0.0).min(h),
        );
        (c.x2 > c.x1 && c.y2 > c.y1).then_some(c)
    }
}

/// Whether a region is a whole object or a part; its index is the row of the region
/// encoder's `kind_embed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegionKind {
    Object = 0,
    Part = 1,
}

impl RegionKind {
    /// `kind_embed` row: 0 for objects, 1 for parts.
    pub fn index(self) -> u32 {
        self as u32
    }

    /// `"object"` or `"part"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RegionKind::Object => "object",
            RegionKind::Part => "part",
        }
    }
}

/// Object and part proposals for one image, in original-image pixel coordinates.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Proposals {
    /// Whole-object boxes (at most `region.max_objects` are used).
    #[serde(default)]
    pub objects: Vec<BoxXyxy>,
    /// Part boxes (at most `region.max_parts` are used).
    #[serde(default)]
    pub parts: Vec<BoxXyxy>,
}

impl Proposals {
    pub fn new(objects: Vec<BoxXyxy>, parts: Vec<BoxXyxy>) -> Self {
        Self { objects, parts }
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.parts.is_empty()
    }

    /// Number of boxes, objects and parts together.
    pub fn len(&self) -> usize {
        self.objects.len() + self.parts.len()
    }

    /// Every box with its kind, objects first then parts: the order of the region tokens.
    pub fn iter_with_kind(&self) -> impl Iterator<Item = (RegionKind, &BoxXyxy)> {
        let objects = self.objects.iter().map(|b| (RegionKind::Object, b));
        objects.chain(self.parts.iter().map(|b| (RegionKind::Part, b)))
    }

    /// Checks every box with [`BoxXyxy::validate`] (finite, not inverted); the index in an
    /// error counts objects first, then parts.
    pub fn validate(&self, width: u32, height: u32) -> Result<()> {
        for (i, b) in self.objects.iter().chain(self.parts.iter()).enumerate() {
            b.validate(i, width, height)?;
        }
        Ok(())
    }

    /// The proposals cut to a `width × height` image, and what that changed.
    ///
    /// A box that is not finite or is inverted is an error ([`Error::BadBox`]), as in
    /// [`Proposals::validate`]. Every other box is clipped to the image
    /// ([`BoxXyxy::clip_to`]); one with nothing left (entirely outside the image, or of zero
    /// width or height) is dropped and listed in the report, which is not an error: a
    /// detector's boxes often poke past the border of the frame.
    pub fn clip_to(&self, width: u32, height: u32) -> Result<(Proposals, ClipReport)> {
        self.validate(width, height)?;
        let mut report = ClipReport::default();
        let mut clip = |kind: RegionKind, boxes: &[BoxXyxy]| -> Vec<BoxXyxy> {
            let mut kept = Vec::with_capacity(boxes.len());
            for (index, b) in boxes.iter().enumerate() {
                match b.clip_to(width, height) {
                    Some(c) => {
                        if c != *b {
                            report.clipped += 1;
                        }
                        kept.push(c);
                    }
                    None => report.dropped.push(DroppedBox {
                        kind,
                        index,
                        bbox: *b,
                        reason: if b.x2 == b.x1 || b.y2 == b.y1 {
                            BoxProblem::Empty
                        } else {
                            BoxProblem::OutsideImage
                        },
                    }),
                }
            }
            kept
        };
        let objects = clip(RegionKind::Object, &self.objects);
        let parts = clip(RegionKind::Part, &self.parts);
        Ok((Proposals::new(objects, parts), report))
    }
}

/// A box that [`Proposals::clip_to`] dropped.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct DroppedBox {
    /// Which list it was in.
    pub kind: RegionKind,
    /// Its index in that list (`objects` or `parts`) of the input.
    pub index: usize,
    /// The box as given.
    pub bbox: BoxXyxy,
    /// [`BoxProblem::OutsideImage`] or [`BoxProblem::Empty`].
    pub reason: BoxProblem,
}

/// What [`Proposals::clip_to`] changed: boxes cut to the image and boxes dropped. A caller
/// shows it as a warning (the CLI prints [`ClipReport::warning`] on stderr; a server can put
/// the serialised report in its response).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ClipReport {
    /// Boxes kept but cut to the image.
    pub clipped: usize,
    /// Boxes dropped, objects first then parts, each in input order.
    pub dropped: Vec<DroppedBox>,
}

impl ClipReport {
    /// True when every box was inside the image already.
    pub fn is_clean(&self) -> bool {
        self.clipped == 0 && self.dropped.is_empty()
    }

    /// A one-line summary, `None` when nothing was dropped or clipped.
    pub fn warning(&self) -> Option<String> {
        if self.is_clean() {
            return None;
        }
        let mut parts = Vec::new();
        if !self.dropped.is_empty() {
            const SHOWN: usize = 3;
            let mut list: Vec<String> = self
                .dropped
                .iter()
                .take(SHOWN)
                .map(|d| {
                    let b = &d.bbox;
                    let list = match d.kind {
                        RegionKind::Object => "objects",
                        RegionKind::Part => "parts",
                    };
                    format!(
                        "{list}[{}] [{}, {}, {}, {}] ({})",
                        d.index, b.x1, b.y1, b.x2, b.y2, d.reason
                    )
                })
                .collect();
            if self.dropped.len() > SHOWN {
                list.push(format!("… {} more", self.dropped.len() - SHOWN));
            }
            parts.push(format!(
                "{} box(es) dropped: {}",
                self.dropped.len(),
                list.join(", ")
            ));
        }
        if self.clipped > 0 {
            parts.push(format!("{} box(es) clipped to the image", self.clipped));
        }
        Some(parts.join("; "))
    }
}

/// Where object/part proposals come from: the built-in generator, or a caller's detector.
pub trait ProposalSource {
    /// Proposals for `image`, in its pixel coordinates.
    fn propose(&self, image: &image::RgbImage) -> Result<Proposals>;
}

/// Fixed proposals given by the caller (e.g. a robotics stack's own detector boxes); they
/// are clipped to the image, and the boxes left empty are dropped (use
/// [`Proposals::clip_to`] directly to see which).
#[derive(Debug, Clone, Default)]
pub struct FixedProposals(pub Proposals);

impl ProposalSource for FixedProposals {
    fn propose(&self, image: &image::RgbImage) -> Result<Proposals> {
        Ok(self.0.clip_to(image.width(), image.height())?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_iou_and_validation() {
        let a = BoxXyxy::new(0.0, 0.0, 10.0, 10.0);
        let b = BoxXyxy::new(5.0, 0.0, 15.0, 10.0);
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
        assert!(a.validate(0, 10, 10).is_ok());
        assert!(matches!(
            BoxXyxy::new(5.0, 0.0, 1.0, 3.0).validate(0, 10, 10),
            Err(Error::BadBox {
                reason: BoxProblem::Inverted,
                ..
            })
        ));
        assert!(matches!(
            BoxXyxy::new(0.0, f32::NAN, 1.0, 3.0).validate(0, 10, 10),
            Err(Error::BadBox {
                reason: BoxProblem::NotFinite,
                ..
            })
        ));
        // Outside the image is no longer an error: the box is clipped instead.
        let wide = BoxXyxy::new(0.0, 0.0, 30.0, 3.0);
        assert!(wide.validate(0, 10, 10).is_ok());
        assert_eq!(
            wide.clip_to(10, 10),
            Some(BoxXyxy::new(0.0, 0.0, 10.0, 3.0))
        );
    }

    #[test]
    fn clipping_cuts_drops_and_reports() {
        let p = Proposals::new(
            vec![
                BoxXyxy::new(2.0, 3.0, 8.0, 9.0),    // inside: unchanged
                BoxXyxy::new(-4.0, 5.0, 12.0, 40.0), // partly outside: clipped
                BoxXyxy::new(25.0, 0.0, 30.0, 5.0),  // outside: dropped
                BoxXyxy::new(20.0, 0.0, 25.0, 5.0),  // touches the right edge only: dropped
            ],
            vec![
                BoxXyxy::new(4.0, 4.0, 4.0, 9.0), // zero width: dropped
                BoxXyxy::new(1.0, 1.0, 2.0, 2.0), // inside
            ],
        );
        let (c, r) = p.clip_to(20, 30).unwrap();
        assert_eq!(
            c.objects,
            [
                BoxXyxy::new(2.0, 3.0, 8.0, 9.0),
                BoxXyxy::new(0.0, 5.0, 12.0, 30.0)
            ]
        );
        assert_eq!(c.parts, [BoxXyxy::new(1.0, 1.0, 2.0, 2.0)]);
        assert_eq!(r.clipped, 1);
        let dropped: Vec<(RegionKind, usize, BoxProblem)> = r
            .dropped
            .iter()
            .map(|d| (d.kind, d.index, d.reason))
            .collect();
        assert_eq!(
            dropped,
            [
                (RegionKind::Object, 2, BoxProblem::OutsideImage),
                (RegionKind::Object, 3, BoxProblem::OutsideImage),
                (RegionKind::Part, 0, BoxProblem::Empty),
            ]
        );
        assert_eq!(
            r.dropped[0].bbox, p.objects[2],
            "the report keeps the box as given"
        );
        let w = r.warning().unwrap();
        assert!(
            w.starts_with("3 box(es) dropped: objects[2] [25, 0, 30, 5]"),
            "{w}"
        );
        assert!(w.ends_with("1 box(es) clipped to the image"), "{w}");
        // Serialised for a response: kinds and reasons by name.
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["dropped"][2]["kind"], "part");
        assert_eq!(v["dropped"][2]["reason"], "empty");
        assert_eq!(v["dropped"][0]["reason"], "outside_image");
    }

    #[test]
    fn clipping_a_clean_set_changes_nothing_and_bad_boxes_are_errors() {
        let p = Proposals::new(
            vec![BoxXyxy::new(0.0, 0.0, 20.0, 30.0)],
            vec![BoxXyxy::new(1.5, 2.5, 3.5, 4.5)],
        );
        let (c, r) = p.clip_to(20, 30).unwrap();
        assert_eq!(c, p);
        assert!(r.is_clean());
        assert_eq!(r.warning(), None);
        // An inverted part: index 1 counts the object first.
        let bad = Proposals::new(p.objects.clone(), vec![BoxXyxy::new(5.0, 0.0, 1.0, 3.0)]);
        assert!(matches!(
            bad.clip_to(20, 30),
            Err(Error::BadBox {
                index: 1,
                reason: BoxProblem::Inverted,
                ..
            })
        ));
        let inf = Proposals::new(vec![BoxXyxy::new(0.0, 0.0, f32::INFINITY, 3.0)], vec![]);
        assert!(matches!(
            inf.clip_to(20, 30),
            Err(Error::BadBox {
                reason: BoxProblem::NotFinite,
                ..
            })
        ));
    }

    #[test]
    fn many_dropped_boxes_are_summarised() {
        let outside = BoxXyxy::new(50.0, 50.0, 60.0, 60.0);
        let p = Proposals::new(vec![outside; 7], vec![]);
        let (c, r) = p.clip_to(10, 10).unwrap();
        assert!(c.is_empty());
        let w = r.warning().unwrap();
        assert!(w.starts_with("7 box(es) dropped"), "{w}");
        assert!(w.contains("… 4 more"), "{w}");
    }
}
