//! ROI Align (torchvision `roi_align` semantics). Interim CPU reference.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// ROI Align attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoiAlign {
    pub output_size: (usize, usize),
    pub spatial_scale: f32,
    pub sampling_ratio: i32,
    pub aligned: bool,
}

fn bilinear(f: &[f32], h: usize, w: usize, y: f32, x: f32) -> f32 {
    if y < -1.0 || y > h as f32 || x < -1.0 || x > w as f32 {
        return 0.0;
    }
    let y = y.max(0.0);
    let x = x.max(0.0);
    let (mut y0, mut x0) = (y as usize, x as usize);
    let (y1, x1, yy, xx);
    if y0 >= h - 1 {
        y0 = h - 1;
        y1 = h - 1;
        yy = y0 as f32;
    } else {
        y1 = y0 + 1;
        yy = y;
    }
    if x0 >= w - 1 {
        x0 = w - 1;
        x1 = w - 1;
        xx = x0 as f32;
    } else {
        x1 = x0 + 1;
        xx = x;
    }
    let (ly, lx) = (yy - y0 as f32, xx - x0 as f32);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    hy * hx * f[y0 * w + x0]
        + hy * lx * f[y0 * w + x1]
        + ly * hx * f[y1 * w + x0]
        + ly * lx * f[y1 * w + x1]
}

/// `features (N, C, H, W)`, `rois (K, 5)` → `(K, C, oh, ow)`.
pub fn roi_align(features: &Tensor, rois: &Tensor, p: &RoiAlign) -> Result<Tensor> {
    let (n, c, h, w) = features.dims4()?;
    let (k, five) = rois.dims2()?;
    if five != 5 {
        return Err(Error::shape("roi_align", "rois must be (K, 5)"));
    }
    let dtype = features.dtype();
    let f: Vec<f32> = features.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let r: Vec<f32> = rois.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let (oh, ow) = p.output_size;
    let mut out = vec![0f32; k * c * oh * ow];
    let off = if p.aligned { 0.5 } else { 0.0 };
    for i in 0..k {
        let b = r[i * 5] as usize;
        if b >= n {
            return Err(Error::shape("roi_align", format!("batch index {b} >= {n}")));
        }
        let x1 = r[i * 5 + 1] * p.spatial_scale - off;
        let y1 = r[i * 5 + 2] * p.spatial_scale - off;
        let x2 = r[i * 5 + 3] * p.spatial_scale - off;
        let y2 = r[i * 5 + 4] * p.spatial_scale - off;
        let (mut rw, mut rh) = (x2 - x1, y2 - y1);
        if !p.aligned {
            rw = rw.max(1.0);
            rh = rh.max(1.0);
        }
        let (bh, bw) = (rh / oh as f32, rw / ow as f32);
        let gh = if p.sampling_ratio > 0 {
            p.sampling_ratio as usize
        } else {
            (rh / oh as f32).ceil() as usize
        };
        let gw = if p.sampling_ratio > 0 {
            p.sampling_ratio as usize
        } else {
            (rw / ow as f32).ceil() as usize
        };
        let count = (gh * gw).max(1) as f32;
        for ch in 0..c {
            let plane = &f[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
            for py in 0..oh {
                for px in 0..ow {
                    let mut acc = 0f32;
                    for iy in 0..gh {
                        let y = y1 + py as f32 * bh + (iy as f32 + 0.5) * bh / gh as f32;
                        for ix in 0..gw {
                            let x = x1 + px as f32 * bw + (ix as f32 + 0.5) * bw / gw as f32;
                            acc += bilinear(plane, h, w, y, x);
                        }
                    }
                    out[((i * c + ch) * oh + py) * ow + px] = acc / count;
                }
            }
        }
    }
    Ok(Tensor::from_vec(out, (k, c, oh, ow), features.device())?.to_dtype(dtype)?)
}
