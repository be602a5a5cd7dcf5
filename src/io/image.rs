//! Image loading with typed errors and size limits (checked before the pixels are decoded).

use std::io::Cursor;
use std::path::Path;

use image::{ImageFormat, ImageReader, RgbImage};

use crate::config::Limits;
use crate::error::{Error, Result};

/// Formats this build decodes.
pub const SUPPORTED_FORMATS: &str = "PNG, JPEG, BMP";

fn supported(fmt: ImageFormat) -> bool {
    matches!(fmt, ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Bmp)
}

/// Checks an image size against the limits.
pub fn check_size(width: u32, height: u32, limits: &Limits) -> Result<()> {
    let pixels = width as u64 * height as u64;
    if width > limits.max_side || height > limits.max_side || pixels > limits.max_pixels {
        return Err(Error::ImageTooLarge {
            width,
            height,
            pixels,
            max_pixels: limits.max_pixels,
            max_side: limits.max_side,
        });
    }
    if width < limits.min_side || height < limits.min_side {
        return Err(Error::ImageTooSmall {
            width,
            height,
            min: limits.min_side,
        });
    }
    Ok(())
}

/// Decodes an in-memory image (`what` names it in errors).
pub fn decode_image(bytes: &[u8], what: &str, limits: &Limits) -> Result<RgbImage> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::BadImage {
            what: what.into(),
            reason: e.to_string(),
        })?;
    let fmt = match reader.format() {
        Some(f) if supported(f) => f,
        _ => {
            return Err(Error::UnsupportedImageFormat {
                what: what.into(),
                supported: SUPPORTED_FORMATS,
            })
        }
    };
    let (w, h) = ImageReader::with_format(Cursor::new(bytes), fmt)
        .into_dimensions()
        .map_err(|e| Error::BadImage {
            what: what.into(),
            reason: e.to_string(),
        })?;
    check_size(w, h, limits)?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), fmt);
    let mut decode_limits = image::Limits::default();
    decode_limits.max_image_width = Some(limits.max_side);
    decode_limits.max_image_height = Some(limits.max_side);
    reader.limits(decode_limits);
    let img = reader.decode().map_err(|e| Error::BadImage {
        what: what.into(),
        reason: e.to_string(),
    })?;
    Ok(img.to_rgb8())
}

/// Reads and decodes an image file as RGB, enforcing `limits`.
pub fn load_image(path: &Path, limits: &Limits) -> Result<RgbImage> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::IsADirectory {
            path: path.to_path_buf(),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image(&bytes, &path.display().to_string(), limits)
}
