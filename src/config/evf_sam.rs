//! The EVF-SAM family's `config.json` and the shapes of its two towers.
//!
//! A published EVF-SAM `config.json` names its towers by scale only
//! (`"mm_extractor_scale": "large"`, `"sam_scale": "huge"`); the sizes behind those names are
//! the presets here, taken from the reference builders (torchscale's `EncoderConfig` as
//! EVF-SAM's `_get_large_config` fills it; segment-anything's `build_sam_vit_h`). A config may
//! instead spell a tower out under `"beit3"`, `"sam_image_encoder"` and `"sam_decoder"` (unires
//! extensions, absent from published files): the small random models of the parity suite do.
//! Field names are the reference's own argument names.

use serde::{Deserialize, Serialize};

use super::components::{Activation, SamMaskDecoderConfig};
use crate::error::{Error, Result};

/// SAM's ViT image encoder (segment-anything `ImageEncoderViT` arguments).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamImageEncoderConfig {
    /// Side of the square input (the image is resized and padded to it).
    pub img_size: usize,
    pub patch_size: usize,
    pub in_chans: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    /// Channels of the neck's output (the mask decoder's width).
    pub out_chans: usize,
    pub qkv_bias: bool,
    pub use_abs_pos: bool,
    pub use_rel_pos: bool,
    /// Side of the attention windows; 0 means global attention everywhere.
    pub window_size: usize,
    /// Blocks that attend globally instead of within windows.
    pub global_attn_indexes: Vec<usize>,
    /// LayerNorm epsilon of the blocks (the neck's LayerNorm2d always uses 1e-6).
    pub layer_norm_eps: f64,
}

impl Default for SamImageEncoderConfig {
    fn default() -> Self {
        Self::vit_h()
    }
}

impl SamImageEncoderConfig {
    fn sam(embed_dim: usize, depth: usize, num_heads: usize, global: [usize; 4]) -> Self {
        Self {
            img_size: 1024,
            patch_size: 16,
            in_chans: 3,
            embed_dim,
            depth,
            num_heads,
            mlp_ratio: 4.0,
            out_chans: 256,
            qkv_bias: true,
            use_abs_pos: true,
            use_rel_pos: true,
            window_size: 14,
            global_attn_indexes: global.to_vec(),
            layer_norm_eps: 1e-6,
        }
    }

    /// SAM ViT-B (`build_sam_vit_b`).
    pub fn vit_b() -> Self {
        Self::sam(768, 12, 12, [2, 5, 8, 11])
    }

    /// SAM ViT-L (`build_sam_vit_l`).
    pub fn vit_l() -> Self {
        Self::sam(1024, 24, 16, [5, 11, 17, 23])
    }

    /// SAM ViT-H (`build_sam_vit_h`), the one EVF-SAM uses.
    pub fn vit_h() -> Self {
        Self::sam(1280, 32, 16, [7, 15, 23, 31])
    }

    /// The preset for a `sam_scale` name (`base`, `large`, `huge`).
    pub fn for_scale(scale: &str) -> Option<Self> {
        match scale {
            "base" | "vit_b" => Some(Self::vit_b()),
            "large" | "vit_l" => Some(Self::vit_l()),
            "huge" | "vit_h" => Some(Self::vit_h()),
            _ => None,
        }
    }

    /// Side of the patch grid (the image embedding is `grid × grid`).
    pub fn grid(&self) -> usize {
        self.img_size / self.patch_size.max(1)
    }

    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads.max(1)
    }

    pub fn mlp_dim(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }

    pub fn validate(&self, what: &str) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::Config {
                what: what.into(),
                reason: format!("sam_image_encoder: {reason}"),
            })
        };
        if self.patch_size == 0 || self.img_size == 0 || self.img_size % self.patch_size != 0 {
            return bad(format!(
                "img_size {} must be a positive multiple of patch_size {}",
                self.img_size, self.patch_size
            ));
        }
        if self.num_heads == 0 || self.embed_dim == 0 || self.embed_dim % self.num_heads != 0 {
            return bad(format!(
                "embed_dim {} must be a positive multiple of num_heads {}",
                self.embed_dim, self.num_heads
            ));
        }
        if self.depth == 0 || self.out_chans == 0 || self.in_chans == 0 {
            return bad("depth, out_chans and in_chans must be positive".into());
        }
        if let Some(i) = self.global_attn_indexes.iter().find(|&&i| i >= self.depth) {
            return bad(format!(
                "global_attn_indexes has {i}, beyond depth {}",
                self.depth
            ));
        }
        if self.mlp_ratio.is_nan() || self.mlp_dim() == 0 {
            return bad(format!("mlp_ratio {} gives no MLP width", self.mlp_ratio));
        }
        Ok(())
    }
}

/// BEiT-3 (the torchscale `EncoderConfig` fields that EVF-SAM's builders set or rely on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Beit3Config {
    pub encoder_embed_dim: usize,
    pub encoder_attention_heads: usize,
    pub encoder_ffn_embed_dim: usize,
    pub encoder_layers: usize,
    /// Side of the square vision input.
    pub img_size: usize,
    pub patch_size: usize,
    pub in_chans: usize,
    pub vocab_size: usize,
    /// Text positions (the language copy of the position table).
    pub max_source_positions: usize,
    pub layernorm_eps: f64,
    /// Every linear and LayerNorm has a vision (`A`) and a language (`B`) copy.
    pub multiway: bool,
    /// A final (multiway) LayerNorm after the last layer.
    pub normalize_output: bool,
    /// Sub-LayerNorms before the attention output projection and before `fc2`.
    pub subln: bool,
    /// Pre-LN layers.
    pub encoder_normalize_before: bool,
    /// Without it the token embeddings are scaled by √d.
    pub no_scale_embedding: bool,
    /// A LayerNorm over the embeddings (EVF-SAM: off).
    pub layernorm_embedding: bool,
    pub activation_fn: Activation,
}

impl Default for Beit3Config {
    fn default() -> Self {
        Self::large()
    }
}

impl Beit3Config {
    fn beit3(width: usize, heads: usize, layers: usize) -> Self {
        Self {
            encoder_embed_dim: width,
            encoder_attention_heads: heads,
            encoder_ffn_embed_dim: width * 4,
            encoder_layers: layers,
            img_size: 224,
            patch_size: 16,
            in_chans: 3,
            vocab_size: 64010,
            max_source_positions: 1024,
            layernorm_eps: 1e-5,
            multiway: true,
            normalize_output: true,
            subln: true,
            encoder_normalize_before: true,
            no_scale_embedding: true,
            layernorm_embedding: false,
            activation_fn: Activation::Gelu,
        }
    }

    /// BEiT-3 base (`_get_base_config`).
    pub fn base() -> Self {
        Self::beit3(768, 12, 12)
    }

    /// BEiT-3 large (`_get_large_config`), the one EVF-SAM uses.
    pub fn large() -> Self {
        Self::beit3(1024, 16, 24)
    }

    /// The preset for an `mm_extractor_scale` name (`base`, `large`).
    pub fn for_scale(scale: &str) -> Option<Self> {
        match scale {
            "base" => Some(Self::base()),
            "large" => Some(Self::large()),
            _ => None,
        }
    }

    /// Patches of the vision input.
    pub fn num_patches(&self) -> usize {
        let g = self.img_size / self.patch_size.max(1);
        g * g
    }

    /// Vision tokens: CLS and the patches (where the language copies take over).
    pub fn vision_tokens(&self) -> usize {
        self.num_patches() + 1
    }

    /// The longest text (with `<s>` and `</s>`) the position table holds.
    pub fn max_text_tokens(&self) -> usize {
        self.max_source_positions.saturating_sub(2)
    }

    pub fn head_dim(&self) -> usize {
        self.encoder_embed_dim / self.encoder_attention_heads.max(1)
    }

    pub fn validate(&self, what: &str) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::Config {
                what: what.into(),
                reason: format!("beit3: {reason}"),
            })
        };
        let d = self.encoder_embed_dim;
        let h = self.encoder_attention_heads;
        if h == 0 || d == 0 || d % h != 0 {
            return bad(format!(
                "encoder_embed_dim {d} must be a positive multiple of encoder_attention_heads {h}"
            ));
        }
        if self.patch_size == 0 || self.img_size % self.patch_size != 0 || self.img_size == 0 {
            return bad(format!(
                "img_size {} must be a positive multiple of patch_size {}",
                self.img_size, self.patch_size
            ));
        }
        if self.encoder_layers == 0 || self.encoder_ffn_embed_dim == 0 || self.vocab_size == 0 {
            return bad(
                "encoder_layers, encoder_ffn_embed_dim and vocab_size must be positive".into(),
            );
        }
        if self.max_source_positions < 3 {
            return bad("max_source_positions must leave room for <s>, a token and </s>".into());
        }
        if !(self.multiway && self.subln && self.encoder_normalize_before)
            || self.layernorm_embedding
        {
            return bad(
                "only the BEiT-3 layout EVF-SAM uses is supported (multiway, subln, pre-LN, no \
                 embedding LayerNorm)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// SAM's prompt encoder and mask decoder (segment-anything `_build_sam` constants).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamDecoderSpec {
    /// Width of prompts, image embedding and decoder (`prompt_embed_dim`).
    pub prompt_embed_dim: usize,
    pub depth: usize,
    pub mlp_dim: usize,
    pub num_heads: usize,
    pub num_multimask_outputs: usize,
    pub iou_head_depth: usize,
    pub iou_head_hidden_dim: usize,
    /// Channels of the mask-prompt path (present in checkpoints, unused by EVF-SAM).
    pub mask_in_chans: usize,
}

impl Default for SamDecoderSpec {
    fn default() -> Self {
        Self {
            prompt_embed_dim: 256,
            depth: 2,
            mlp_dim: 2048,
            num_heads: 8,
            num_multimask_outputs: 3,
            iou_head_depth: 3,
            iou_head_hidden_dim: 256,
            mask_in_chans: 16,
        }
    }
}

impl SamDecoderSpec {
    /// The same decoder in the HF-shaped config our mask decoder reads.
    pub fn mask_decoder(&self) -> SamMaskDecoderConfig {
        SamMaskDecoderConfig {
            hidden_size: self.prompt_embed_dim,
            hidden_act: Activation::Relu,
            mlp_dim: self.mlp_dim,
            num_hidden_layers: self.depth,
            num_attention_heads: self.num_heads,
            attention_downsample_rate: 2,
            num_multimask_outputs: self.num_multimask_outputs,
            iou_head_depth: self.iou_head_depth,
            iou_head_hidden_dim: self.iou_head_hidden_dim,
            // segment-anything's two-way transformer uses `nn.LayerNorm`'s default eps (1e-5);
            // HF's port, whose names our decoder uses, defaults to 1e-6.
            layer_norm_eps: 1e-5,
        }
    }
}

/// An EVF-SAM checkpoint's `config.json` (published fields, plus the optional explicit towers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvfSamConfig {
    /// BEiT-3 width (the projection's input).
    pub hidden_size: usize,
    /// The projection's output: one sparse prompt token for SAM.
    pub out_dim: usize,
    /// `base` or `large` (BEiT-3).
    pub mm_extractor_scale: String,
    /// `base`, `large` or `huge` (SAM ViT).
    pub sam_scale: String,
    /// The dtype the weights were saved in (informative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beit3: Option<Beit3Config>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sam_image_encoder: Option<SamImageEncoderConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sam_decoder: Option<SamDecoderSpec>,
}

impl EvfSamConfig {
    /// The published `YxZhang/evf-sam` configuration (BEiT-3 large, SAM ViT-H).
    pub fn published() -> Self {
        Self {
            hidden_size: 1024,
            out_dim: 256,
            mm_extractor_scale: "large".into(),
            sam_scale: "huge".into(),
            torch_dtype: Some("float16".into()),
            beit3: None,
            sam_image_encoder: None,
            sam_decoder: None,
        }
    }

    /// Parses and validates a `config.json` text.
    pub fn from_json_str(what: &str, s: &str) -> Result<Self> {
        let cfg: Self = serde_json::from_str(s).map_err(|e| Error::Config {
            what: what.into(),
            reason: e.to_string(),
        })?;
        cfg.validate(what)?;
        Ok(cfg)
    }

    /// The BEiT-3 tower: explicit, else the preset of `mm_extractor_scale`.
    pub fn beit3(&self, what: &str) -> Result<Beit3Config> {
        match &self.beit3 {
            Some(b) => Ok(b.clone()),
            None => Beit3Config::for_scale(&self.mm_extractor_scale).ok_or_else(|| Error::Config {
                what: what.into(),
                reason: format!(
                    "mm_extractor_scale {:?} is not a BEiT-3 size (known: base, large)",
                    self.mm_extractor_scale
                ),
            }),
        }
    }

    /// The SAM image encoder: explicit, else the preset of `sam_scale`.
    pub fn sam_image_encoder(&self, what: &str) -> Result<SamImageEncoderConfig> {
        match &self.sam_image_encoder {
            Some(s) => Ok(s.clone()),
            None => {
                SamImageEncoderConfig::for_scale(&self.sam_scale).ok_or_else(|| Error::Config {
                    what: what.into(),
                    reason: format!(
                        "sam_scale {:?} is not a SAM ViT size (known: base, large, huge)",
                        self.sam_scale
                    ),
                })
            }
        }
    }

    /// SAM's prompt encoder and mask decoder.
    pub fn sam_decoder(&self) -> SamDecoderSpec {
        self.sam_decoder.clone().unwrap_or_default()
    }

    pub fn validate(&self, what: &str) -> Result<()> {
        let beit = self.beit3(what)?;
        beit.validate(what)?;
        let enc = self.sam_image_encoder(what)?;
        enc.validate(what)?;
        let dec = self.sam_decoder();
        let bad = |reason: String| {
            Err(Error::Config {
                what: what.into(),
                reason,
            })
        };
        if self.hidden_size != beit.encoder_embed_dim {
            return bad(format!(
                "hidden_size {} differs from the BEiT-3 width {}",
                self.hidden_size, beit.encoder_embed_dim
            ));
        }
        if self.out_dim != dec.prompt_embed_dim || enc.out_chans != dec.prompt_embed_dim {
            return bad(format!(
                "out_dim {}, the image encoder's out_chans {} and the decoder width {} must agree",
                self.out_dim, enc.out_chans, dec.prompt_embed_dim
            ));
        }
        let d = dec.prompt_embed_dim;
        if dec.num_heads == 0 || d % dec.num_heads != 0 || d % 8 != 0 || d < 2 {
            return bad(format!(
                "decoder width {d} must be a multiple of its {} heads and of 8",
                dec.num_heads
            ));
        }
        if dec.depth == 0 || dec.iou_head_depth < 2 {
            return bad("the mask decoder needs depth ≥ 1 and iou_head_depth ≥ 2".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_config_resolves_to_large_and_huge() {
        let text = r#"{"architectures": ["EvfSamModel"], "hidden_size": 1024, "out_dim": 256,
            "mm_extractor_scale": "large", "sam_scale": "huge", "torch_dtype": "float16",
            "model_type": "evf", "pad_token_id": 1}"#;
        let cfg = EvfSamConfig::from_json_str("t", text).unwrap();
        let b = cfg.beit3("t").unwrap();
        assert_eq!(
            (b.encoder_embed_dim, b.encoder_layers, b.vision_tokens()),
            (1024, 24, 197)
        );
        let s = cfg.sam_image_encoder("t").unwrap();
        assert_eq!((s.embed_dim, s.depth, s.grid()), (1280, 32, 64));
        assert_eq!(s.global_attn_indexes, vec![7, 15, 23, 31]);
    }

    #[test]
    fn mismatched_widths_are_config_errors() {
        let mut cfg = EvfSamConfig::published();
        cfg.hidden_size = 768;
        assert!(matches!(cfg.validate("t"), Err(Error::Config { .. })));
        let mut cfg = EvfSamConfig::published();
        cfg.sam_scale = "giant".into();
        assert!(matches!(cfg.validate("t"), Err(Error::Config { .. })));
    }
}
