//! Runner for `sam_image_encoder` cases (segment-anything `ImageEncoderViT`).

use candle_core::Tensor;
use unires::config::SamImageEncoderConfig;
use unires::model::sam_image_encoder::SamImageEncoder;

use crate::harness::{Case, Res};

pub fn run(case: &Case) -> Res<Vec<(String, Tensor)>> {
    let cfg: SamImageEncoderConfig = serde_json::from_str(&case.config_json()?)?;
    let enc = SamImageEncoder::new(&cfg, case.weights()?)?;
    let out = enc.forward(&case.input("pixel_values")?)?;
    Ok(vec![("image_embeddings".into(), out)])
}
