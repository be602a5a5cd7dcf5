//! Wire compatibility: [`LlamaConfig`] as found on disk, where transformers 4 and 5 spell the
//! RoPE settings differently, and its conversion into the merged schema.

use serde::Deserialize;

use super::components::{
    default_high_freq_factor, default_low_freq_factor, default_original_max_position, Activation,
    LlamaConfig, RopeScaling,
};

/// transformers 5's `rope_parameters`: theta and scaling in one object.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct RopeParameters {
    #[serde(alias = "type")]
    rope_type: Option<String>,
    rope_theta: Option<f64>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<usize>,
}

/// [`LlamaConfig`] as found on disk, before the RoPE spellings are merged.
#[derive(Deserialize)]
#[serde(default)]
pub(super) struct LlamaConfigWire {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    hidden_act: Activation,
    max_position_embeddings: usize,
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<RopeScaling>,
    rope_parameters: Option<RopeParameters>,
    attention_bias: bool,
    mlp_bias: bool,
    tie_word_embeddings: bool,
}

impl Default for LlamaConfigWire {
    fn default() -> Self {
        let d = LlamaConfig::default();
        Self {
            vocab_size: d.vocab_size,
            hidden_size: d.hidden_size,
            intermediate_size: d.intermediate_size,
            num_hidden_layers: d.num_hidden_layers,
            num_attention_heads: d.num_attention_heads,
            num_key_value_heads: d.num_key_value_heads,
            head_dim: d.head_dim,
            hidden_act: d.hidden_act,
            max_position_embeddings: d.max_position_embeddings,
            rms_norm_eps: d.rms_norm_eps,
            rope_theta: None,
            rope_scaling: None,
            rope_parameters: None,
            attention_bias: d.attention_bias,
            mlp_bias: d.mlp_bias,
            tie_word_embeddings: d.tie_word_embeddings,
        }
    }
}

impl TryFrom<LlamaConfigWire> for LlamaConfig {
    type Error = String;

    fn try_from(w: LlamaConfigWire) -> std::result::Result<Self, String> {
        let rp = w.rope_parameters.unwrap_or_default();
        let rope_theta = rp
            .rope_theta
            .or(w.rope_theta)
            .unwrap_or(LlamaConfig::default().rope_theta);
        let rope_scaling = match (w.rope_scaling, rp.rope_type) {
            (Some(s), _) => Some(s),
            (None, None) => None,
            (None, Some(t)) if t == "default" => None,
            (None, Some(t)) => Some(RopeScaling {
                factor: rp
                    .factor
                    .ok_or_else(|| format!("rope_parameters of type {t:?} need a \"factor\""))?,
                rope_type: t,
                low_freq_factor: rp.low_freq_factor.unwrap_or_else(default_low_freq_factor),
                high_freq_factor: rp.high_freq_factor.unwrap_or_else(default_high_freq_factor),
                original_max_position_embeddings: rp
                    .original_max_position_embeddings
                    .unwrap_or_else(default_original_max_position),
            }),
        };
        Ok(Self {
            vocab_size: w.vocab_size,
            hidden_size: w.hidden_size,
            intermediate_size: w.intermediate_size,
            num_hidden_layers: w.num_hidden_layers,
            num_attention_heads: w.num_attention_heads,
            num_key_value_heads: w.num_key_value_heads,
            head_dim: w.head_dim,
            hidden_act: w.hidden_act,
            max_position_embeddings: w.max_position_embeddings,
            rms_norm_eps: w.rms_norm_eps,
            rope_theta,
            rope_scaling,
            attention_bias: w.attention_bias,
            mlp_bias: w.mlp_bias,
            tie_word_embeddings: w.tie_word_embeddings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_configs_deserialize_with_reference_defaults() {
        let c: LlamaConfig = serde_json::from_str(
            r#"{"hidden_size": 64, "num_attention_heads": 4, "model_type": "llama",
                "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}"#,
        )
        .unwrap();
        assert_eq!(c.head_dim(), 16);
        assert_eq!(c.kv_heads(), 4);
        assert_eq!(c.rope_scaling.unwrap().high_freq_factor, 4.0);
    }

    #[test]
    fn transformers5_rope_parameters_are_read() {
        let c: LlamaConfig = serde_json::from_str(
            r#"{"hidden_size": 64, "num_attention_heads": 4,
                "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0,
                    "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 64}}"#,
        )
        .unwrap();
        assert_eq!(c.rope_theta, 500000.0);
        let s = c.rope_scaling.clone().unwrap();
        assert_eq!((s.rope_type.as_str(), s.factor), ("llama3", 8.0));
        assert_eq!(s.original_max_position_embeddings, 64);
        let back: LlamaConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);

        let d: LlamaConfig = serde_json::from_str(
            r#"{"rope_parameters": {"rope_type": "default", "rope_theta": 1234.0}}"#,
        )
        .unwrap();
        assert_eq!((d.rope_theta, d.rope_scaling), (1234.0, None));
        let bad =
            serde_json::from_str::<LlamaConfig>(r#"{"rope_parameters": {"rope_type": "linear"}}"#);
        assert!(bad.is_err());
    }
}
