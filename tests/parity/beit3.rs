//! Runner for `beit3` cases: torchscale's `BEiT3` (vision + language input) with the
//! encoder settings EVF-SAM uses; output `encoder_out` `(B, 1 + P + T, D)`.

use candle_core::Tensor;
use unires::config::Beit3Config;
use unires::model::beit3::Beit3;

use crate::harness::{Case, Res};

pub fn run(case: &Case) -> Res<Vec<(String, Tensor)>> {
    let cfg: Beit3Config = serde_json::from_str(&case.config_json()?)?;
    let model = Beit3::new(&cfg, case.weights()?)?;
    let visual = case.input("visual_tokens")?;
    let textual = case.input("textual_tokens")?;
    let padding = if case.inputs.iter().any(|n| n == "text_padding_position") {
        Some(case.input("text_padding_position")?)
    } else {
        None
    };
    let out = model.forward(&visual, &textual, padding.as_ref())?;
    Ok(vec![("encoder_out".into(), out)])
}
