//! `config.json`: the serde schema of a unires checkpoint, and the `tiny` / `base` presets.
//!
//! Component configs use the field names of the reference implementations' own configs
//! (HF `CLIPVisionConfig`, `ConvNextConfig`, `LlamaConfig`, `SamMaskDecoderConfig`), so a
//! reference `config.json` deserialises into them directly; fields unknown to us are ignored
//! and missing ones take the reference defaults.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The schema version this build reads and writes.
pub const CONFIG_VERSION: u32 = 1;

/// Activation functions named as HF configs name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// Exact GELU with `erf` (PyTorch `nn.GELU()`).
    Gelu,
    /// tanh-approximated GELU.
    #[serde(alias = "gelu_new", alias = "gelu_fast")]
    GeluPytorchTanh,
    Relu,
    Silu,
}

// ------------------------------------------------------------------------------------- vision

/// CLIP vision tower (HF `CLIPVisionConfig` fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    /// HF's defaults (ViT-B/32).
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

/// Which tokens of the selected layer become image features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectFeature {
    /// Patch tokens only (CLS dropped), as LLaVA-1.5.
    Patch,
    /// CLS and patch tokens.
    ClsPatch,
}

/// The low-resolution path: CLIP ViT and LLaVA-style feature selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    #[serde(flatten)]
    pub clip: ClipVisionConfig,
    /// Index into HF's `hidden_states` (embeddings output first); negative counts from the end.
    pub select_layer: i32,
    pub select_feature: SelectFeature,
}

// ------------------------------------------------------------------------------------- hi-res

/// ConvNeXt (HF `ConvNextConfig` fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConvNextConfig {
    pub num_channels: usize,
    pub patch_size: usize,
    pub hidden_sizes: Vec<usize>,
    pub depths: Vec<usize>,
    pub hidden_act: Activation,
    /// Used by HF only for the final pooled LayerNorm; the blocks use 1e-6.
    pub layer_norm_eps: f64,
    pub layer_scale_init_value: f64,
}

impl Default for ConvNextConfig {
    /// HF's defaults (ConvNeXt-T).
    fn default() -> Self {
        Self {
            num_channels: 3,
            patch_size: 4,
            hidden_sizes: vec![96, 192, 384, 768],
            depths: vec![3, 3, 9, 3],
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-12,
            layer_scale_init_value: 1e-6,
        }
    }
}

/// How the resized high-resolution image is padded (bottom/right, with the mean colour).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "multiple")]
pub enum HiresPad {
    /// Pad to `image_size × image_size`.
    Square,
    /// Variable resolution: pad each side up to a multiple of the given number.
    MultipleOf(usize),
}

/// The high-resolution path: ConvNeXt on the image resized so its longest side is `image_size`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HiresConfig {
    #[serde(flatten)]
    pub convnext: ConvNextConfig,
    /// Longest side after resizing.
    pub image_size: usize,
    pub pad: HiresPad,
}

// ------------------------------------------------------------------------------------- regions

/// Region tokens: ROI-Align-pooled object/part features (GLaMM-style region encoder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionConfig {
    /// ConvNeXt stages (0 = stride 4, 1 = stride 8, 2 = stride 16, 3 = stride 32) to pool from.
    pub levels: Vec<usize>,
    /// Width each level is projected to (1×1 conv) before pooling.
    pub dim: usize,
    /// ROI Align output is `pool_size × pool_size`.
    pub pool_size: usize,
    /// ROI Align sampling ratio (−1 = adaptive, as torchvision).
    pub sampling_ratio: i32,
    /// ROI Align `aligned` (half-pixel offset).
    pub aligned: bool,
    /// Number of sin/cos frequencies per box coordinate.
    pub box_freqs: usize,
    pub max_objects: usize,
    pub max_parts: usize,
    /// Width of the region-selection space ("dynamic feature exploitation").
    pub select_dim: usize,
    /// For part and object queries (one referent), the box prompts are weighted by a softmax
    /// of the selection logits over the proposals of that kind, so that the proposals compete
    /// (a relation such as "on the left" then only has to rank them); multi-object queries
    /// always use independent sigmoids. `false`: sigmoids for every query.
    #[serde(default)]
    pub single_target_softmax: bool,
}

// ------------------------------------------------------------------------------------- LLM

/// Llama-3 style RoPE frequency scaling (HF `rope_scaling` with `rope_type = "llama3"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    #[serde(alias = "type")]
    pub rope_type: String,
    pub factor: f64,
    #[serde(default = "default_low_freq_factor")]
    pub low_freq_factor: f64,
    #[serde(default = "default_high_freq_factor")]
    pub high_freq_factor: f64,
    #[serde(default = "default_original_max_position")]
    pub original_max_position_embeddings: usize,
}

fn default_low_freq_factor() -> f64 {
    1.0
}
fn default_high_freq_factor() -> f64 {
    4.0
}
fn default_original_max_position() -> usize {
    8192
}

/// LLaMA-family decoder (HF `LlamaConfig` fields).
///
/// Reads both spellings of the RoPE settings: transformers 4's `rope_theta` + `rope_scaling`
/// and transformers 5's `rope_parameters` (`{"rope_type", "rope_theta", "factor", …}`);
/// writes the former.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LlamaConfigWire")]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// `None` means equal to `num_attention_heads` (no grouping).
    pub num_key_value_heads: Option<usize>,
    /// `None` means `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    pub hidden_act: Activation,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub tie_word_embeddings: bool,
}

impl Default for LlamaConfig {
    /// HF's defaults (LLaMA-7B).
    fn default() -> Self {
        Self {
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: None,
            head_dim: None,
            hidden_act: Activation::Silu,
            max_position_embeddings: 2048,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            rope_scaling: None,
            attention_bias: false,
            mlp_bias: false,
            tie_word_embeddings: false,
        }
    }
}

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
struct LlamaConfigWire {
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

impl LlamaConfig {
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }
}

// ------------------------------------------------------------------------------------- decoder

/// SAM mask decoder (HF `SamMaskDecoderConfig` fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamMaskDecoderConfig {
    pub hidden_size: usize,
    pub hidden_act: Activation,
    pub mlp_dim: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub attention_downsample_rate: usize,
    /// The decoder has `num_multimask_outputs + 1` mask tokens.
    pub num_multimask_outputs: usize,
    pub iou_head_depth: usize,
    pub iou_head_hidden_dim: usize,
    pub layer_norm_eps: f64,
}

impl Default for SamMaskDecoderConfig {
    fn default() -> Self {
        Self {
            hidden_size: 256,
            hidden_act: Activation::Relu,
            mlp_dim: 2048,
            num_hidden_layers: 2,
            num_attention_heads: 8,
            attention_downsample_rate: 2,
            num_multimask_outputs: 3,
            iou_head_depth: 3,
            iou_head_hidden_dim: 256,
            layer_norm_eps: 1e-6,
        }
    }
}

/// The mask head: SAM decoder over an FPN fusion of the ConvNeXt features, one mask token per
/// granularity (`num_multimask_outputs = 2` → 3 tokens: part, object, multi).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    #[serde(flatten)]
    pub sam: SamMaskDecoderConfig,
    /// ConvNeXt stage giving the dense (stride-16) embedding.
    pub dense_level: usize,
    /// ConvNeXt stages added during upscaling: first to the ×2 output, then to the ×4 output.
    pub skip_levels: Vec<usize>,
}

// ------------------------------------------------------------------------------------- prompt

/// Special tokens (DESIGN.md): placeholders and the answer tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokensConfig {
    pub image: String,
    pub object: String,
    pub part: String,
    /// Granularity tokens in the order part, object, multi.
    pub granularity: [String; 3],
    pub seg: String,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            image: "<image>".into(),
            object: "<obj>".into(),
            part: "<part>".into(),
            granularity: ["<g_part>".into(), "<g_obj>".into(), "<g_multi>".into()],
            seg: "[SEG]".into(),
        }
    }
}

/// The chat template (Vicuna-v1 style as LLaVA-1.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptConfig {
    /// System text placed before `USER:`; may be empty.
    pub system: String,
    /// The user turn; `{regions}` and `{expression}` are substituted.
    pub user: String,
    /// Text that closes the user turn and opens the answer.
    pub assistant: String,
    /// Whether the tokenizer should add its BOS token.
    pub add_bos: bool,
}

// ------------------------------------------------------------------------------------- limits

/// Input limits checked before any work is done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub min_side: u32,
    pub max_side: u32,
    pub max_pixels: u64,
    pub max_expression_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            min_side: 8,
            max_side: 16384,
            max_pixels: 64 * 1024 * 1024,
            max_expression_chars: 512,
        }
    }
}

// ------------------------------------------------------------------------------------- whole

/// A unires checkpoint's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UniResConfig {
    /// Schema version ([`CONFIG_VERSION`]).
    pub version: u32,
    /// Preset name, informative.
    pub name: String,
    pub vision: VisionConfig,
    pub hires: HiresConfig,
    pub region: RegionConfig,
    pub llm: LlamaConfig,
    pub decoder: DecoderConfig,
    #[serde(default)]
    pub tokens: TokensConfig,
    pub prompt: PromptConfig,
    /// Per-channel RGB mean in [0, 1] (CLIP's), also the padding colour.
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    /// Below this target probability the result is empty ("no target").
    pub no_target_threshold: f32,
    /// Region-selection probability above which an object proposal is an instance.
    pub instance_threshold: f32,
    #[serde(default)]
    pub limits: Limits,
}

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

    /// Parses and validates a `config.json` text.
    pub fn from_json_str(what: &str, s: &str) -> Result<Self> {
        // Read the version first so that a future schema gives a version error, not a
        // confusing field error.
        #[derive(Deserialize)]
        struct Versioned {
            version: Option<u32>,
        }
        let v: Versioned = serde_json::from_str(s).map_err(|e| Error::Config {
            what: what.into(),
            reason: e.to_string(),
        })?;
        match v.version {
            Some(CONFIG_VERSION) => {}
            Some(got) => {
                return Err(Error::UnsupportedConfigVersion {
                    got,
                    supported: CONFIG_VERSION,
                })
            }
            None => {
                return Err(Error::Config {
                    what: what.into(),
                    reason: "missing \"version\" field".into(),
                })
            }
        }
        let cfg: Self = serde_json::from_str(s).map_err(|e| Error::Config {
            what: what.into(),
            reason: e.to_string(),
        })?;
        cfg.validate(what)?;
        Ok(cfg)
    }

    /// Reads and validates a `config.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&path.display().to_string(), &s)
    }

    /// Pretty JSON.
    pub fn to_json_string(&self) -> String {
        // Serialising plain data structs cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks internal consistency (divisibility, level indices, …).
    pub fn validate(&self, what: &str) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::Config {
                what: what.into(),
                reason,
            })
        };
        let v = &self.vision.clip;
        if v.patch_size == 0 || v.image_size % v.patch_size != 0 {
            return bad(format!(
                "vision.image_size {} is not a multiple of patch_size {}",
                v.image_size, v.patch_size
            ));
        }
        if v.num_attention_heads == 0 || v.hidden_size % v.num_attention_heads != 0 {
            return bad("vision.hidden_size is not divisible by num_attention_heads".into());
        }
        let layers = v.num_hidden_layers as i32;
        let sel = self.vision.select_layer;
        if sel > layers || sel < -(layers + 1) {
            return bad(format!(
                "vision.select_layer {sel} is outside the {} hidden states",
                layers + 1
            ));
        }
        let c = &self.hires.convnext;
        if c.hidden_sizes.len() != c.depths.len() || c.depths.is_empty() {
            return bad("hires.hidden_sizes and hires.depths differ in length".into());
        }
        let stages = c.depths.len();
        for &l in self
            .region
            .levels
            .iter()
            .chain(self.decoder.skip_levels.iter())
            .chain(std::iter::once(&self.decoder.dense_level))
        {
            if l >= stages {
                return bad(format!("feature level {l} but hires has {stages} stages"));
            }
        }
        if self.decoder.skip_levels.len() > 2 {
            return bad("decoder.skip_levels holds at most two levels".into());
        }
        let l = &self.llm;
        if l.num_attention_heads == 0 || l.num_attention_heads % l.kv_heads().max(1) != 0 {
            return bad("llm.num_attention_heads is not a multiple of num_key_value_heads".into());
        }
        let d = &self.decoder.sam;
        if d.num_attention_heads == 0 || d.hidden_size % d.num_attention_heads != 0 {
            return bad("decoder.hidden_size is not divisible by num_attention_heads".into());
        }
        if d.num_multimask_outputs + 1 != 3 {
            return bad(
                "decoder.num_multimask_outputs must be 2 (one mask token per granularity)".into(),
            );
        }
        if self.region.levels.is_empty() || self.region.pool_size == 0 {
            return bad("region.levels must not be empty and pool_size must be > 0".into());
        }
        if self.image_std.iter().any(|&s| s <= 0.0) {
            return bad("image_std must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_round_trip_through_json() {
        for cfg in [UniResConfig::tiny(), UniResConfig::base()] {
            let s = cfg.to_json_string();
            let back = UniResConfig::from_json_str("test", &s).unwrap();
            assert_eq!(back, cfg);
        }
    }

    #[test]
    fn unknown_version_is_a_typed_error() {
        let mut v: serde_json::Value =
            serde_json::from_str(&UniResConfig::tiny().to_json_string()).unwrap();
        v["version"] = 99.into();
        let err = UniResConfig::from_json_str("t", &v.to_string()).unwrap_err();
        assert!(matches!(
            err,
            Error::UnsupportedConfigVersion { got: 99, .. }
        ));
    }

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
