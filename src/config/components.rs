//! The per-component schemas of `config.json`: vision tower, ConvNeXt, region tokens, LLaMA
//! decoder, SAM mask decoder, special tokens, chat template and input limits.

use serde::{Deserialize, Serialize};

use super::wire::LlamaConfigWire;

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
    /// The region tokens attend to each other in the LLM (every position from the first to
    /// the last region token sees that whole span), so that a region's state can hold how it
    /// compares with the others ("the leftmost car"); all other attention stays causal.
    /// `false` (the default, and UniRES++'s LLM): causal everywhere.
    #[serde(default)]
    pub bidirectional_regions: bool,
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

pub(super) fn default_low_freq_factor() -> f64 {
    1.0
}
pub(super) fn default_high_freq_factor() -> f64 {
    4.0
}
pub(super) fn default_original_max_position() -> usize {
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

/// Input limits checked before any work is done (fields missing from `config.json` take the
/// defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Smallest image side (8).
    pub min_side: u32,
    /// Largest image side (16 384).
    pub max_side: u32,
    /// Most pixels of an image (64 Mi).
    pub max_pixels: u64,
    /// Longest referring expression, in characters after trimming (512).
    pub max_expression_chars: usize,
    /// Largest encoded image, file or in-memory bytes (256 MiB: a 64-Mpixel image as an
    /// uncompressed 24-bit BMP is 192 MiB), checked before it is read whole.
    pub max_image_bytes: u64,
    /// Largest boxes JSON file (16 MiB, some 400 000 boxes), checked before it is read whole.
    pub max_boxes_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            min_side: 8,
            max_side: 16384,
            max_pixels: 64 * 1024 * 1024,
            max_expression_chars: 512,
            max_image_bytes: 256 << 20,
            max_boxes_bytes: 16 << 20,
        }
    }
}
