//! Metal glue of the custom ops: the sources in `kernels/metal` (compiled at run time, once
//! per device) and their dispatch through candle's Metal backend (`metal` feature, macOS).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::{bail, DType, Layout, MetalDevice, MetalError, MetalStorage, Result, Shape};
use candle_metal_kernels::metal::{ComputeCommandEncoder, ComputePipeline};
use objc2_metal::MTLSize;

use super::params::{
    mask_out_shape, AttentionParams, MaskKind, MaskOutput, RoiAlignParams, UpsampleParams,
    GPU_MAX_HEAD_DIM,
};

const ROI_ALIGN_SRC: &str = include_str!("../../kernels/metal/roi_align.metal");
const ATTENTION_SRC: &str = include_str!("../../kernels/metal/attention.metal");
const MASK_UPSAMPLE_SRC: &str = include_str!("../../kernels/metal/mask_upsample.metal");

/// Query rows per threadgroup of the attention kernel (`ATTN_WARPS` in attention.metal).
const ATTN_WARPS: usize = 4;
/// Threadgroup memory the attention kernel may use (bytes; the Apple-GPU minimum).
const THREADGROUP_BYTES: usize = 32 * 1024;

/// Compiled pipelines, keyed by device and function name.
fn pipelines() -> &'static Mutex<HashMap<String, ComputePipeline>> {
    static CACHE: OnceLock<Mutex<HashMap<String, ComputePipeline>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The pipeline of `function` in `source`, compiled on first use.
fn pipeline(device: &MetalDevice, source: &str, function: &str) -> Result<ComputePipeline> {
    let key = format!("{:?}/{function}", device.id());
    let mut cache = match pipelines().lock() {
        Ok(c) => c,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(p) = cache.get(&key) {
        return Ok(p.clone());
    }
    let raw = device.metal_device();
    let library = raw
        .new_library_with_source(source, None)
        .map_err(MetalError::from)?;
    let f = library
        .get_function(function, None)
        .map_err(MetalError::from)?;
    let p = raw
        .new_compute_pipeline_state_with_function(&f)
        .map_err(MetalError::from)?;
    cache.insert(key, p.clone());
    Ok(p)
}

fn suffix(dtype: DType, op: &str) -> Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        other => bail!("{op}: dtype {other:?} is not supported"),
    })
}

/// Byte offset of a contiguous layout.
fn offset(l: &Layout, dtype: DType, op: &str) -> Result<usize> {
    if !l.is_contiguous() {
        bail!("{op}: input must be contiguous")
    }
    Ok(l.start_offset() * dtype.size_in_bytes())
}

fn i32_of(v: usize, what: &str) -> Result<i32> {
    match i32::try_from(v) {
        Ok(x) => Ok(x),
        Err(_) => bail!("{what} = {v} does not fit the Metal kernel's 32-bit index"),
    }
}

/// One thread per element, in threadgroups of the pipeline's width.
fn dispatch_elementwise(enc: &ComputeCommandEncoder, p: &ComputePipeline, n: usize) {
    let width = p.max_total_threads_per_threadgroup().clamp(1, 256);
    enc.dispatch_threads(
        MTLSize {
            width: n,
            height: 1,
            depth: 1,
        },
        MTLSize {
            width,
            height: 1,
            depth: 1,
        },
    );
}

// ------------------------------------------------------------------ ROI Align

/// `RoiAlignParams` in roi_align.metal.
#[repr(C)]
struct RoiAlignArgs {
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

pub(crate) fn roi_align_fwd(
    p: &RoiAlignParams,
    s1: &MetalStorage,
    l1: &Layout,
    s2: &MetalStorage,
    l2: &Layout,
) -> Result<(MetalStorage, Shape)> {
    const OP: &str = "roi_align";
    let (_n, c, h, w) = l1.shape().dims4()?;
    let (k, _) = l2.shape().dims2()?;
    let (oh, ow) = (p.pooled_h, p.pooled_w);
    let dtype = s1.dtype();
    let device = s1.device();
    let count = k * c * oh * ow;
    let output = device
        .new_buffer_builder()
        .with_size_for(count, dtype)
        .with_label(OP)
        .build()?;
    if count > 0 {
        let params = RoiAlignArgs {
            n_rois: i32_of(k, "rois")?,
            channels: i32_of(c, "channels")?,
            height: i32_of(h, "height")?,
            width: i32_of(w, "width")?,
            oh: i32_of(oh, "output height")?,
            ow: i32_of(ow, "output width")?,
            scale: p.spatial_scale,
            sampling_ratio: p.sampling_ratio,
            aligned: i32::from(p.aligned),
        };
        let name = format!("roi_align_fwd_{}", suffix(dtype, OP)?);
        let pipe = pipeline(device, ROI_ALIGN_SRC, &name)?;
        let guard = device.command_encoder()?;
        let enc: &ComputeCommandEncoder = guard.as_ref();
        enc.set_compute_pipeline_state(&pipe);
        enc.set_input_buffer(0, Some(s1.buffer()), offset(l1, dtype, OP)?);
        enc.set_input_buffer(1, Some(s2.buffer()), offset(l2, DType::F32, OP)?);
        enc.set_output_buffer(2, Some(&*output), 0);
        enc.set_bytes(3, &params);
        dispatch_elementwise(enc, &pipe, count);
    }
    let storage = MetalStorage::new(output, device.clone(), count, dtype);
    Ok((storage, Shape::from((k, c, oh, ow))))
}

// ------------------------------------------------------------------ attention

/// `AttentionParams` in attention.metal.
#[repr(C)]
struct AttentionArgs {
    heads: i32,
    kv_heads: i32,
    sq: i32,
    sk: i32,
    d: i32,
    dv: i32,
    scale: f32,
    causal: i32,
    kt: i32,
}

pub(crate) fn attention_fwd(
    p: &AttentionParams,
    s1: &MetalStorage,
    l1: &Layout,
    s2: &MetalStorage,
    l2: &Layout,
    s3: &MetalStorage,
    l3: &Layout,
) -> Result<(MetalStorage, Shape)> {
    const OP: &str = "attention";
    let d = &p.dims;
    if matches!(p.mask, MaskKind::Additive) {
        bail!("attention: the Metal kernel takes no additive mask")
    }
    if d.d > GPU_MAX_HEAD_DIM || d.dv > GPU_MAX_HEAD_DIM {
        bail!("attention: the Metal kernel supports head dims up to {GPU_MAX_HEAD_DIM}")
    }
    let dtype = s1.dtype();
    let device = s1.device();
    let count = d.b * d.h * d.sq * d.dv;
    let output = device
        .new_buffer_builder()
        .with_size_for(count, dtype)
        .with_label(OP)
        .build()?;
    if count > 0 {
        let kt = (THREADGROUP_BYTES / 4 / (d.d + d.dv)).min(32);
        let params = AttentionArgs {
            heads: i32_of(d.h, "heads")?,
            kv_heads: i32_of(d.hkv, "kv heads")?,
            sq: i32_of(d.sq, "query length")?,
            sk: i32_of(d.sk, "key length")?,
            d: i32_of(d.d, "head dim")?,
            dv: i32_of(d.dv, "value dim")?,
            scale: p.scale,
            causal: i32::from(matches!(p.mask, MaskKind::Causal)),
            kt: kt as i32,
        };
        let name = format!("attention_fwd_{}", suffix(dtype, OP)?);
        let pipe = pipeline(device, ATTENTION_SRC, &name)?;
        let guard = device.command_encoder()?;
        let enc: &ComputeCommandEncoder = guard.as_ref();
        enc.set_compute_pipeline_state(&pipe);
        enc.set_input_buffer(0, Some(s1.buffer()), offset(l1, dtype, OP)?);
        enc.set_input_buffer(1, Some(s2.buffer()), offset(l2, dtype, OP)?);
        enc.set_input_buffer(2, Some(s3.buffer()), offset(l3, dtype, OP)?);
        enc.set_output_buffer(3, Some(&*output), 0);
        enc.set_bytes(4, &params);
        enc.set_threadgroup_memory_length(0, kt * (d.d + d.dv) * 4);
        enc.dispatch_thread_groups(
            MTLSize {
                width: d.sq.div_ceil(ATTN_WARPS),
                height: d.b * d.h,
                depth: 1,
            },
            MTLSize {
                width: 32 * ATTN_WARPS,
                height: 1,
                depth: 1,
            },
        );
    }
    let storage = MetalStorage::new(output, device.clone(), count, dtype);
    Ok((storage, Shape::from((d.b, d.h, d.sq, d.dv))))
}

// ------------------------------------------------------------------ mask upsampling

/// `MaskUpsampleParams` in mask_upsample.metal.
#[repr(C)]
struct MaskUpsampleArgs {
    n: i32,
    h: i32,
    w: i32,
    padded_h: i32,
    padded_w: i32,
    valid_h: i32,
    valid_w: i32,
    out_h: i32,
    out_w: i32,
    mode: i32,
}

pub(crate) fn mask_upsample_fwd(
    p: &UpsampleParams,
    s: &MetalStorage,
    l: &Layout,
) -> Result<(MetalStorage, Shape)> {
    const OP: &str = "upsample_masks";
    let (n, h, w, shape) = mask_out_shape(l.dims(), p.orig)?;
    let dtype = s.dtype();
    let device = s.device();
    let count = n * p.orig.0 * p.orig.1;
    let (out_dtype, kernel, mode) = match p.output {
        MaskOutput::Masks => (DType::U8, "mask_upsample_masks", 0),
        MaskOutput::Probs => (DType::F32, "mask_upsample_values", 1),
        MaskOutput::Logits => (DType::F32, "mask_upsample_values", 2),
    };
    let output = device
        .new_buffer_builder()
        .with_size_for(count, out_dtype)
        .with_label(OP)
        .build()?;
    if count > 0 {
        let params = MaskUpsampleArgs {
            n: i32_of(n, "masks")?,
            h: i32_of(h, "height")?,
            w: i32_of(w, "width")?,
            padded_h: i32_of(p.padded.0, "padded height")?,
            padded_w: i32_of(p.padded.1, "padded width")?,
            valid_h: i32_of(p.valid.0, "valid height")?,
            valid_w: i32_of(p.valid.1, "valid width")?,
            out_h: i32_of(p.orig.0, "output height")?,
            out_w: i32_of(p.orig.1, "output width")?,
            mode,
        };
        let name = format!("{kernel}_{}", suffix(dtype, OP)?);
        let pipe = pipeline(device, MASK_UPSAMPLE_SRC, &name)?;
        let guard = device.command_encoder()?;
        let enc: &ComputeCommandEncoder = guard.as_ref();
        enc.set_compute_pipeline_state(&pipe);
        enc.set_input_buffer(0, Some(s.buffer()), offset(l, dtype, OP)?);
        enc.set_output_buffer(1, Some(&*output), 0);
        enc.set_bytes(2, &params);
        dispatch_elementwise(enc, &pipe, count);
    }
    let storage = MetalStorage::new(output, device.clone(), count, out_dtype);
    Ok((storage, shape))
}
