//! The literal `tiny` and `base` presets, and the CLIP normalisation constants they use.

use super::{
    Activation, ClipVisionConfig, ConvNextConfig, DecoderConfig, HiresConfig, HiresPad, Limits,
    LlamaConfig, PromptConfig, RegionConfig, SamMaskDecoderConfig, SelectFeature, TokensConfig,
    UniResConfig, VisionConfig, CONFIG_VERSION,
};
use crate::error::{Error, Result};

/// OpenAI CLIP normalisation constants.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)] // the published values, digit for digit
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

impl UniResConfig {
    /// The `tiny` preset: a few MB, trained on the synthetic benchmark; the embedded default.
    pub fn tiny() -> Self {
        Self {
            version: CONFIG_VERSION,
            name: "tiny".into(),
            vision: VisionConfig {
                clip: ClipVisionConfig {
                    hidden_size: 96,
                    intermediate_size: 384,
                    num_hidden_layers: 3,
                    num_attention_heads: 4,
                    num_channels: 3,
                    image_size: 64,
                    patch_size: 8,
                    hidden_act: Activation::QuickGelu,
                    layer_norm_eps: 1e-5,
                },
                select_layer: -2,
                select_feature: SelectFeature::Patch,
            },
            hires: HiresConfig {
                convnext: ConvNextConfig {
                    num_channels: 3,
                    patch_size: 4,
                    hidden_sizes: vec![32, 48, 96],
                    depths: vec![1, 1, 2],
                    hidden_act: Activation::Gelu,
                    layer_norm_eps: 1e-6,
                    layer_scale_init_value: 1e-6,
                },
                image_size: 160,
                pad: HiresPad::Square,
            },
            region: RegionConfig {
                levels: vec![0, 1],
                dim: 48,
                pool_size: 4,
                sampling_ratio: 2,
                aligned: true,
                box_freqs: 8,
                max_objects: 16,
                max_parts: 32,
                select_dim: 64,
                single_target_softmax: true,
                bidirectional_regions: false,
            },
            llm: LlamaConfig {
                vocab_size: 128,
                hidden_size: 128,
                intermediate_size: 352,
                num_hidden_layers: 4,
                num_attention_heads: 4,
                num_key_value_heads: Some(2),
                head_dim: None,
                hidden_act: Activation::Silu,
                max_position_embeddings: 512,
                rms_norm_eps: 1e-5,
                rope_theta: 10000.0,
                rope_scaling: None,
                attention_bias: false,
                mlp_bias: false,
                tie_word_embeddings: false,
            },
            decoder: DecoderConfig {
                sam: SamMaskDecoderConfig {
                    hidden_size: 64,
                    hidden_act: Activation::Relu,
                    mlp_dim: 256,
                    num_hidden_layers: 2,
                    num_attention_heads: 4,
                    attention_downsample_rate: 2,
                    num_multimask_outputs: 2,
                    iou_head_depth: 3,
                    iou_head_hidden_dim: 64,
                    layer_norm_eps: 1e-6,
                },
                dense_level: 2,
                skip_levels: vec![1, 0],
            },
            tokens: TokensConfig::default(),
            prompt: PromptConfig {
                system: String::new(),
                user: "USER: <image> {regions} please segment {expression} .".into(),
                assistant: "ASSISTANT:".into(),
                add_bos: true,
            },
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
            no_target_threshold: 0.5,
            instance_threshold: 0.5,
            limits: Limits::default(),
        }
    }

    /// The `base` preset: paper scale (ViT-L/14-336, ConvNeXt-L at 768, Vicuna-7B, 256-wide
    /// decoder). No trained weights exist for it (see weights.md).
    pub fn base() -> Self {
        Self {
            version: CONFIG_VERSION,
            name: "base".into(),
            vision: VisionConfig {
                clip: ClipVisionConfig {
                    hidden_size: 1024,
                    intermediate_size: 4096,
                    num_hidden_layers: 24,
                    num_attention_heads: 16,
                    num_channels: 3,
                    image_size: 336,
                    patch_size: 14,
                    hidden_act: Activation::QuickGelu,
                    layer_norm_eps: 1e-5,
                },
                select_layer: -2,
                select_feature: SelectFeature::Patch,
            },
            hires: HiresConfig {
                convnext: ConvNextConfig {
                    num_channels: 3,
                    patch_size: 4,
                    hidden_sizes: vec![192, 384, 768, 1536],
                    depths: vec![3, 3, 27, 3],
                    hidden_act: Activation::Gelu,
                    layer_norm_eps: 1e-6,
                    layer_scale_init_value: 1e-6,
                },
                image_size: 768,
                pad: HiresPad::Square,
            },
            region: RegionConfig {
                levels: vec![1, 2],
                dim: 256,
                pool_size: 4,
                sampling_ratio: 2,
                aligned: true,
                box_freqs: 16,
                max_objects: 16,
                max_parts: 32,
                select_dim: 256,
                single_target_softmax: true,
                bidirectional_regions: false,
            },
            llm: LlamaConfig {
                vocab_size: 32007,
                hidden_size: 4096,
                intermediate_size: 11008,
                num_hidden_layers: 32,
                num_attention_heads: 32,
                num_key_value_heads: Some(32),
                head_dim: None,
                hidden_act: Activation::Silu,
                max_position_embeddings: 4096,
                rms_norm_eps: 1e-5,
                rope_theta: 10000.0,
                rope_scaling: None,
                attention_bias: false,
                mlp_bias: false,
                tie_word_embeddings: false,
            },
            decoder: DecoderConfig {
                sam: SamMaskDecoderConfig {
                    hidden_size: 256,
                    hidden_act: Activation::Relu,
                    mlp_dim: 2048,
                    num_hidden_layers: 2,
                    num_attention_heads: 8,
                    attention_downsample_rate: 2,
                    num_multimask_outputs: 2,
                    iou_head_depth: 3,
                    iou_head_hidden_dim: 256,
                    layer_norm_eps: 1e-6,
                },
                dense_level: 2,
                skip_levels: vec![1, 0],
            },
            tokens: TokensConfig::default(),
            prompt: PromptConfig {
                system: "A chat between a curious human and an artificial intelligence assistant. \
                         The assistant gives helpful, detailed, and polite answers to the human's questions."
                    .into(),
                user: "USER: <image>\n{regions}\nPlease segment {expression}.".into(),
                assistant: "ASSISTANT:".into(),
                add_bos: true,
            },
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
            no_target_threshold: 0.5,
            instance_threshold: 0.5,
            limits: Limits::default(),
        }
    }

    /// A preset by name (`tiny`, `base`).
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "tiny" => Ok(Self::tiny()),
            "base" => Ok(Self::base()),
            other => Err(Error::Config {
                what: "preset".into(),
                reason: format!("unknown preset {other:?} (known: tiny, base)"),
            }),
        }
    }
}
