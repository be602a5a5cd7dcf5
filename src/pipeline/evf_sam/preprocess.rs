//! EVF-SAM's two input branches, as its reference `inference.py` computes them.
//!
//! * SAM: resize so the longest side is `S` (the other `int(side · S / long + 0.5)`) with
//!   Pillow's bilinear filter (antialiased when shrinking; segment-anything's
//!   `ResizeLongestSide.apply_image`), subtract SAM's mean and divide by its std on the 0–255
//!   scale, zero-pad bottom and right to `S × S`.
//! * BEiT-3: scale to [0, 1], PyTorch bicubic resize of the float image to `b × b` (no
//!   antialias, no clamping), then `(x − 0.5) / 0.5`.

use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::error::Result;
use crate::ops::upsample::MaskResize;
use crate::pipeline::preprocess::{resize_bicubic_torch, resize_pil, PilFilter};

/// SAM's pixel mean on the 0–255 scale (RGB).
pub const SAM_MEAN: [f32; 3] = [123.675, 116.28, 103.53];
/// SAM's pixel std on the 0–255 scale (RGB).
pub const SAM_STD: [f32; 3] = [58.395, 57.12, 57.375];

/// segment-anything's `ResizeLongestSide.get_preprocess_shape`: the `(h, w)` an `h × w`
/// image is resized to so that its longest side is `long`.
pub fn sam_resize_shape(h: usize, w: usize, long: usize) -> (usize, usize) {
    let scale = long as f64 / h.max(w).max(1) as f64;
    let side = |s: usize| ((s as f64 * scale + 0.5) as usize).max(1);
    (side(h), side(w))
}

/// The SAM branch's input and where the image sits in it.
#[derive(Debug, Clone)]
pub struct SamInput {
    /// `(1, 3, S, S)` f32, normalised and zero-padded.
    pub pixels: Tensor,
    /// The resized image's `(h, w)` (the rest of `S × S` is padding).
    pub resized: (usize, usize),
    /// The original `(h, w)`.
    pub orig: (usize, usize),
    /// `S`.
    pub size: usize,
}

impl SamInput {
    /// The mask post-processing chain from the decoder's output back to the original image.
    pub fn mask_resize(&self) -> MaskResize {
        MaskResize {
            padded: (self.size, self.size),
            valid: self.resized,
            orig: self.orig,
        }
    }
}

/// The resized 8-bit image of the SAM branch (before normalisation).
pub fn sam_resized_image(img: &RgbImage, size: usize) -> Result<RgbImage> {
    let (h, w) = sam_resize_shape(img.height() as usize, img.width() as usize, size);
    resize_pil(img, w as u32, h as u32, PilFilter::Bilinear)
}

/// The SAM branch: `(1, 3, S, S)` and its geometry.
pub fn preprocess_sam(img: &RgbImage, size: usize, device: &Device) -> Result<SamInput> {
    let resized = sam_resized_image(img, size)?;
    let (w, h) = (resized.width() as usize, resized.height() as usize);
    let mut out = vec![0f32; 3 * size * size];
    for (i, p) in resized.pixels().enumerate() {
        let (y, x) = (i / w, i % w);
        for c in 0..3 {
            out[c * size * size + y * size + x] = (p.0[c] as f32 - SAM_MEAN[c]) / SAM_STD[c];
        }
    }
    Ok(SamInput {
        pixels: Tensor::from_vec(out, (1, 3, size, size), device)?,
        resized: (h, w),
        orig: (img.height() as usize, img.width() as usize),
        size,
    })
}

/// The BEiT-3 branch, `(3, b, b)` values in `(x − 0.5) / 0.5` scale.
pub fn beit3_pixels(img: &RgbImage, size: usize) -> Result<Vec<f32>> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let n = w * h;
    let mut chw = vec![0f32; 3 * n];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            chw[c * n + i] = p.0[c] as f32 / 255.0;
        }
    }
    let mut out = resize_bicubic_torch(&chw, (3, h, w), (size, size))?;
    for v in &mut out {
        *v = (*v - 0.5) / 0.5;
    }
    Ok(out)
}

/// The BEiT-3 branch as a `(1, 3, b, b)` tensor.
pub fn preprocess_beit3(img: &RgbImage, size: usize, device: &Device) -> Result<Tensor> {
    let data = beit3_pixels(img, size)?;
    Ok(Tensor::from_vec(data, (1, 3, size, size), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_shape_rounds_half_up_like_segment_anything() {
        // 1024 / 640 · 427 = 683.2 → 683; 1024 / 3 · 1 = 341.33 → 341.
        assert_eq!(sam_resize_shape(427, 640, 1024), (683, 1024));
        assert_eq!(sam_resize_shape(3, 1, 1024), (1024, 341));
        assert_eq!(sam_resize_shape(50, 50, 1024), (1024, 1024));
    }

    #[test]
    fn a_constant_image_stays_constant_in_both_branches() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([200, 100, 50]));
        let sam = preprocess_sam(&img, 64, &Device::Cpu).unwrap();
        assert_eq!(sam.resized, (40, 64));
        let v = sam.pixels.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = (200.0 - SAM_MEAN[0]) / SAM_STD[0];
        assert!((v[0] - want).abs() < 1e-6);
        // Padding rows are zero.
        assert_eq!(v[63 * 64], 0.0);
        let b = beit3_pixels(&img, 16).unwrap();
        let want = (50.0f32 / 255.0 - 0.5) / 0.5;
        assert!(b[2 * 256..].iter().all(|x| (x - want).abs() < 1e-6));
    }
}
