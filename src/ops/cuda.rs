//! CUDA glue of the custom ops: the PTX modules that build.rs compiles from `kernels/cuda`
//! and their launches through candle's CUDA backend (`cuda` feature).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{bail, CudaDevice, CudaStorage, DType, Layout, Result, Shape};
use half::{bf16, f16};

use super::params::{
    mask_out_shape, AttentionParams, MaskKind, MaskOutput, RoiAlignBackwardParams, RoiAlignParams,
    UpsampleParams, GPU_MAX_HEAD_DIM,
};

const ROI_ALIGN_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/roi_align.ptx"));
const ATTENTION_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/attention.ptx"));
const MASK_UPSAMPLE_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/mask_upsample.ptx"));

/// Query rows per thread block of the attention kernel (`ATTN_WARPS` in attention.cu).
const ATTN_WARPS: u32 = 4;
/// Shared memory the attention kernel may use without opting in (bytes).
const SHARED_BYTES: usize = 48 * 1024;
/// Threads per block of the element-wise kernels.
const THREADS: u32 = 256;

/// An element type with a kernel instantiation (`<name>_f32`, `_f16`, `_bf16`).
trait Elem: CudaDType + DeviceRepr {
    const SUFFIX: &'static str;
}

impl Elem for f32 {
    const SUFFIX: &'static str = "f32";
}

impl Elem for f16 {
    const SUFFIX: &'static str = "f16";
}

impl Elem for bf16 {
    const SUFFIX: &'static str = "bf16";
}

/// The contiguous part of `s` described by `l`.
fn view<'a, T: CudaDType>(s: &'a CudaStorage, l: &Layout, op: &str) -> Result<CudaView<'a, T>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(s.as_cuda_slice::<T>()?.slice(a..b)),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// A grid-stride launch over `n` elements.
fn elementwise(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 65_535) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn i32_of(v: usize, what: &str) -> Result<i32> {
    match i32::try_from(v) {
        Ok(x) => Ok(x),
        Err(_) => bail!("{what} = {v} does not fit the CUDA kernel's 32-bit index"),
    }
}

// ------------------------------------------------------------------ ROI Align

/// Scalar arguments shared by the ROI Align kernels, in kernel order after the pointers.
struct RoiArgs {
    n_rois: i32,
    channels: i32,
    height: i32,
    width: i32,
    oh: i32,
    ow: i32,
    scale: f32,
    sampling_ratio: i32,
    aligned: i32,
}

impl RoiArgs {
    fn new(p: &RoiAlignParams, k: usize, c: usize, h: usize, w: usize) -> Result<Self> {
        Ok(Self {
            n_rois: i32_of(k, "rois")?,
            channels: i32_of(c, "channels")?,
            height: i32_of(h, "height")?,
            width: i32_of(w, "width")?,
            oh: i32_of(p.pooled_h, "output height")?,
            ow: i32_of(p.pooled_w, "output width")?,
            scale: p.spatial_scale,
            sampling_ratio: p.sampling_ratio,
            aligned: i32::from(p.aligned),
        })
    }

    fn push<'a>(&'a self, b: &mut candle_core::cuda_backend::cudarc::driver::LaunchArgs<'a>) {
        b.arg(&self.n_rois);
        b.arg(&self.channels);
        b.arg(&self.height);
        b.arg(&self.width);
        b.arg(&self.oh);
        b.arg(&self.ow);
        b.arg(&self.scale);
        b.arg(&self.sampling_ratio);
        b.arg(&self.aligned);
    }
}

fn roi_fwd_typed<T: Elem>(
    dev: &CudaDevice,
    features: &CudaStorage,
    l1: &Layout,
    rois: &CudaView<f32>,
    args: &RoiArgs,
    count: usize,
) -> Result<CudaSlice<T>> {
    let x = view::<T>(features, l1, "roi_align")?;
    // SAFETY: every element is written by the kernel below.
    let out = unsafe { dev.alloc::<T>(count)? };
    if count == 0 {
        return Ok(out);
    }
    let name = format!("roi_align_fwd_{}", T::SUFFIX);
    let func = dev.get_or_load_custom_func(&name, "unires_roi_align", ROI_ALIGN_PTX)?;
    let mut b = func.builder();
    b.arg(&x);
    b.arg(rois);
    b.arg(&out);
    args.push(&mut b);
    // SAFETY: pointers and sizes match the kernel's signature (kernels/cuda/roi_align.cu).
    unsafe { b.launch(elementwise(count)) }.w()?;
    Ok(out)
}

pub(crate) fn roi_align_fwd(
    p: &RoiAlignParams,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let (_n, c, h, w) = l1.shape().dims4()?;
    let (k, _) = l2.shape().dims2()?;
    let (oh, ow) = (p.pooled_h, p.pooled_w);
    let dev = s1.device().clone();
    let rois = view::<f32>(s2, l2, "roi_align")?;
    let args = RoiArgs::new(p, k, c, h, w)?;
    let count = k * c * oh * ow;
    let storage = match s1.dtype() {
        DType::F32 => {
            let out = roi_fwd_typed::<f32>(&dev, s1, l1, &rois, &args, count)?;
            CudaStorage::wrap_cuda_slice(out, dev)
        }
        DType::F16 => {
            let out = roi_fwd_typed::<f16>(&dev, s1, l1, &rois, &args, count)?;
            CudaStorage::wrap_cuda_slice(out, dev)
        }
        DType::BF16 => {
            let out = roi_fwd_typed::<bf16>(&dev, s1, l1, &rois, &args, count)?;
            CudaStorage::wrap_cuda_slice(out, dev)
        }
        other => bail!("roi_align: dtype {other:?} is not supported"),
    };
    Ok((storage, Shape::from((k, c, oh, ow))))
}

/// Gradient accumulated in f32 with atomics, then cast to `T`.
fn roi_bwd_typed<T: Elem>(
    dev: &CudaDevice,
    grad: &CudaStorage,
    l1: &Layout,
    rois: &CudaView<f32>,
    args: &RoiArgs,
    (count_in, count_out): (usize, usize),
) -> Result<CudaSlice<f32>> {
    let g = view::<T>(grad, l1, "roi_align backward")?;
    let acc = dev.alloc_zeros::<f32>(count_out)?;
    if count_in == 0 {
        return Ok(acc);
    }
    let name = format!("roi_align_bwd_{}", T::SUFFIX);
    let func = dev.get_or_load_custom_func(&name, "unires_roi_align", ROI_ALIGN_PTX)?;
    let mut b = func.builder();
    b.arg(&g);
    b.arg(rois);
    b.arg(&acc);
    args.push(&mut b);
    // SAFETY: pointers and sizes match the kernel's signature (kernels/cuda/roi_align.cu).
    unsafe { b.launch(elementwise(count_in)) }.w()?;
    Ok(acc)
}

fn cast_from_f32<T: Elem>(
    dev: &CudaDevice,
    src: &CudaSlice<f32>,
    n: usize,
) -> Result<CudaSlice<T>> {
    // SAFETY: every element is written by the kernel below.
    let out = unsafe { dev.alloc::<T>(n)? };
    if n == 0 {
        return Ok(out);
    }
    let name = format!("cast_from_f32_{}", T::SUFFIX);
    let func = dev.get_or_load_custom_func(&name, "unires_roi_align", ROI_ALIGN_PTX)?;
    let n64 = n as i64;
    let mut b = func.builder();
    b.arg(src);
    b.arg(&out);
    b.arg(&n64);
    // SAFETY: pointers and sizes match the kernel's signature (kernels/cuda/roi_align.cu).
    unsafe { b.launch(elementwise(n)) }.w()?;
    Ok(out)
}

pub(crate) fn roi_align_bwd(
    p: &RoiAlignBackwardParams,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let (k, c, oh, ow) = l1.shape().dims4()?;
    let (n, h, w) = (p.batch, p.height, p.width);
    let dev = s1.device().clone();
    let rois = view::<f32>(s2, l2, "roi_align backward")?;
    let args = RoiArgs::new(&p.roi, k, c, h, w)?;
    let counts = (k * c * oh * ow, n * c * h * w);
    let storage = match s1.dtype() {
        DType::F32 => {
            let acc = roi_bwd_typed::<f32>(&dev, s1, l1, &rois, &args, counts)?;
            CudaStorage::wrap_cuda_slice(acc, dev)
        }
        DType::F16 => {
            let acc = roi_bwd_typed::<f16>(&dev, s1, l1, &rois, &args, counts)?;
            let out = cast_from_f32::<f16>(&dev, &acc, counts.1)?;
            CudaStorage::wrap_cuda_slice(out, dev)
        }
        DType::BF16 => {
            let acc = roi_bwd_typed::<bf16>(&dev, s1, l1, &rois, &args, counts)?;
            let out = cast_from_f32::<bf16>(&dev, &acc, counts.1)?;
            CudaStorage::wrap_cuda_slice(out, dev)
        }
        other => bail!("roi_align backward: dtype {other:?} is not supported"),
    };
    Ok((storage, Shape::from((n, c, h, w))))
}

// ------------------------------------------------------------------ attention

fn attention_typed<T: Elem>(
    dev: &CudaDevice,
    p: &AttentionParams,
    (s1, l1): (&CudaStorage, &Layout),
    (s2, l2): (&CudaStorage, &Layout),
    (s3, l3): (&CudaStorage, &Layout),
) -> Result<CudaSlice<T>> {
    let d = &p.dims;
    let (q, k, v) = (
        view::<T>(s1, l1, "attention")?,
        view::<T>(s2, l2, "attention")?,
        view::<T>(s3, l3, "attention")?,
    );
    let count = d.b * d.h * d.sq * d.dv;
    // SAFETY: every element is written by the kernel below.
    let out = unsafe { dev.alloc::<T>(count)? };
    if count == 0 {
        return Ok(out);
    }
    // Key/value rows per shared-memory tile: at most one per lane, within 48 KiB.
    let kt = (SHARED_BYTES / 4 / (d.d + d.dv)).min(32);
    let causal = i32::from(matches!(p.mask, MaskKind::Causal));
    let scalars = [
        i32_of(d.h, "heads")?,
        i32_of(d.hkv, "kv heads")?,
        i32_of(d.sq, "query length")?,
        i32_of(d.sk, "key length")?,
        i32_of(d.d, "head dim")?,
        i32_of(d.dv, "value dim")?,
    ];
    let kt_i = kt as i32;
    let cfg = LaunchConfig {
        grid_dim: ((d.sq as u32).div_ceil(ATTN_WARPS), (d.b * d.h) as u32, 1),
        block_dim: (32 * ATTN_WARPS, 1, 1),
        shared_mem_bytes: (kt * (d.d + d.dv) * 4) as u32,
    };
    let name = format!("attention_fwd_{}", T::SUFFIX);
    let func = dev.get_or_load_custom_func(&name, "unires_attention", ATTENTION_PTX)?;
    let mut b = func.builder();
    b.arg(&q);
    b.arg(&k);
    b.arg(&v);
    b.arg(&out);
    for s in &scalars {
        b.arg(s);
    }
    b.arg(&p.scale);
    b.arg(&causal);
    b.arg(&kt_i);
    // SAFETY: pointers, sizes and shared memory match the kernel (kernels/cuda/attention.cu).
    unsafe { b.launch(cfg) }.w()?;
    Ok(out)
}

pub(crate) fn attention_fwd(
    p: &AttentionParams,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    s3: &CudaStorage,
    l3: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let d = &p.dims;
    if matches!(p.mask, MaskKind::Additive) {
        bail!("attention: the CUDA kernel takes no additive mask")
    }
    if d.d > GPU_MAX_HEAD_DIM || d.dv > GPU_MAX_HEAD_DIM {
        bail!("attention: the CUDA kernel supports head dims up to {GPU_MAX_HEAD_DIM}")
    }
    let dev = s1.device().clone();
    let ins = ((s1, l1), (s2, l2), (s3, l3));
    let storage = match s1.dtype() {
        DType::F32 => {
            let out = attention_typed::<f32>(&dev, p, ins.0, ins.1, ins.2)?;
            CudaStorage::wrap_cuda_slice(out, dev)
        }
        DType::F16 => {
            let out = attention_typed::<f16>(&dev, p, ins.0, ins.1, ins.2)?;
            CudaStorage::wrap_cuda_slice(out, dev)
        }
        DType::BF16 => {
            let out = attention_typed::<bf16>(&dev, p, ins.0, ins.1, ins.2)?;
            CudaStorage::wrap_cuda_slice(out, dev)
        }
        other => bail!("attention: dtype {other:?} is not supported"),
    };
    Ok((storage, Shape::from((d.b, d.h, d.sq, d.dv))))
}

// ------------------------------------------------------------------ mask upsampling

fn mask_typed<T: Elem, O: CudaDType + DeviceRepr>(
    dev: &CudaDevice,
    p: &UpsampleParams,
    s: &CudaStorage,
    l: &Layout,
    (n, h, w): (usize, usize, usize),
) -> Result<CudaSlice<O>> {
    let low = view::<T>(s, l, "upsample_masks")?;
    let count = n * p.orig.0 * p.orig.1;
    // SAFETY: every element is written by the kernel below.
    let out = unsafe { dev.alloc::<O>(count)? };
    if count == 0 {
        return Ok(out);
    }
    let mode = match p.output {
        MaskOutput::Masks => 0i32,
        MaskOutput::Probs => 1,
        MaskOutput::Logits => 2,
    };
    let scalars = [
        i32_of(n, "masks")?,
        i32_of(h, "height")?,
        i32_of(w, "width")?,
        i32_of(p.padded.0, "padded height")?,
        i32_of(p.padded.1, "padded width")?,
        i32_of(p.valid.0, "valid height")?,
        i32_of(p.valid.1, "valid width")?,
        i32_of(p.orig.0, "output height")?,
        i32_of(p.orig.1, "output width")?,
        mode,
    ];
    let name = format!("mask_upsample_{}", T::SUFFIX);
    let func = dev.get_or_load_custom_func(&name, "unires_mask_upsample", MASK_UPSAMPLE_PTX)?;
    let mut b = func.builder();
    b.arg(&low);
    b.arg(&out);
    for s in &scalars {
        b.arg(s);
    }
    // SAFETY: pointers and sizes match the kernel's signature (kernels/cuda/mask_upsample.cu).
    unsafe { b.launch(elementwise(count)) }.w()?;
    Ok(out)
}

pub(crate) fn mask_upsample_fwd(
    p: &UpsampleParams,
    s: &CudaStorage,
    l: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let (n, h, w, shape) = mask_out_shape(l.dims(), p.orig)?;
    let dev = s.device().clone();
    let dims = (n, h, w);
    let storage = match (s.dtype(), p.output) {
        (DType::F32, MaskOutput::Masks) => {
            CudaStorage::wrap_cuda_slice(mask_typed::<f32, u8>(&dev, p, s, l, dims)?, dev)
        }
        (DType::F16, MaskOutput::Masks) => {
            CudaStorage::wrap_cuda_slice(mask_typed::<f16, u8>(&dev, p, s, l, dims)?, dev)
        }
        (DType::BF16, MaskOutput::Masks) => {
            CudaStorage::wrap_cuda_slice(mask_typed::<bf16, u8>(&dev, p, s, l, dims)?, dev)
        }
        (DType::F32, _) => {
            CudaStorage::wrap_cuda_slice(mask_typed::<f32, f32>(&dev, p, s, l, dims)?, dev)
        }
        (DType::F16, _) => {
            CudaStorage::wrap_cuda_slice(mask_typed::<f16, f32>(&dev, p, s, l, dims)?, dev)
        }
        (DType::BF16, _) => {
            CudaStorage::wrap_cuda_slice(mask_typed::<bf16, f32>(&dev, p, s, l, dims)?, dev)
        }
        (other, _) => bail!("upsample_masks: dtype {other:?} is not supported"),
    };
    Ok((storage, shape))
}
