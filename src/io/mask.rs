//! Mask output: 0/255 grayscale PNGs and overlays (each instance tinted in its own colour and
//! outlined), the usual way segmentation results are inspected.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use image::{ImageEncoder, Rgb, RgbImage};

use crate::error::{Error, Result};
use crate::types::Mask;

/// Tint strength used by [`save_overlay`].
pub const DEFAULT_ALPHA: f32 = 0.5;

/// Instance colours, in order; the `i`-th mask gets `PALETTE[i % PALETTE.len()]`.
/// Ten well-separated hues (the "tab10" qualitative palette).
pub const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// Writes `mask` as an 8-bit grayscale PNG, 255 for foreground and 0 for background.
pub fn save_mask_png(mask: &Mask, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let gray = mask.to_gray_image();
    write_png(
        path,
        gray.as_raw(),
        gray.width(),
        gray.height(),
        image::ExtendedColorType::L8,
    )
}

/// The image with every mask tinted in its palette colour (`alpha` = tint strength, clamped
/// to `[0, 1]`; NaN counts as 0) and its boundary drawn in the full colour.
///
/// A boundary pixel is a foreground pixel with a 4-neighbour outside the mask or outside the
/// image. Later masks are drawn over earlier ones.
pub fn overlay(image: &RgbImage, masks: &[&Mask], alpha: f32) -> Result<RgbImage> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    for m in masks {
        if m.width() != w || m.height() != h {
            return Err(Error::SizeMismatch {
                what: "overlay mask".into(),
                expected_h: h,
                expected_w: w,
                got_h: m.height(),
                got_w: m.width(),
            });
        }
    }
    let alpha = if alpha.is_nan() {
        0.0
    } else {
        alpha.clamp(0.0, 1.0)
    };
    let mut out = image.clone();
    for (i, m) in masks.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let fg = m.as_slice();
        for y in 0..h {
            for x in 0..w {
                if fg[y * w + x] == 0 {
                    continue;
                }
                let edge = x == 0
                    || y == 0
                    || x + 1 == w
                    || y + 1 == h
                    || fg[y * w + x - 1] == 0
                    || fg[y * w + x + 1] == 0
                    || fg[(y - 1) * w + x] == 0
                    || fg[(y + 1) * w + x] == 0;
                let p = out.get_pixel_mut(x as u32, y as u32);
                *p = if edge {
                    Rgb(colour)
                } else {
                    blend(*p, colour, alpha)
                };
            }
        }
    }
    Ok(out)
}

/// Writes [`overlay`] of `image` and `masks` (with [`DEFAULT_ALPHA`]) as a PNG.
pub fn save_overlay(image: &RgbImage, masks: &[&Mask], path: impl AsRef<Path>) -> Result<()> {
    save_overlay_with_alpha(image, masks, DEFAULT_ALPHA, path)
}

/// Writes [`overlay`] of `image` and `masks` as a PNG.
pub fn save_overlay_with_alpha(
    image: &RgbImage,
    masks: &[&Mask],
    alpha: f32,
    path: impl AsRef<Path>,
) -> Result<()> {
    let out = overlay(image, masks, alpha)?;
    write_png(
        path.as_ref(),
        out.as_raw(),
        out.width(),
        out.height(),
        image::ExtendedColorType::Rgb8,
    )
}

fn blend(p: Rgb<u8>, colour: [u8; 3], alpha: f32) -> Rgb<u8> {
    let mix = |a: u8, b: u8| ((1.0 - alpha) * a as f32 + alpha * b as f32).round() as u8;
    Rgb([
        mix(p.0[0], colour[0]),
        mix(p.0[1], colour[1]),
        mix(p.0[2], colour[2]),
    ])
}

fn write_png(
    path: &Path,
    raw: &[u8],
    width: u32,
    height: u32,
    colour: image::ExtendedColorType,
) -> Result<()> {
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let encoder = image::codecs::png::PngEncoder::new(BufWriter::new(file));
    encoder
        .write_image(raw, width, height, colour)
        .map_err(|e| match e {
            image::ImageError::IoError(source) => Error::io(path, source),
            other => Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(other.to_string()),
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square_mask(h: usize, w: usize, y0: usize, y1: usize, x0: usize, x1: usize) -> Mask {
        let mut m = Mask::zeros(h, w);
        for y in y0..y1 {
            for x in x0..x1 {
                m.set(y, x, true).unwrap();
            }
        }
        m
    }

    #[test]
    fn mask_png_round_trips_as_0_255() {
        let dir = std::env::temp_dir().join(format!("unires-mask-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.png");
        let m = square_mask(7, 9, 1, 5, 2, 8);
        save_mask_png(&m, &path).unwrap();
        let back = image::open(&path).unwrap();
        let gray = back.as_luma8().unwrap();
        assert!(gray.as_raw().iter().all(|&v| v == 0 || v == 255));
        assert_eq!(Mask::from_gray_image(gray), m);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn save_reports_the_path_on_failure() {
        let path = Path::new("/nonexistent-dir-for-unires/m.png");
        match save_mask_png(&Mask::zeros(2, 2), path) {
            Err(Error::FileNotFound { path: p }) => assert_eq!(p, path),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn overlay_tints_inside_outlines_edges_keeps_background() {
        let img = RgbImage::from_pixel(10, 8, Rgb([100, 100, 100]));
        let a = square_mask(8, 10, 1, 6, 1, 6);
        let b = square_mask(8, 10, 2, 5, 6, 10);
        let out = overlay(&img, &[&a, &b], 0.5).unwrap();
        // Background untouched.
        assert_eq!(*out.get_pixel(0, 0), Rgb([100, 100, 100]));
        assert_eq!(*out.get_pixel(9, 7), Rgb([100, 100, 100]));
        // Boundary of `a` in full colour, interior blended halfway.
        assert_eq!(*out.get_pixel(1, 1), Rgb(PALETTE[0]));
        let c = PALETTE[0];
        let half = |v: u8| ((100.0 + v as f32) / 2.0).round() as u8;
        assert_eq!(
            *out.get_pixel(3, 3),
            Rgb([half(c[0]), half(c[1]), half(c[2])])
        );
        // `b` touches the right image border: that column is boundary; its colour differs.
        assert_eq!(*out.get_pixel(9, 3), Rgb(PALETTE[1]));
        assert_ne!(PALETTE[0], PALETTE[1]);
    }

    #[test]
    fn overlay_rejects_a_mask_of_another_size() {
        let img = RgbImage::new(10, 8);
        let m = Mask::zeros(10, 8);
        assert!(matches!(
            overlay(&img, &[&m], 0.5),
            Err(Error::SizeMismatch { .. })
        ));
    }
}
