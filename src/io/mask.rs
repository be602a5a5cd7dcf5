//! Mask output: PNG (0/255) and overlay PNG (interim).

use std::path::Path;

use image::RgbImage;

use crate::error::{Error, Result};
use crate::types::Mask;

/// Writes a 0/255 grayscale PNG.
pub fn save_mask_png(mask: &Mask, path: &Path) -> Result<()> {
    mask.to_gray_image().save(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Writes the image with each mask tinted.
pub fn save_overlay(image: &RgbImage, masks: &[&Mask], path: &Path) -> Result<()> {
    let palette = [
        [230u8, 25, 75],
        [60, 180, 75],
        [0, 130, 200],
        [245, 130, 48],
    ];
    let mut out = image.clone();
    for (i, m) in masks.iter().enumerate() {
        let c = palette[i % palette.len()];
        for (x, y, p) in out.enumerate_pixels_mut() {
            if (y as usize) < m.height()
                && (x as usize) < m.width()
                && m.get(y as usize, x as usize)
            {
                for k in 0..3 {
                    p.0[k] = ((p.0[k] as u16 + c[k] as u16) / 2) as u8;
                }
            }
        }
    }
    out.save(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}
