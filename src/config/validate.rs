//! Internal-consistency checks of a [`UniResConfig`] (divisibility, level indices, …).

use super::UniResConfig;
use crate::error::{Error, Result};

impl UniResConfig {
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
