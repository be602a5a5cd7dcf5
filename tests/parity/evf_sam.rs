//! Runner for `evf_sam` cases: the whole EVF-SAM graph from an 8-bit image and token ids to
//! mask logits at the original image size, through both preprocessing branches, SAM's image
//! encoder, BEiT-3, the projection, the prompt encoder, the mask decoder and the mask
//! post-processing chain. Intermediates are compared too, so a failure says where.

use candle_core::{DType, Tensor};
use unires::config::EvfSamConfig;
use unires::model::evf_sam::EvfSam;
use unires::ops::upsample::upsample_mask_logits;
use unires::pipeline::evf_sam::{preprocess_beit3, preprocess_sam};

use crate::harness::{Case, Res};

fn image(case: &Case) -> Res<image::RgbImage> {
    let t = case.get("image")?;
    let (h, w, c) = t.dims3()?;
    if c != 3 {
        return Err(format!("image has {c} channels").into());
    }
    let data = t.flatten_all()?.to_vec1::<u8>()?;
    image::RgbImage::from_raw(w as u32, h as u32, data).ok_or_else(|| "image buffer size".into())
}

pub fn run(case: &Case) -> Res<Vec<(String, Tensor)>> {
    let cfg = EvfSamConfig::from_json_str("config.json", &case.config_json()?)?;
    let model = EvfSam::new(&cfg, case.weights()?)?;
    let img = image(case)?;
    let ids: Vec<u32> = case
        .get("input_ids")?
        .flatten_all()?
        .to_vec1::<i64>()?
        .into_iter()
        .map(|v| v as u32)
        .collect();
    let dev = &case.device;
    let sam = preprocess_sam(&img, model.sam_config.img_size, dev)?;
    let evf = preprocess_beit3(&img, model.beit3_config.img_size, dev)?;
    let emb = model.image_embeddings(&sam.pixels)?;
    let ids = Tensor::from_slice(&ids, (1, ids.len()), dev)?;
    let text = model.text_embeds(&evf, &ids)?;
    let low = model.low_res_masks(&emb, &text)?;
    let pred = upsample_mask_logits(&low.squeeze(1)?.to_dtype(DType::F32)?, &sam.mask_resize())?;
    Ok(vec![
        ("images_sam".into(), sam.pixels),
        ("images_evf".into(), evf),
        ("image_embeddings".into(), emb),
        ("text_embeds".into(), text),
        ("low_res_masks".into(), low),
        ("pred_mask".into(), pred),
    ])
}
