//! Binary masks and their connected components.

use std::fmt;

use super::BoxXyxy;
use crate::error::{Error, Result};

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
