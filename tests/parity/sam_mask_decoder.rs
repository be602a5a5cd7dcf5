//! Runner for `sam_mask_decoder` (HF `SamMaskDecoder`) and `sam_prompt_encoder` cases.

use candle_core::Tensor;
use unires::config::SamMaskDecoderConfig;
use unires::model::mask_decoder::{PromptEncoder, SamMaskDecoder};

use crate::harness::{Case, Res};

pub fn run(case: &Case) -> Res<Vec<(String, Tensor)>> {
    let cfg: SamMaskDecoderConfig = serde_json::from_str(&case.config_json()?)?;
    let dec = SamMaskDecoder::new(&cfg, case.weights()?)?;
    let img = case.input("image_embeddings")?;
    let pe = case.input("image_positional_embeddings")?;
    let sparse = case.input("sparse_prompt_embeddings")?.squeeze(1)?; // point batch of 1
    let dense = case.input("dense_prompt_embeddings")?;
    let out = dec.forward(&img, &pe, &sparse, &dense, None)?;
    let n = dec.num_mask_tokens();
    let (start, len) = if case.bool("multimask_output").unwrap_or(true) {
        (1, n - 1)
    } else {
        (0, 1)
    };
    let masks = out.masks.narrow(1, start, len)?.unsqueeze(1)?;
    let iou = out.iou.narrow(1, start, len)?.unsqueeze(1)?;
    Ok(vec![
        ("pred_masks".into(), masks),
        ("iou_scores".into(), iou),
    ])
}

pub fn run_prompt(case: &Case) -> Res<Vec<(String, Tensor)>> {
    let d = case
        .i64("hidden_size")
        .ok_or("fixture has no hidden_size")? as usize;
    let size = case.f64("image_size").ok_or("fixture has no image_size")?;
    let grid = case.i64("grid").ok_or("fixture has no grid")? as usize;
    let enc = PromptEncoder::new(d, case.weights()?)?;
    // HF shifts box corners to pixel centres and divides by the input size.
    let boxes = case.input("boxes")?; // (1, N, 4)
    let n = boxes.dim(1)?;
    let norm = ((boxes.squeeze(0)? + 0.5)? / size)?;
    let sparse = enc.embed_boxes(&norm)?.reshape((1, n, 2, d))?;
    let dense = enc
        .dense_no_mask()?
        .broadcast_as((1, d, grid, grid))?
        .contiguous()?;
    let wide = enc.dense_pe(grid, grid, dense.dtype())?;
    Ok(vec![
        ("sparse_prompt_embeddings".into(), sparse),
        ("dense_prompt_embeddings".into(), dense),
        ("image_positional_embeddings".into(), wide),
    ])
}
