//! Runner for `llama` cases: HF `LlamaForCausalLM(inputs_embeds=…, output_hidden_states=True)`.
//! With a `prefill_split` attribute the sequence is fed in two chunks through the KV cache
//! and the chunk outputs are concatenated before comparison.

use candle_core::Tensor;
use unires::config::LlamaConfig;
use unires::model::llm::{Llama, LlamaOutput};

use crate::harness::{numbered, Case, Res};

pub fn run(case: &Case) -> Res<Vec<(String, Tensor)>> {
    let cfg: LlamaConfig = serde_json::from_str(&case.config_json()?)?;
    let model = Llama::new(&cfg, case.weights()?)?;
    let embeds = case.input("inputs_embeds")?;
    let selected: Vec<u32> = case
        .get("selected_ids")?
        .to_vec1::<i64>()?
        .into_iter()
        .map(|i| i as u32)
        .collect();
    let mut cache = model.new_cache();
    let out = match case.i64("prefill_split") {
        None => model.forward_hidden_states(&embeds, &mut cache)?,
        Some(split) => {
            let split = split as usize;
            let s = embeds.dim(1)?;
            let a = model.forward_hidden_states(&embeds.narrow(1, 0, split)?, &mut cache)?;
            let b =
                model.forward_hidden_states(&embeds.narrow(1, split, s - split)?, &mut cache)?;
            if cache.len() != s {
                return Err(format!("cache holds {} positions, expected {s}", cache.len()).into());
            }
            let cat = |x: &Tensor, y: &Tensor| Tensor::cat(&[x, y], 1);
            LlamaOutput {
                hidden_states: a
                    .hidden_states
                    .iter()
                    .zip(&b.hidden_states)
                    .map(|(x, y)| cat(x, y))
                    .collect::<candle_core::Result<_>>()?,
                last_hidden_state: cat(&a.last_hidden_state, &b.last_hidden_state)?,
            }
        }
    };
    // The plain forward returns the same final-norm states as the hidden-states variant.
    let plain = model.forward(&embeds, &mut model.new_cache())?;
    let mut outputs = numbered("hidden_states", out.hidden_states);
    outputs.push(("logits".into(), model.logits(&out.last_hidden_state)?));
    outputs.push((
        "logits_selected".into(),
        model.logits_for(&plain, &selected)?,
    ));
    outputs.push(("last_hidden_state".into(), out.last_hidden_state));
    Ok(outputs)
}
