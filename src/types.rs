//! Core value types of the public API: granularity, boxes, proposals, masks and results.

use std::fmt;
use std::str::FromStr;

use crate::error::{BoxProblem, Error, Result};

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

    /// Checks that the box is finite, not inverted, not empty and inside a
    /// `width × height` image (a tolerance of one pixel is allowed at the far edges).
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
        if self.x2 == self.x1 || self.y2 == self.y1 {
            return Err(err(BoxProblem::Empty));
        }
        let (w, h) = (width as f32, height as f32);
        if self.x1 < -1.0 || self.y1 < -1.0 || self.x2 > w + 1.0 || self.y2 > h + 1.0 {
            return Err(err(BoxProblem::OutsideImage));
        }
        Ok(())
    }
}

/// Whether a region is a whole object or a part; its index is the row of the region
/// encoder's `kind_embed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegionKind {
    Object = 0,
    Part = 1,
}

impl RegionKind {
    /// `kind_embed` row: 0 for objects, 1 for parts.
    pub fn index(self) -> u32 {
        self as u32
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

    /// Every box with its kind, objects first then parts: the order of the region tokens.
    pub fn iter_with_kind(&self) -> impl Iterator<Item = (RegionKind, &BoxXyxy)> {
        let objects = self.objects.iter().map(|b| (RegionKind::Object, b));
        objects.chain(self.parts.iter().map(|b| (RegionKind::Part, b)))
    }

    /// Validates every box against a `width × height` image.
    pub fn validate(&self, width: u32, height: u32) -> Result<()> {
        for (i, b) in self.objects.iter().chain(self.parts.iter()).enumerate() {
            b.validate(i, width, height)?;
        }
        Ok(())
    }
}

/// Where object/part proposals come from: the built-in generator, or a caller's detector.
pub trait ProposalSource {
    /// Proposals for `image`, in its pixel coordinates.
    fn propose(&self, image: &image::RgbImage) -> Result<Proposals>;
}

/// Fixed proposals given by the caller (e.g. a robotics stack's own detector boxes).
#[derive(Debug, Clone, Default)]
pub struct FixedProposals(pub Proposals);

impl ProposalSource for FixedProposals {
    fn propose(&self, image: &image::RgbImage) -> Result<Proposals> {
        self.0.validate(image.width(), image.height())?;
        Ok(self.0.clone())
    }
}

/// A binary mask, row-major, one byte per pixel holding 0 or 1.
#[derive(Clone, PartialEq, Eq)]
pub struct Mask {
    width: usize,
    height: usize,
    data: Vec<u8>,
}

impl fmt::Debug for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Mask({}x{}, area {})",
            self.width,
            self.height,
            self.area()
        )
    }
}

impl Mask {
    /// An all-zero mask.
    pub fn zeros(height: usize, width: usize) -> Self {
        Self {
            width,
            height,
            data: vec![0; width * height],
        }
    }

    /// From row-major bytes; any non-zero byte counts as foreground.
    pub fn from_vec(height: usize, width: usize, data: Vec<u8>) -> Result<Self> {
        if data.len() != width * height {
            return Err(Error::shape(
                "Mask::from_vec",
                format!(
                    "{} bytes for a {height}x{width} mask (expected {})",
                    data.len(),
                    width * height
                ),
            ));
        }
        let data = data.into_iter().map(|v| u8::from(v != 0)).collect();
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// From a grayscale image; pixels ≥ 128 are foreground.
    pub fn from_gray_image(img: &image::GrayImage) -> Self {
        let data = img.as_raw().iter().map(|&v| u8::from(v >= 128)).collect();
        Self {
            width: img.width() as usize,
            height: img.height() as usize,
            data,
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// Row-major 0/1 bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// The pixel at row `y`, column `x`; `None` outside the mask.
    pub fn get(&self, y: usize, x: usize) -> Option<bool> {
        if x >= self.width {
            return None;
        }
        self.data.get(y * self.width + x).map(|&v| v != 0)
    }

    /// Sets the pixel at row `y`, column `x`; an error outside the mask.
    pub fn set(&mut self, y: usize, x: usize, v: bool) -> Result<()> {
        let (h, w) = (self.height, self.width);
        match self.data.get_mut(y * w + x) {
            Some(p) if x < w => {
                *p = u8::from(v);
                Ok(())
            }
            _ => Err(Error::shape(
                "Mask::set",
                format!("pixel ({y}, {x}) is outside a {h}x{w} mask"),
            )),
        }
    }

    /// The pixels of this mask that lie in the box `b` (pixel `(y, x)` with
    /// `⌊y1⌋ ≤ y < ⌈y2⌉` and `⌊x1⌋ ≤ x < ⌈x2⌉`, clipped to the mask); all others cleared.
    pub fn within_box(&self, b: &BoxXyxy) -> Mask {
        let mut m = Mask::zeros(self.height, self.width);
        let x1 = (b.x1.floor().max(0.0) as usize).min(self.width);
        let y1 = (b.y1.floor().max(0.0) as usize).min(self.height);
        let x2 = (b.x2.ceil().max(0.0) as usize).min(self.width);
        let y2 = (b.y2.ceil().max(0.0) as usize).min(self.height);
        if x2 > x1 {
            for y in y1..y2 {
                let r = y * self.width;
                m.data[r + x1..r + x2].copy_from_slice(&self.data[r + x1..r + x2]);
            }
        }
        m
    }

    /// Number of foreground pixels.
    pub fn area(&self) -> u64 {
        self.data.iter().map(|&v| v as u64).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.data.iter().all(|&v| v == 0)
    }

    fn check_same_size(&self, other: &Mask) -> Result<()> {
        if self.width != other.width || self.height != other.height {
            return Err(Error::SizeMismatch {
                what: "mask".into(),
                expected_h: self.height,
                expected_w: self.width,
                got_h: other.height,
                got_w: other.width,
            });
        }
        Ok(())
    }

    /// Pixels set in both masks.
    pub fn intersection_area(&self, other: &Mask) -> Result<u64> {
        self.check_same_size(other)?;
        Ok(self
            .data
            .iter()
            .zip(&other.data)
            .map(|(&a, &b)| (a & b) as u64)
            .sum())
    }

    /// Pixels set in either mask.
    pub fn union_area(&self, other: &Mask) -> Result<u64> {
        self.check_same_size(other)?;
        Ok(self
            .data
            .iter()
            .zip(&other.data)
            .map(|(&a, &b)| (a | b) as u64)
            .sum())
    }

    /// Intersection over union; two empty masks give 1.
    pub fn iou(&self, other: &Mask) -> Result<f64> {
        let i = self.intersection_area(other)?;
        let u = self.union_area(other)?;
        Ok(if u == 0 { 1.0 } else { i as f64 / u as f64 })
    }

    /// Pixel-wise OR in place.
    pub fn union_with(&mut self, other: &Mask) -> Result<()> {
        self.check_same_size(other)?;
        for (a, &b) in self.data.iter_mut().zip(&other.data) {
            *a |= b;
        }
        Ok(())
    }

    /// Tight bounding box of the foreground, `None` when empty.
    pub fn bbox(&self) -> Option<BoxXyxy> {
        let (mut x1, mut y1, mut x2, mut y2) = (usize::MAX, usize::MAX, 0usize, 0usize);
        for y in 0..self.height {
            let row = &self.data[y * self.width..(y + 1) * self.width];
            for (x, &v) in row.iter().enumerate() {
                if v != 0 {
                    x1 = x1.min(x);
                    x2 = x2.max(x + 1);
                    y1 = y1.min(y);
                    y2 = y2.max(y + 1);
                }
            }
        }
        (x1 != usize::MAX).then(|| BoxXyxy::new(x1 as f32, y1 as f32, x2 as f32, y2 as f32))
    }

    /// A 0/255 grayscale image.
    pub fn to_gray_image(&self) -> image::GrayImage {
        let buf = self.data.iter().map(|&v| v * 255).collect();
        // The buffer has exactly width*height bytes, so this cannot fail.
        image::GrayImage::from_raw(self.width as u32, self.height as u32, buf)
            .unwrap_or_else(|| image::GrayImage::new(self.width as u32, self.height as u32))
    }

    /// A `height × width` array of 0/1.
    pub fn to_array(&self) -> ndarray::Array2<u8> {
        ndarray::Array2::from_shape_vec((self.height, self.width), self.data.clone())
            .unwrap_or_else(|_| ndarray::Array2::zeros((self.height, self.width)))
    }

    /// From a `height × width` array; non-zero is foreground.
    pub fn from_array(a: &ndarray::Array2<u8>) -> Self {
        let (h, w) = a.dim();
        let data = a.iter().map(|&v| u8::from(v != 0)).collect();
        Self {
            width: w,
            height: h,
            data,
        }
    }
}

impl From<&Mask> for image::GrayImage {
    fn from(m: &Mask) -> Self {
        m.to_gray_image()
    }
}

impl From<&Mask> for ndarray::Array2<u8> {
    fn from(m: &Mask) -> Self {
        m.to_array()
    }
}

/// 8-connected components of a mask, largest first.
pub fn connected_components(mask: &Mask) -> Vec<Mask> {
    let (h, w) = (mask.height(), mask.width());
    let mut label = vec![0u32; h * w];
    let mut comps: Vec<Vec<usize>> = Vec::new();
    let mut stack = Vec::new();
    for start in 0..h * w {
        if mask.as_slice()[start] == 0 || label[start] != 0 {
            continue;
        }
        let id = comps.len() as u32 + 1;
        let mut pixels = Vec::new();
        label[start] = id;
        stack.push(start);
        while let Some(p) = stack.pop() {
            pixels.push(p);
            let (y, x) = ((p / w) as i64, (p % w) as i64);
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (ny, nx) = (y + dy, x + dx);
                    if ny < 0 || nx < 0 || ny >= h as i64 || nx >= w as i64 {
                        continue;
                    }
                    let q = ny as usize * w + nx as usize;
                    if mask.as_slice()[q] != 0 && label[q] == 0 {
                        label[q] = id;
                        stack.push(q);
                    }
                }
            }
        }
        comps.push(pixels);
    }
    comps.sort_by_key(|c| std::cmp::Reverse(c.len()));
    comps
        .into_iter()
        .map(|px| {
            let mut m = Mask::zeros(h, w);
            for p in px {
                m.data[p] = 1;
            }
            m
        })
        .collect()
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
    fn mask_access_is_bounds_checked() {
        let mut m = Mask::zeros(3, 4);
        assert!(m.set(2, 3, true).is_ok());
        assert_eq!(m.get(2, 3), Some(true));
        assert_eq!(m.get(0, 0), Some(false));
        // Column 4 of row 1 would be pixel (2, 0) in the flat buffer: still outside.
        assert_eq!(m.get(1, 4), None);
        assert_eq!(m.get(3, 0), None);
        assert!(matches!(m.set(1, 4, true), Err(Error::BadShape { .. })));
        assert!(m.set(3, 0, true).is_err());
        assert_eq!(m.area(), 1, "a refused set changes nothing");
    }

    #[test]
    fn within_box_keeps_the_covered_pixels() {
        let mut m = Mask::zeros(4, 5);
        for (y, x) in [(0, 0), (1, 1), (1, 2), (2, 2), (3, 4)] {
            m.set(y, x, true).unwrap();
        }
        // Box [0.5, 0.9, 2.2, 2.0): columns 0..3, rows 0..2 (floor / ceil).
        let inside = m.within_box(&BoxXyxy::new(0.5, 0.9, 2.2, 2.0));
        let on: Vec<(usize, usize)> = (0..4)
            .flat_map(|y| (0..5).map(move |x| (y, x)))
            .filter(|&(y, x)| inside.get(y, x) == Some(true))
            .collect();
        assert_eq!(on, [(0, 0), (1, 1), (1, 2)]);
        // Boxes past the border are clipped; empty and inverted boxes keep nothing.
        assert_eq!(m.within_box(&BoxXyxy::new(-9.0, -9.0, 99.0, 99.0)), m);
        assert!(m.within_box(&BoxXyxy::new(3.0, 1.0, 3.0, 3.0)).is_empty());
        assert!(m.within_box(&BoxXyxy::new(4.0, 3.0, 1.0, 0.0)).is_empty());
    }

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
            BoxXyxy::new(0.0, 0.0, 30.0, 3.0).validate(0, 10, 10),
            Err(Error::BadBox {
                reason: BoxProblem::OutsideImage,
                ..
            })
        ));
    }

    #[test]
    fn components_are_split_and_ordered() {
        let m = Mask::from_vec(3, 5, vec![1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1]).unwrap();
        let c = connected_components(&m);
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].area(), c[1].area()), (3, 3));
        let mut u = Mask::zeros(3, 5);
        for x in &c {
            u.union_with(x).unwrap();
        }
        assert_eq!(u, m);
    }

    #[test]
    fn mask_conversions() {
        let m = Mask::from_vec(2, 3, vec![0, 1, 0, 1, 1, 0]).unwrap();
        assert_eq!(m.area(), 3);
        assert_eq!(m.to_gray_image().as_raw(), &vec![0, 255, 0, 255, 255, 0]);
        assert_eq!(Mask::from_array(&m.to_array()), m);
        assert_eq!(m.bbox(), Some(BoxXyxy::new(0.0, 0.0, 2.0, 2.0)));
        assert!(Mask::from_vec(2, 2, vec![0; 3]).is_err());
    }
}
