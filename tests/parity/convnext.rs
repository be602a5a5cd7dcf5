//! Runner for `convnext` cases: HF `ConvNextModel` with `output_hidden_states=True`.

use candle_core::Tensor;
use unires::config::ConvNextConfig;
use unires::model::hires::ConvNextModel;

use crate::harness::{numbered, Case, Res};

pub fn run(case: &Case) -> Res<Vec<(String, Tensor)>> {
    let cfg: ConvNextConfig = serde_json::from_str(&case.config_json()?)?;
    let model = ConvNextModel::new(&cfg, case.weights()?)?;
    let pixel_values = case.input("pixel_values")?;
    let out = model.forward_all(&pixel_values)?;
    // The plain forward must give the same stage maps as HF's hidden_states[1..].
    let stages = model.forward(&pixel_values)?;
    if stages.len() + 1 != out.hidden_states.len() {
        return Err("forward and forward_all disagree on the number of stages".into());
    }
    let stem = out.hidden_states.into_iter().take(1);
    let mut outputs = numbered("hidden_states", stem.chain(stages).collect());
    outputs.push(("last_hidden_state".into(), out.last_hidden_state));
    outputs.push(("pooler_output".into(), out.pooler_output));
    Ok(outputs)
}
