//! Image loading with typed errors and size limits: the file's size is checked before it is
//! read (only regular files are read, see [`crate::io::read`]), and the pixel size before the
//! pixels are decoded.

use std::io::Cursor;
use std::path::Path;

use image::{ImageFormat, ImageReader, RgbImage};

use crate::config::Limits;
use crate::error::{Error, Result};
use crate::io::read::{check_len, read_capped};

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

/// Decodes an in-memory image (`what` names it in errors): at most `limits.max_image_bytes`
/// bytes, in a supported format, within the pixel limits (checked from the header, before
/// decoding).
pub fn decode_image(bytes: &[u8], what: &str, limits: &Limits) -> Result<RgbImage> {
    check_len(bytes.len(), limits.max_image_bytes, what, "image")?;
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

/// Reads and decodes an image file as RGB, enforcing `limits`: a file that is not a regular
/// file, or is larger than `limits.max_image_bytes`, is refused before it is read.
pub fn load_image(path: &Path, limits: &Limits) -> Result<RgbImage> {
    let bytes = read_capped(path, limits.max_image_bytes, "image")?;
    decode_image(&bytes, &path.display().to_string(), limits)
}
