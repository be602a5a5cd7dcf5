//! Runner for `clip_vision` cases: HF `CLIPVisionModel` with `output_hidden_states=True`,
//! plus the LLaVA-1.5 feature (`hidden_states[select_layer]` without CLS).

use candle_core::Tensor;
use unires::config::{ClipVisionConfig, SelectFeature};
use unires::model::vision::ClipVisionModel;

use crate::harness::{numbered, Case, Res};

pub fn run(case: &Case) -> Res<Vec<(String, Tensor)>> {
    let cfg: ClipVisionConfig = serde_json::from_str(&case.config_json()?)?;
    let model = ClipVisionModel::new(&cfg, case.weights()?)?;
    let pixel_values = case.input("pixel_values")?;
    let out = model.forward(&pixel_values)?;
    let mut outputs = numbered("hidden_states", out.hidden_states);
    outputs.push(("last_hidden_state".into(), out.last_hidden_state));
    outputs.push(("pooler_output".into(), out.pooler_output));
    let select_layer = case
        .i64("select_layer")
        .ok_or("fixture has no select_layer")? as i32;
    let features = model.forward_select(&pixel_values, select_layer, SelectFeature::Patch)?;
    outputs.push(("llava_features".into(), features));
    Ok(outputs)
}
