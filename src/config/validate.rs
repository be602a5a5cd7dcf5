//! Internal-consistency checks of a [`UniResConfig`], run when a `config.json` is parsed and
//! when a model is built, so that a configuration the graph cannot run fails up front with
//! an [`Error::Config`] naming the field, never in the middle of a forward pass.
//!
//! Each check guards a relation the graph assumes:
//!
//! | field(s) | relation | what fails otherwise |
//! |---|---|---|
//! | `vision.image_size`, `patch_size`, `hidden_size`, `num_attention_heads` | multiples | CLIP patch grid, attention heads |
//! | `vision.num_channels`, `hires.num_channels` | = 3 | the preprocessing makes RGB tensors |
//! | `vision.select_layer` | within the hidden states | feature selection |
//! | `hires.image_size`, `hires.pad` | multiples of the ConvNeXt stride `patch_size · 2^(stages − 1)` | stage outputs that do not halve exactly, so the ×2 / ×4 decoder skips do not line up |
//! | `hires.hidden_sizes`, `depths`, `patch_size` | same length, non-zero | ConvNeXt stages |
//! | `region.levels`, `decoder.dense_level`, `decoder.skip_levels` | existing stages; skips at half and a quarter of the dense stride | ROI levels, the decoder's upscaling adds |
//! | `region.select_dim`, `dim`, `pool_size`, `max_objects` | > 0 | the selection scale `1/√select_dim`, ROI pooling, the whole-image fallback proposal |
//! | `llm.*` heads, `head_dim`, `vocab_size`, `max_position_embeddings`, RoPE | divisibility, even head_dim, > 0 | attention reshapes, RoPE halves |
//! | `decoder.hidden_size`, `attention_downsample_rate`, `num_attention_heads` | `hidden_size % 8 = 0`, internal width divisible by the heads | the upscaling convs (D/4, D/8), attention |
//! | image tokens + regions + 2 answer tokens | ≤ `llm.max_position_embeddings` | every prompt would be too long |
//! | `tokens.*`, `prompt.*` | non-empty, distinct; one image token, `{regions}` and `{expression}` in `prompt.user` | prompt building |
//! | `image_mean`, `image_std`, thresholds, `limits.*` | finite, positive, in range | normalisation, no-target decisions, input checks |

use super::{HiresPad, SelectFeature, UniResConfig};
use crate::error::{Error, Result};

impl UniResConfig {
    /// The ConvNeXt's total downsampling: `hires.patch_size · 2^(stages − 1)`.
    pub fn hires_stride(&self) -> usize {
        let c = &self.hires.convnext;
        let stages = c.depths.len().max(1);
        c.patch_size
            .saturating_mul(1usize.checked_shl(stages as u32 - 1).unwrap_or(usize::MAX))
    }

    /// Checks internal consistency (see the module documentation for the list).
    pub fn validate(&self, what: &str) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::Config {
                what: what.into(),
                reason,
            })
        };
        // ---------------------------------------------------------------- vision
        let v = &self.vision.clip;
        if v.patch_size == 0 || v.image_size == 0 || v.image_size % v.patch_size != 0 {
            return bad(format!(
                "vision.image_size {} is not a positive multiple of vision.patch_size {}",
                v.image_size, v.patch_size
            ));
        }
        if v.num_attention_heads == 0 || v.hidden_size % v.num_attention_heads != 0 {
            return bad(format!(
                "vision.hidden_size {} is not divisible by vision.num_attention_heads {}",
                v.hidden_size, v.num_attention_heads
            ));
        }
        if v.num_channels != 3 {
            return bad(format!(
                "vision.num_channels is {}; the preprocessing gives 3 (RGB)",
                v.num_channels
            ));
        }
        let layers = v.num_hidden_layers as i32;
        let sel = self.vision.select_layer;
        if sel > layers || sel < -(layers + 1) {
            return bad(format!(
                "vision.select_layer {sel} is outside the {} hidden states",
                layers + 1
            ));
        }
        // ---------------------------------------------------------------- hi-res
        let c = &self.hires.convnext;
        if c.hidden_sizes.len() != c.depths.len() || c.depths.is_empty() {
            return bad(format!(
                "hires.hidden_sizes ({}) and hires.depths ({}) must have the same, non-zero length",
                c.hidden_sizes.len(),
                c.depths.len()
            ));
        }
        if c.patch_size == 0 || c.hidden_sizes.contains(&0) {
            return bad("hires.patch_size and every hires.hidden_sizes entry must be > 0".into());
        }
        if c.num_channels != 3 {
            return bad(format!(
                "hires.num_channels is {}; the preprocessing gives 3 (RGB)",
                c.num_channels
            ));
        }
        if c.depths.len() > 8 {
            return bad(format!(
                "hires.depths has {} stages; at most 8 are supported",
                c.depths.len()
            ));
        }
        let stride = self.hires_stride();
        let h = &self.hires;
        if h.image_size < stride || h.image_size % stride != 0 {
            return bad(format!(
                "hires.image_size {} is not a positive multiple of the ConvNeXt stride {stride} \
                 (hires.patch_size {} × 2^{})",
                h.image_size,
                c.patch_size,
                c.depths.len() - 1
            ));
        }
        if let HiresPad::MultipleOf(m) = h.pad {
            if m == 0 || m % stride != 0 {
                return bad(format!(
                    "hires.pad multiple {m} is not a positive multiple of the ConvNeXt stride \
                     {stride}"
                ));
            }
        }
        let stages = c.depths.len();
        for (field, &l) in self
            .region
            .levels
            .iter()
            .map(|l| ("region.levels", l))
            .chain(
                self.decoder
                    .skip_levels
                    .iter()
                    .map(|l| ("decoder.skip_levels", l)),
            )
            .chain(std::iter::once((
                "decoder.dense_level",
                &self.decoder.dense_level,
            )))
        {
            if l >= stages {
                return bad(format!("{field}: level {l}, but hires has {stages} stages"));
            }
        }
        // ---------------------------------------------------------------- decoder
        let dl = self.decoder.dense_level;
        let skips = &self.decoder.skip_levels;
        if dl < 2 {
            return bad(format!(
                "decoder.dense_level {dl} leaves no two stages below it for \
                 decoder.skip_levels (the mask decoder upscales ×2, then ×2 again)"
            ));
        }
        if skips.as_slice() != [dl - 1, dl - 2] {
            return bad(format!(
                "decoder.skip_levels {skips:?} must be [{}, {}]: the stages at half and a \
                 quarter of the stride of decoder.dense_level {dl} (the mask decoder upscales \
                 ×2, then ×2 again)",
                dl - 1,
                dl - 2
            ));
        }
        let d = &self.decoder.sam;
        if d.hidden_size == 0 || d.hidden_size % 8 != 0 {
            return bad(format!(
                "decoder.hidden_size {} must be a positive multiple of 8 (the upscaling has \
                 D/4 and D/8 channels)",
                d.hidden_size
            ));
        }
        if d.num_attention_heads == 0 || d.hidden_size % d.num_attention_heads != 0 {
            return bad(format!(
                "decoder.hidden_size {} is not divisible by decoder.num_attention_heads {}",
                d.hidden_size, d.num_attention_heads
            ));
        }
        let rate = d.attention_downsample_rate;
        if rate == 0
            || d.hidden_size % rate != 0
            || (d.hidden_size / rate) % d.num_attention_heads != 0
        {
            return bad(format!(
                "decoder.attention_downsample_rate {rate}: hidden_size {} / rate must be a whole \
                 multiple of num_attention_heads {}",
                d.hidden_size, d.num_attention_heads
            ));
        }
        if d.num_multimask_outputs + 1 != 3 {
            return bad(
                "decoder.num_multimask_outputs must be 2 (one mask token per granularity)".into(),
            );
        }
        if d.iou_head_depth == 0 || d.mlp_dim == 0 || d.iou_head_hidden_dim == 0 {
            return bad(
                "decoder.iou_head_depth, mlp_dim and iou_head_hidden_dim must be > 0".into(),
            );
        }
        // ---------------------------------------------------------------- regions
        let r = &self.region;
        if r.levels.is_empty() {
            return bad("region.levels must name at least one ConvNeXt stage".into());
        }
        for (field, n) in [
            ("region.dim", r.dim),
            ("region.pool_size", r.pool_size),
            ("region.select_dim", r.select_dim),
            ("region.max_objects", r.max_objects),
        ] {
            if n == 0 {
                return bad(format!("{field} must be > 0"));
            }
        }
        if r.box_freqs > 64 {
            return bad(format!(
                "region.box_freqs {} overflows the box encoding (2^f·π for f < box_freqs; at \
                 most 64)",
                r.box_freqs
            ));
        }
        // ---------------------------------------------------------------- LLM
        let l = &self.llm;
        let kv = l.kv_heads();
        if l.num_attention_heads == 0 || kv == 0 || l.num_attention_heads % kv != 0 {
            return bad(format!(
                "llm.num_attention_heads {} is not a positive multiple of \
                 llm.num_key_value_heads {kv}",
                l.num_attention_heads
            ));
        }
        if l.head_dim.is_none() && l.hidden_size % l.num_attention_heads != 0 {
            return bad(format!(
                "llm.hidden_size {} is not divisible by llm.num_attention_heads {} (and no \
                 llm.head_dim is given)",
                l.hidden_size, l.num_attention_heads
            ));
        }
        if l.head_dim() == 0 || l.head_dim() % 2 != 0 {
            return bad(format!(
                "llm.head_dim {} must be even and > 0 (RoPE rotates halves)",
                l.head_dim()
            ));
        }
        for (field, n) in [
            ("llm.hidden_size", l.hidden_size),
            ("llm.intermediate_size", l.intermediate_size),
            ("llm.vocab_size", l.vocab_size),
            ("llm.max_position_embeddings", l.max_position_embeddings),
        ] {
            if n == 0 {
                return bad(format!("{field} must be > 0"));
            }
        }
        if !(l.rope_theta.is_finite() && l.rope_theta > 0.0) {
            return bad(format!("llm.rope_theta {} must be > 0", l.rope_theta));
        }
        if !(l.rms_norm_eps.is_finite() && l.rms_norm_eps >= 0.0) {
            return bad(format!("llm.rms_norm_eps {} must be ≥ 0", l.rms_norm_eps));
        }
        if let Some(s) = &l.rope_scaling {
            match s.rope_type.as_str() {
                "default" => {}
                "llama3" => {
                    let pos = |x: f64| x.is_finite() && x > 0.0;
                    let ok = pos(s.factor)
                        && pos(s.low_freq_factor)
                        && pos(s.high_freq_factor)
                        && s.low_freq_factor != s.high_freq_factor
                        && s.original_max_position_embeddings > 0;
                    if !ok {
                        return bad(format!(
                            "llm.rope_scaling (llama3): factor {}, low_freq_factor {} and \
                             high_freq_factor {} must be > 0 and the two frequency factors \
                             different, original_max_position_embeddings {} > 0",
                            s.factor,
                            s.low_freq_factor,
                            s.high_freq_factor,
                            s.original_max_position_embeddings
                        ));
                    }
                }
                other => {
                    return bad(format!(
                        "llm.rope_scaling.rope_type {other:?} is not supported (supported: \
                         default, llama3)"
                    ))
                }
            }
        }
        // Image tokens, the most regions, and the two answer tokens must fit the context
        // (the template's own tokens come on top and are checked per prompt).
        let grid = v.image_size / v.patch_size;
        let image_tokens =
            grid * grid + usize::from(self.vision.select_feature == SelectFeature::ClsPatch);
        let least = image_tokens + r.max_objects + r.max_parts + 2;
        if least > l.max_position_embeddings {
            return bad(format!(
                "llm.max_position_embeddings {} cannot hold {image_tokens} image tokens, \
                 region.max_objects {} + region.max_parts {} region tokens and 2 answer tokens",
                l.max_position_embeddings, r.max_objects, r.max_parts
            ));
        }
        // ---------------------------------------------------------------- prompt
        let t = &self.tokens;
        let specials = [
            ("tokens.image", &t.image),
            ("tokens.object", &t.object),
            ("tokens.part", &t.part),
            ("tokens.granularity[0]", &t.granularity[0]),
            ("tokens.granularity[1]", &t.granularity[1]),
            ("tokens.granularity[2]", &t.granularity[2]),
            ("tokens.seg", &t.seg),
        ];
        for (i, (field, tok)) in specials.iter().enumerate() {
            if tok.trim().is_empty() {
                return bad(format!("{field} is empty"));
            }
            if let Some((other, _)) = specials[..i].iter().find(|(_, o)| o == tok) {
                return bad(format!("{field} {tok:?} is the same token as {other}"));
            }
        }
        let p = &self.prompt;
        let all = format!("{} {} {}", p.system, p.user, p.assistant);
        if all.matches(t.image.as_str()).count() != 1 || !p.user.contains(t.image.as_str()) {
            return bad(format!(
                "prompt.user must hold the image token {:?} once (and the other prompt parts \
                 none)",
                t.image
            ));
        }
        for key in ["{regions}", "{expression}"] {
            if p.user.matches(key).count() != 1 {
                return bad(format!("prompt.user must hold {key} once"));
            }
        }
        // ---------------------------------------------------------------- numbers
        if !self.image_mean.iter().all(|m| m.is_finite()) {
            return bad("image_mean must be finite".into());
        }
        if !self.image_std.iter().all(|&s| s.is_finite() && s > 0.0) {
            return bad("image_std must be positive".into());
        }
        for (field, x) in [
            ("no_target_threshold", self.no_target_threshold),
            ("instance_threshold", self.instance_threshold),
        ] {
            if !(0.0..=1.0).contains(&x) {
                return bad(format!("{field} {x} is not a probability in [0, 1]"));
            }
        }
        let lim = &self.limits;
        if lim.min_side == 0 || lim.min_side > lim.max_side {
            return bad(format!(
                "limits.min_side {} must be > 0 and ≤ limits.max_side {}",
                lim.min_side, lim.max_side
            ));
        }
        if lim.max_pixels < u64::from(lim.min_side) * u64::from(lim.min_side) {
            return bad(format!(
                "limits.max_pixels {} is below limits.min_side² ({})",
                lim.max_pixels,
                u64::from(lim.min_side) * u64::from(lim.min_side)
            ));
        }
        for (field, n) in [
            (
                "limits.max_expression_chars",
                lim.max_expression_chars as u64,
            ),
            ("limits.max_image_bytes", lim.max_image_bytes),
            ("limits.max_boxes_bytes", lim.max_boxes_bytes),
        ] {
            if n == 0 {
                return bad(format!("{field} must be > 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RopeScaling;

    /// Applies `edit` to the tiny preset and returns the error's reason.
    fn reason(edit: impl FnOnce(&mut UniResConfig)) -> String {
        let mut cfg = UniResConfig::tiny();
        edit(&mut cfg);
        match cfg.validate("t") {
            Err(Error::Config { what, reason }) => {
                assert_eq!(what, "t");
                reason
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn presets_are_valid() {
        for cfg in [UniResConfig::tiny(), UniResConfig::base()] {
            cfg.validate(&cfg.name).unwrap();
        }
        assert_eq!(UniResConfig::tiny().hires_stride(), 16);
        assert_eq!(UniResConfig::base().hires_stride(), 32);
    }

    /// Each broken relation is refused with a message naming its field.
    #[test]
    fn each_broken_relation_names_its_field() {
        type Edit = fn(&mut UniResConfig);
        let cases: Vec<(&str, Edit)> = vec![
            ("hires.image_size", |c| c.hires.image_size = 150),
            ("hires.image_size", |c| c.hires.image_size = 8),
            ("hires.pad", |c| c.hires.pad = HiresPad::MultipleOf(24)),
            ("hires.pad", |c| c.hires.pad = HiresPad::MultipleOf(0)),
            ("hires.patch_size", |c| c.hires.convnext.patch_size = 0),
            ("hires.num_channels", |c| c.hires.convnext.num_channels = 4),
            ("hires.hidden_sizes", |c| c.hires.convnext.depths.push(1)),
            ("region.select_dim", |c| c.region.select_dim = 0),
            ("region.pool_size", |c| c.region.pool_size = 0),
            ("region.dim", |c| c.region.dim = 0),
            ("region.max_objects", |c| c.region.max_objects = 0),
            ("region.box_freqs", |c| c.region.box_freqs = 200),
            ("region.levels", |c| c.region.levels = vec![]),
            ("region.levels", |c| c.region.levels = vec![0, 5]),
            ("decoder.skip_levels", |c| {
                c.decoder.skip_levels = vec![0, 1]
            }),
            ("decoder.skip_levels", |c| c.decoder.skip_levels = vec![1]),
            ("decoder.dense_level", |c| c.decoder.dense_level = 1),
            ("decoder.dense_level", |c| c.decoder.dense_level = 3),
            ("decoder.hidden_size", |c| c.decoder.sam.hidden_size = 60),
            ("decoder.hidden_size", |c| {
                c.decoder.sam.num_attention_heads = 5
            }),
            ("decoder.attention_downsample_rate", |c| {
                c.decoder.sam.attention_downsample_rate = 0
            }),
            ("decoder.attention_downsample_rate", |c| {
                c.decoder.sam.attention_downsample_rate = 32
            }),
            ("decoder.num_multimask_outputs", |c| {
                c.decoder.sam.num_multimask_outputs = 3
            }),
            ("vision.image_size", |c| c.vision.clip.image_size = 60),
            ("vision.hidden_size", |c| {
                c.vision.clip.num_attention_heads = 5
            }),
            ("vision.num_channels", |c| c.vision.clip.num_channels = 1),
            ("vision.select_layer", |c| c.vision.select_layer = 7),
            ("llm.num_attention_heads", |c| {
                c.llm.num_key_value_heads = Some(0)
            }),
            ("llm.num_attention_heads", |c| {
                c.llm.num_key_value_heads = Some(3)
            }),
            ("llm.hidden_size", |c| c.llm.num_attention_heads = 6),
            ("llm.head_dim", |c| c.llm.head_dim = Some(7)),
            ("llm.vocab_size", |c| c.llm.vocab_size = 0),
            ("llm.rope_theta", |c| c.llm.rope_theta = 0.0),
            ("llm.rope_scaling", |c| {
                c.llm.rope_scaling = Some(RopeScaling {
                    rope_type: "llama3".into(),
                    factor: 8.0,
                    low_freq_factor: 4.0,
                    high_freq_factor: 4.0,
                    original_max_position_embeddings: 8192,
                })
            }),
            ("llm.rope_scaling.rope_type", |c| {
                c.llm.rope_scaling = Some(RopeScaling {
                    rope_type: "yarn".into(),
                    factor: 8.0,
                    low_freq_factor: 1.0,
                    high_freq_factor: 4.0,
                    original_max_position_embeddings: 8192,
                })
            }),
            ("llm.max_position_embeddings", |c| {
                c.llm.max_position_embeddings = 64
            }),
            ("tokens.seg", |c| c.tokens.seg = String::new()),
            ("tokens.part", |c| c.tokens.part = c.tokens.object.clone()),
            ("prompt.user", |c| {
                c.prompt.user = "USER: {regions} {expression}".into()
            }),
            ("prompt.user", |c| c.prompt.system = "<image>".into()),
            ("prompt.user", |c| {
                c.prompt.user = "USER: <image> {expression}".into()
            }),
            ("image_std", |c| c.image_std = [0.2, 0.0, 0.2]),
            ("image_mean", |c| c.image_mean = [0.2, f32::NAN, 0.2]),
            ("no_target_threshold", |c| c.no_target_threshold = f32::NAN),
            ("instance_threshold", |c| c.instance_threshold = 1.5),
            ("limits.min_side", |c| c.limits.min_side = 0),
            ("limits.max_pixels", |c| c.limits.max_pixels = 10),
            ("limits.max_image_bytes", |c| c.limits.max_image_bytes = 0),
        ];
        for (field, edit) in cases {
            let r = reason(edit);
            assert!(r.contains(field), "{field}: {r}");
        }
    }

    #[test]
    fn a_padding_multiple_of_the_stride_is_accepted() {
        let mut cfg = UniResConfig::tiny();
        cfg.hires.pad = HiresPad::MultipleOf(32);
        cfg.validate("t").unwrap();
    }
}
