//! Image preprocessing: the resamplers the reference pipelines use, re-implemented exactly,
//! and the low-resolution (CLIP) and high-resolution (ConvNeXt) paths of UniRES++.
//!
//! * [`resize_pil`]: Pillow's `Image.resize` (bilinear or bicubic, antialiased when shrinking,
//!   fixed-point, horizontal pass first with an 8-bit intermediate);
//! * [`resize_bicubic_torch`]: PyTorch's bicubic `interpolate` on a float tensor.
//!
//! Both UniRES++ paths resize with **Pillow's antialiased bicubic filter** (`Image.resize(...,
//! BICUBIC)`, `a = −0.5`, support widened by the downscale factor, fixed-point 22-bit
//! coefficients, horizontal pass first with an 8-bit intermediate image), re-implemented
//! here so that the pixels equal what `CLIPImageProcessor` (PIL path) computes.
//!
//! * Low-res (LLaVA-1.5): pad to a centred square with the CLIP mean colour
//!   (`int(255·mean)` per channel; the image is pasted at offset `(side − short) // 2`),
//!   resize to `image_size²`, scale by 1/255, normalise with the CLIP mean/std.
//! * High-res (Mini-Gemini style): resize so the longest side is `image_size`, the other side
//!   `max(1, floor(short · image_size / long + 0.5))`; scale, normalise, then pad bottom/right
//!   with zeros *after* normalisation (the mean colour) to a square or to a multiple of `m`.

use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::config::HiresPad;
use crate::error::{Error, Result};

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's resampling filters (the ones the preprocessing paths use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PilFilter {
    /// `Image.BILINEAR`: the triangle filter, support 1.
    Bilinear,
    /// `Image.BICUBIC`: Keys' cubic with `a = −0.5`, support 2.
    Bicubic,
}

impl PilFilter {
    fn support(self) -> f64 {
        match self {
            PilFilter::Bilinear => 1.0,
            PilFilter::Bicubic => 2.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        match self {
            PilFilter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            PilFilter::Bicubic => bicubic(x),
        }
    }
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`: for each output index,
/// the first input index, the tap count and fixed-point weights.
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

fn precompute_coeffs(in_size: usize, out_size: usize, filter: PilFilter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C casts truncate toward zero; these values are ≥ −support so `as i64` matches.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.eval((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for x in 0..ksize {
            let v = if x < n && ww != 0.0 {
                k[x] / ww
            } else if x < n {
                k[x]
            } else {
                0.0
            };
            let f = v * (1i64 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if v < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs {
        ksize,
        bounds,
        weights,
    }
}

#[inline]
fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an RGB image exactly as Pillow's `Image.resize((w, h), Image.BICUBIC)`.
pub fn resize_bicubic_pil(img: &RgbImage, out_w: u32, out_h: u32) -> Result<RgbImage> {
    resize_pil(img, out_w, out_h, PilFilter::Bicubic)
}

/// Resizes an RGB image exactly as Pillow's `Image.resize((w, h), filter)` (antialiased when
/// shrinking: the filter's support widens by the scale factor).
pub fn resize_pil(img: &RgbImage, out_w: u32, out_h: u32, filter: PilFilter) -> Result<RgbImage> {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    if in_w == 0 || in_h == 0 || ow == 0 || oh == 0 {
        return Err(Error::ImageTooSmall {
            width: img.width().min(out_w),
            height: img.height().min(out_h),
            min: 1,
        });
    }
    if in_w == ow && in_h == oh {
        return Ok(img.clone());
    }
    let src = img.as_raw();
    let half: i64 = 1 << (PRECISION_BITS - 1);

    let cv = precompute_coeffs(in_h, oh, filter);
    // Rows of the source actually used by the vertical pass.
    let y_first = cv.bounds.first().map(|b| b.0).unwrap_or(0);
    let y_last = cv.bounds.last().map(|b| b.0 + b.1).unwrap_or(in_h);

    // Horizontal pass into an 8-bit intermediate of `y_last - y_first` rows.
    let (tmp, tmp_w, tmp_y0) = if ow != in_w {
        let ch = precompute_coeffs(in_w, ow, filter);
        let rows = y_last - y_first;
        let mut tmp = vec![0u8; rows * ow * 3];
        for (r, out_row) in tmp.chunks_mut(ow * 3).enumerate() {
            let y = y_first + r;
            let in_row = &src[y * in_w * 3..(y + 1) * in_w * 3];
            for xx in 0..ow {
                let (xmin, n) = ch.bounds[xx];
                let k = &ch.weights[xx * ch.ksize..xx * ch.ksize + n];
                let (mut s0, mut s1, mut s2) = (half, half, half);
                for (x, &w) in k.iter().enumerate() {
                    let p = &in_row[(xmin + x) * 3..(xmin + x) * 3 + 3];
                    s0 += p[0] as i64 * w as i64;
                    s1 += p[1] as i64 * w as i64;
                    s2 += p[2] as i64 * w as i64;
                }
                out_row[xx * 3] = clip8(s0);
                out_row[xx * 3 + 1] = clip8(s1);
                out_row[xx * 3 + 2] = clip8(s2);
            }
        }
        (tmp, ow, y_first)
    } else {
        (src.to_vec(), in_w, 0)
    };

    if oh == in_h {
        return RgbImage::from_raw(out_w, out_h, tmp)
            .ok_or_else(|| Error::shape("resize_pil", "buffer size"));
    }
    // Vertical pass.
    let mut out = vec![0u8; oh * tmp_w * 3];
    for (yy, out_row) in out.chunks_mut(tmp_w * 3).enumerate() {
        let (ymin, n) = cv.bounds[yy];
        let k = &cv.weights[yy * cv.ksize..yy * cv.ksize + n];
        for xx in 0..tmp_w * 3 {
            let mut s = half;
            for (y, &w) in k.iter().enumerate() {
                s += tmp[(ymin - tmp_y0 + y) * tmp_w * 3 + xx] as i64 * w as i64;
            }
            out_row[xx] = clip8(s);
        }
    }
    RgbImage::from_raw(out_w, out_h, out).ok_or_else(|| Error::shape("resize_pil", "buffer size"))
}

/// `torch.nn.functional.interpolate(mode="bicubic", align_corners=False, antialias=False)` of
/// a `(C, H, W)` f32 image to `(C, out_h, out_w)`, as PyTorch's CPU kernel computes it: Keys'
/// cubic with `a = −0.75`, source index `scale·(i + ½) − ½` (not clamped below zero),
/// taps clamped to the border, f32 weights, the four taps of a row summed first, then the
/// four rows. No clamping of the result (values may leave the input range).
pub fn resize_bicubic_torch(
    chw: &[f32],
    (c, h, w): (usize, usize, usize),
    (out_h, out_w): (usize, usize),
) -> Result<Vec<f32>> {
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 || chw.len() != c * h * w {
        return Err(Error::shape(
            "resize_bicubic_torch",
            format!(
                "{} values for ({c}, {h}, {w}) → ({out_h}, {out_w})",
                chw.len()
            ),
        ));
    }
    let ty = cubic_taps(h, out_h);
    let tx = cubic_taps(w, out_w);
    let mut out = vec![0f32; c * out_h * out_w];
    for (plane, dst) in chw
        .chunks_exact(h * w)
        .zip(out.chunks_exact_mut(out_h * out_w))
    {
        for (oy, row) in dst.chunks_exact_mut(out_w).enumerate() {
            let (iy, wy) = &ty[oy];
            for (ox, v) in row.iter_mut().enumerate() {
                let (ix, wx) = &tx[ox];
                let mut acc = 0f32;
                for (&yy, &wyy) in iy.iter().zip(wy) {
                    let src = &plane[yy * w..(yy + 1) * w];
                    let mut r = 0f32;
                    for (&xx, &wxx) in ix.iter().zip(wx) {
                        r += src[xx] * wxx;
                    }
                    acc += r * wyy;
                }
                *v = acc;
            }
        }
    }
    Ok(out)
}

/// The four clamped source indices and f32 weights of each output index (PyTorch's
/// `compute_indices_weights_cubic`).
fn cubic_taps(input: usize, output: usize) -> Vec<([usize; 4], [f32; 4])> {
    const A: f32 = -0.75;
    let conv1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let conv2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let real = scale * (o as f32 + 0.5) - 0.5;
            let i0 = (real.floor() as i64).min(input as i64 - 1);
            let t = (real - i0 as f32).clamp(0.0, 1.0);
            let clamp = |i: i64| i.clamp(0, input as i64 - 1) as usize;
            (
                [clamp(i0 - 1), clamp(i0), clamp(i0 + 1), clamp(i0 + 2)],
                [
                    conv2(t + 1.0),
                    conv1(t),
                    conv1(1.0 - t),
                    conv2(1.0 - t + 1.0),
                ],
            )
        })
        .collect()
}

/// The padding colour LLaVA uses: `int(255 · mean)` per channel.
pub fn mean_colour(mean: [f32; 3]) -> [u8; 3] {
    [
        (mean[0] as f64 * 255.0) as u8,
        (mean[1] as f64 * 255.0) as u8,
        (mean[2] as f64 * 255.0) as u8,
    ]
}

/// LLaVA's `expand2square`: the image centred on a square canvas of its longest side.
pub fn expand_to_square(img: &RgbImage, bg: [u8; 3]) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == h {
        return img.clone();
    }
    let side = w.max(h);
    let mut out = RgbImage::from_pixel(side, side, image::Rgb(bg));
    let (ox, oy) = if w > h {
        (0, (w - h) / 2)
    } else {
        ((h - w) / 2, 0)
    };
    image::imageops::replace(&mut out, img, ox as i64, oy as i64);
    out
}

/// Scales to [0, 1] and normalises, returning a `(3, H, W)` f32 buffer (channel-major).
pub fn normalize_chw(img: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let n = (w * h) as usize;
    let mut out = vec![0f32; 3 * n];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            let v = (p.0[c] as f64 * (1.0 / 255.0)) as f32;
            out[c * n + i] = (v - mean[c]) / std[c];
        }
    }
    out
}

/// Low-resolution input: `(1, 3, size, size)`.
pub fn preprocess_lowres(
    img: &RgbImage,
    size: usize,
    mean: [f32; 3],
    std: [f32; 3],
    device: &Device,
) -> Result<Tensor> {
    let sq = expand_to_square(img, mean_colour(mean));
    let resized = resize_bicubic_pil(&sq, size as u32, size as u32)?;
    let data = normalize_chw(&resized, mean, std);
    Ok(Tensor::from_vec(data, (1, 3, size, size), device)?)
}

/// Geometry of the high-resolution input, needed to map boxes in and masks out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HiresGeometry {
    /// Original image size.
    pub orig_h: usize,
    pub orig_w: usize,
    /// Size after resizing (before padding).
    pub resized_h: usize,
    pub resized_w: usize,
    /// Size after padding (the tensor's spatial size).
    pub padded_h: usize,
    pub padded_w: usize,
}

impl HiresGeometry {
    /// Computes the resize target and padding for an `orig_w × orig_h` image.
    pub fn new(orig_w: usize, orig_h: usize, long_side: usize, pad: HiresPad) -> Self {
        let long = orig_w.max(orig_h).max(1);
        let short_of =
            |s: usize| ((s as f64 * long_side as f64 / long as f64 + 0.5).floor() as usize).max(1);
        let (resized_w, resized_h) = if orig_w >= orig_h {
            (long_side, short_of(orig_h))
        } else {
            (short_of(orig_w), long_side)
        };
        let (padded_w, padded_h) = match pad {
            HiresPad::Square => (long_side, long_side),
            HiresPad::MultipleOf(m) => {
                let m = m.max(1);
                (resized_w.div_ceil(m) * m, resized_h.div_ceil(m) * m)
            }
        };
        Self {
            orig_h,
            orig_w,
            resized_h,
            resized_w,
            padded_h,
            padded_w,
        }
    }

    /// Per-axis scale from original to resized pixel coordinates `(sx, sy)`.
    pub fn scale(&self) -> (f32, f32) {
        (
            self.resized_w as f32 / self.orig_w.max(1) as f32,
            self.resized_h as f32 / self.orig_h.max(1) as f32,
        )
    }
}

/// High-resolution input `(1, 3, padded_h, padded_w)` and its geometry.
pub fn preprocess_hires(
    img: &RgbImage,
    long_side: usize,
    pad: HiresPad,
    mean: [f32; 3],
    std: [f32; 3],
    device: &Device,
) -> Result<(Tensor, HiresGeometry)> {
    let g = HiresGeometry::new(img.width() as usize, img.height() as usize, long_side, pad);
    let resized = resize_bicubic_pil(img, g.resized_w as u32, g.resized_h as u32)?;
    let data = normalize_chw(&resized, mean, std);
    let n = g.resized_h * g.resized_w;
    let mut out = vec![0f32; 3 * g.padded_h * g.padded_w];
    for c in 0..3 {
        for y in 0..g.resized_h {
            let src = &data[c * n + y * g.resized_w..c * n + (y + 1) * g.resized_w];
            let o = c * g.padded_h * g.padded_w + y * g.padded_w;
            out[o..o + g.resized_w].copy_from_slice(src);
        }
    }
    let t = Tensor::from_vec(out, (1, 3, g.padded_h, g.padded_w), device)?;
    Ok((t, g))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_resize_is_a_copy() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 50, 7]));
        assert_eq!(resize_bicubic_pil(&img, 5, 4).unwrap(), img);
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([200, 13, 99]));
        for (w, h) in [(10, 10), (64, 50), (3, 90)] {
            let r = resize_bicubic_pil(&img, w, h).unwrap();
            assert!(r.pixels().all(|p| p.0 == [200, 13, 99]), "{w}x{h}");
        }
    }

    #[test]
    fn hires_geometry_rounding() {
        let g = HiresGeometry::new(640, 480, 768, HiresPad::Square);
        assert_eq!(
            (g.resized_w, g.resized_h, g.padded_w, g.padded_h),
            (768, 576, 768, 768)
        );
        let g = HiresGeometry::new(333, 1000, 128, HiresPad::MultipleOf(32));
        assert_eq!(
            (g.resized_w, g.resized_h, g.padded_w, g.padded_h),
            (43, 128, 64, 128)
        );
    }

    #[test]
    fn mean_colour_matches_llava() {
        assert_eq!(mean_colour(crate::config::CLIP_MEAN), [122, 116, 104]);
    }
}
