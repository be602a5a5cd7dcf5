//! Tensor-name tables from published checkpoint layouts to the unires layout (weights.md):
//! one table per layout, each rule usable in both directions.
//!
//! A pattern is a dotted key where `#` stands for one all-digit segment and a final `*` for
//! one or more trailing segments; the captures fill the other side's `#`/`*` in order. For
//! each published key the first matching *dropped* pattern wins (parts of the published model
//! that unires does not use), then a *tied* duplicate is resolved, then the first matching
//! rule renames it; a key that nothing matches is unknown (an error when importing).

use std::collections::BTreeSet;

/// The unires component a layout supplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// CLIP ViT → `vision_tower.vision_model.*`.
    Clip,
    /// ConvNeXt → `hires.*`.
    ConvNext,
    /// LLaMA-family LLM → `llm.*`.
    Llm,
    /// SAM mask decoder and prompt-encoder pieces → `mask_decoder.*`, `prompt_encoder.*`.
    Sam,
    /// Everything trained only by unires (projector, region encoder, heads, neck, …).
    Glue,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Clip => "CLIP",
            Component::ConvNext => "ConvNeXt",
            Component::Llm => "LLM",
            Component::Sam => "SAM",
            Component::Glue => "glue",
        }
    }

    /// The component that owns a unires tensor name.
    pub fn of(ours: &str) -> Component {
        let first = ours.split('.').next().unwrap_or("");
        match first {
            "vision_tower" => Component::Clip,
            "hires" => Component::ConvNext,
            "llm" => Component::Llm,
            "mask_decoder" | "prompt_encoder" => Component::Sam,
            _ => Component::Glue,
        }
    }
}

/// Top-level prefixes of the glue tensors (everything UniRES++ trains itself).
pub const GLUE_PREFIXES: &[&str] = &[
    "mm_projector",
    "region_encoder",
    "text_hidden_fcs",
    "region_select",
    "neck",
    "skip_proj",
    "target_head",
];

/// A published layout: how its keys become unires keys.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Short name used in messages and reports.
    pub name: &'static str,
    pub component: Component,
    /// Prefix of every published key the rules see (e.g. open_clip's `visual.trunk.`).
    pub prefix: &'static str,
    /// `(published, ours)` patterns; `published` is relative to `prefix`.
    pub rules: &'static [(&'static str, &'static str)],
    /// Full published keys (patterns) that are dropped: parts unires does not use.
    pub dropped: &'static [&'static str],
    /// `(duplicate, primary)`: a tied copy, dropped when the primary is present and used in
    /// its place otherwise.
    pub tied: &'static [(&'static str, &'static str)],
}

/// What a published key becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    Renamed(String),
    Dropped,
    Unknown,
}

// ------------------------------------------------------------------------------ patterns

/// Matches `key` against `pattern`, returning the captured segments.
fn capture<'k>(pattern: &str, key: &'k str) -> Option<Vec<&'k str>> {
    let ps: Vec<&str> = pattern.split('.').collect();
    let ks: Vec<&str> = key.split('.').collect();
    let mut caps = Vec::new();
    for (i, p) in ps.iter().enumerate() {
        match *p {
            "*" if i + 1 == ps.len() => {
                if ks.len() <= i {
                    return None;
                }
                let start: usize = ks[..i].iter().map(|s| s.len() + 1).sum();
                caps.push(&key[start..]);
                return Some(caps);
            }
            "#" => {
                let k = ks.get(i)?;
                if k.is_empty() || !k.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                caps.push(*k);
            }
            lit => {
                if ks.get(i) != Some(&lit) {
                    return None;
                }
            }
        }
    }
    (ps.len() == ks.len()).then_some(caps)
}

/// Fills `pattern`'s `#`/`*` with `caps` in order.
fn fill(pattern: &str, caps: &[&str]) -> String {
    let mut it = caps.iter();
    pattern
        .split('.')
        .map(|p| match p {
            "#" | "*" => it.next().copied().unwrap_or(p),
            lit => lit,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The `#`/`*` signature of a pattern (for checking that both sides of a rule agree).
pub fn signature(pattern: &str) -> String {
    pattern
        .split('.')
        .filter(|p| matches!(*p, "#" | "*"))
        .collect::<Vec<_>>()
        .concat()
}

impl Layout {
    fn rename(&self, key: &str) -> Option<String> {
        let rel = key.strip_prefix(self.prefix)?;
        self.rules
            .iter()
            .find_map(|(p, o)| capture(p, rel).map(|c| fill(o, &c)))
    }

    fn is_dropped(&self, key: &str) -> bool {
        self.dropped.iter().any(|p| capture(p, key).is_some())
    }

    /// Maps one published key; `present` tells whether another published key exists (for
    /// tied duplicates).
    pub fn map(&self, key: &str, present: &dyn Fn(&str) -> bool) -> Mapped {
        if self.is_dropped(key) {
            return Mapped::Dropped;
        }
        if let Some((_, primary)) = self.tied.iter().find(|(dup, _)| *dup == key) {
            if present(primary) {
                return Mapped::Dropped;
            }
            return self
                .rename(primary)
                .map_or(Mapped::Unknown, Mapped::Renamed);
        }
        self.rename(key).map_or(Mapped::Unknown, Mapped::Renamed)
    }

    /// The published key of a unires key (the first rule whose unires side matches).
    pub fn to_published(&self, ours: &str) -> Option<String> {
        self.rules
            .iter()
            .find_map(|(p, o)| capture(o, ours).map(|c| format!("{}{}", self.prefix, fill(p, &c))))
    }

    /// Indices of the rules that rename at least one of `keys` (for coverage tests).
    pub fn rules_used<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> BTreeSet<usize> {
        let mut used = BTreeSet::new();
        for k in keys {
            if self.is_dropped(k) {
                continue;
            }
            let key = self
                .tied
                .iter()
                .find(|(d, _)| *d == k)
                .map_or(k, |(_, p)| *p);
            if let Some(rel) = key.strip_prefix(self.prefix) {
                if let Some(i) = self
                    .rules
                    .iter()
                    .position(|(p, _)| capture(p, rel).is_some())
                {
                    used.insert(i);
                }
            }
        }
        used
    }
}

// ------------------------------------------------------------------------------ tables

/// HF CLIP with the `vision_model.` prefix: `CLIPModel` (published
/// `openai/clip-vit-large-patch14-336`) and `CLIPVisionModel` as transformers 4 saves it.
const CLIP_PREFIXED_RULES: &[(&str, &str)] = &[("vision_model.*", "vision_tower.vision_model.*")];
const CLIP_DROPPED: &[&str] = &[
    "vision_model.embeddings.position_ids",
    "text_model.*",
    "visual_projection.*",
    "text_projection.*",
    "logit_scale",
];

/// HF `CLIPVisionModel` as transformers 5 saves it (no `vision_model.` prefix).
const CLIP_BARE_RULES: &[(&str, &str)] = &[
    ("embeddings.*", "vision_tower.vision_model.embeddings.*"),
    ("pre_layrnorm.*", "vision_tower.vision_model.pre_layrnorm.*"),
    ("encoder.*", "vision_tower.vision_model.encoder.*"),
    (
        "post_layernorm.*",
        "vision_tower.vision_model.post_layernorm.*",
    ),
];
const CLIP_BARE_DROPPED: &[&str] = &["embeddings.position_ids"];

/// timm ConvNeXt (`convnext_large`, the image tower of open_clip's ConvNeXt CLIPs) → HF
/// `ConvNextModel` names under `hires.`.
const TIMM_CONVNEXT_RULES: &[(&str, &str)] = &[
    ("stem.0.*", "hires.embeddings.patch_embeddings.*"),
    ("stem.1.*", "hires.embeddings.layernorm.*"),
    (
        "stages.#.downsample.#.*",
        "hires.encoder.stages.#.downsampling_layer.#.*",
    ),
    (
        "stages.#.blocks.#.conv_dw.*",
        "hires.encoder.stages.#.layers.#.dwconv.*",
    ),
    (
        "stages.#.blocks.#.norm.*",
        "hires.encoder.stages.#.layers.#.layernorm.*",
    ),
    (
        "stages.#.blocks.#.mlp.fc1.*",
        "hires.encoder.stages.#.layers.#.pwconv1.*",
    ),
    (
        "stages.#.blocks.#.mlp.fc2.*",
        "hires.encoder.stages.#.layers.#.pwconv2.*",
    ),
    (
        "stages.#.blocks.#.gamma",
        "hires.encoder.stages.#.layers.#.layer_scale_parameter",
    ),
    ("head.norm.*", "hires.layernorm.*"),
];
/// timm's classifier head (absent from open_clip's trunk, present in timm checkpoints).
const TIMM_CONVNEXT_DROPPED: &[&str] = &["head.fc.*", "head.pre_logits.*"];
/// An open_clip CLIP: everything but the image trunk (text tower, projections, the vision
/// MLP head) is dropped.
const OPEN_CLIP_DROPPED: &[&str] = &[
    "visual.head.*",
    "visual.trunk.head.fc.*",
    "visual.trunk.head.pre_logits.*",
    "transformer.*",
    "token_embedding.*",
    "positional_embedding",
    "ln_final.*",
    "text_projection",
    "text_projection.*",
    "logit_scale",
    "logit_bias",
    "attn_mask",
];

/// HF `ConvNextModel` (bare, as transformers 5 saves it).
const HF_CONVNEXT_RULES: &[(&str, &str)] = &[
    ("embeddings.*", "hires.embeddings.*"),
    ("encoder.*", "hires.encoder.*"),
    ("layernorm.*", "hires.layernorm.*"),
];
const HF_CONVNEXT_CLASSIFIER_DROPPED: &[&str] = &["classifier.*"];

/// HF `LlamaForCausalLM` (Vicuna, LLaMA-2/3, …). Older checkpoints carry RoPE buffers.
const HF_LLAMA_RULES: &[(&str, &str)] =
    &[("model.*", "llm.model.*"), ("lm_head.*", "llm.lm_head.*")];
const HF_LLAMA_DROPPED: &[&str] = &[
    "model.layers.#.self_attn.rotary_emb.inv_freq",
    "model.rotary_emb.inv_freq",
];

/// segment-anything (`sam_vit_b_01ec64.pth`) → HF `SamModel` names (4 mask tokens; the
/// granularity selection happens after renaming, in `assemble`).
const SEGMENT_ANYTHING_RULES: &[(&str, &str)] = &[
    (
        "mask_decoder.transformer.layers.#.self_attn.*",
        "mask_decoder.transformer.layers.#.self_attn.*",
    ),
    (
        "mask_decoder.transformer.layers.#.cross_attn_token_to_image.*",
        "mask_decoder.transformer.layers.#.cross_attn_token_to_image.*",
    ),
    (
        "mask_decoder.transformer.layers.#.cross_attn_image_to_token.*",
        "mask_decoder.transformer.layers.#.cross_attn_image_to_token.*",
    ),
    (
        "mask_decoder.transformer.layers.#.mlp.*",
        "mask_decoder.transformer.layers.#.mlp.*",
    ),
    (
        "mask_decoder.transformer.layers.#.norm1.*",
        "mask_decoder.transformer.layers.#.layer_norm1.*",
    ),
    (
        "mask_decoder.transformer.layers.#.norm2.*",
        "mask_decoder.transformer.layers.#.layer_norm2.*",
    ),
    (
        "mask_decoder.transformer.layers.#.norm3.*",
        "mask_decoder.transformer.layers.#.layer_norm3.*",
    ),
    (
        "mask_decoder.transformer.layers.#.norm4.*",
        "mask_decoder.transformer.layers.#.layer_norm4.*",
    ),
    (
        "mask_decoder.transformer.final_attn_token_to_image.*",
        "mask_decoder.transformer.final_attn_token_to_image.*",
    ),
    (
        "mask_decoder.transformer.norm_final_attn.*",
        "mask_decoder.transformer.layer_norm_final_attn.*",
    ),
    ("mask_decoder.iou_token.*", "mask_decoder.iou_token.*"),
    ("mask_decoder.mask_tokens.*", "mask_decoder.mask_tokens.*"),
    (
        "mask_decoder.output_upscaling.0.*",
        "mask_decoder.upscale_conv1.*",
    ),
    (
        "mask_decoder.output_upscaling.1.*",
        "mask_decoder.upscale_layer_norm.*",
    ),
    (
        "mask_decoder.output_upscaling.3.*",
        "mask_decoder.upscale_conv2.*",
    ),
    (
        "mask_decoder.output_hypernetworks_mlps.#.layers.0.*",
        "mask_decoder.output_hypernetworks_mlps.#.proj_in.*",
    ),
    (
        "mask_decoder.output_hypernetworks_mlps.#.layers.1.*",
        "mask_decoder.output_hypernetworks_mlps.#.layers.0.*",
    ),
    (
        "mask_decoder.output_hypernetworks_mlps.#.layers.2.*",
        "mask_decoder.output_hypernetworks_mlps.#.proj_out.*",
    ),
    (
        "mask_decoder.iou_prediction_head.layers.0.*",
        "mask_decoder.iou_prediction_head.proj_in.*",
    ),
    (
        "mask_decoder.iou_prediction_head.layers.1.*",
        "mask_decoder.iou_prediction_head.layers.0.*",
    ),
    (
        "mask_decoder.iou_prediction_head.layers.2.*",
        "mask_decoder.iou_prediction_head.proj_out.*",
    ),
    (
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        "prompt_encoder.shared_embedding.positional_embedding",
    ),
    (
        "prompt_encoder.point_embeddings.#.*",
        "prompt_encoder.point_embed.#.*",
    ),
    (
        "prompt_encoder.no_mask_embed.*",
        "prompt_encoder.no_mask_embed.*",
    ),
];
/// The image encoder, the mask-prompt path, and the point (not box) embeddings.
const SEGMENT_ANYTHING_DROPPED: &[&str] = &[
    "image_encoder.*",
    "prompt_encoder.mask_downscaling.*",
    "prompt_encoder.not_a_point_embed.*",
    "prompt_encoder.point_embeddings.0.*",
    "prompt_encoder.point_embeddings.1.*",
];

/// HF `SamModel` (published `facebook/sam-vit-base`).
const HF_SAM_RULES: &[(&str, &str)] = &[
    ("mask_decoder.*", "mask_decoder.*"),
    (
        "shared_image_embedding.positional_embedding",
        "prompt_encoder.shared_embedding.positional_embedding",
    ),
    (
        "prompt_encoder.point_embed.#.*",
        "prompt_encoder.point_embed.#.*",
    ),
    (
        "prompt_encoder.no_mask_embed.*",
        "prompt_encoder.no_mask_embed.*",
    ),
];
const HF_SAM_DROPPED: &[&str] = &[
    "vision_encoder.*",
    "prompt_encoder.mask_embed.*",
    "prompt_encoder.not_a_point_embed.*",
    "prompt_encoder.point_embed.0.*",
    "prompt_encoder.point_embed.1.*",
];
/// HF ties the prompt encoder's positional embedding to `shared_image_embedding` and saves
/// only the latter.
const HF_SAM_TIED: &[(&str, &str)] = &[(
    "prompt_encoder.shared_embedding.positional_embedding",
    "shared_image_embedding.positional_embedding",
)];

/// unires's own names, for glue files (identity on the glue prefixes).
const GLUE_RULES: &[(&str, &str)] = &[
    ("mm_projector.*", "mm_projector.*"),
    ("region_encoder.*", "region_encoder.*"),
    ("text_hidden_fcs.*", "text_hidden_fcs.*"),
    ("region_select.*", "region_select.*"),
    ("neck.*", "neck.*"),
    ("skip_proj.*", "skip_proj.*"),
    ("target_head.*", "target_head.*"),
    ("mask_decoder.*", "mask_decoder.*"),
    ("prompt_encoder.*", "prompt_encoder.*"),
];

const fn layout(
    name: &'static str,
    component: Component,
    prefix: &'static str,
    rules: &'static [(&'static str, &'static str)],
    dropped: &'static [&'static str],
) -> Layout {
    Layout {
        name,
        component,
        prefix,
        rules,
        dropped,
        tied: &[],
    }
}

/// Every layout we import, by component; for each input the layout that maps every key
/// (and the most keys) is chosen.
pub const LAYOUTS: &[Layout] = &[
    layout(
        "hf-clip",
        Component::Clip,
        "",
        CLIP_PREFIXED_RULES,
        CLIP_DROPPED,
    ),
    layout(
        "hf-clip-vision",
        Component::Clip,
        "",
        CLIP_BARE_RULES,
        CLIP_BARE_DROPPED,
    ),
    layout(
        "open_clip-convnext",
        Component::ConvNext,
        "visual.trunk.",
        TIMM_CONVNEXT_RULES,
        OPEN_CLIP_DROPPED,
    ),
    layout(
        "timm-convnext",
        Component::ConvNext,
        "",
        TIMM_CONVNEXT_RULES,
        TIMM_CONVNEXT_DROPPED,
    ),
    layout(
        "hf-convnext",
        Component::ConvNext,
        "",
        HF_CONVNEXT_RULES,
        &[],
    ),
    layout(
        "hf-convnext-classifier",
        Component::ConvNext,
        "convnext.",
        HF_CONVNEXT_RULES,
        HF_CONVNEXT_CLASSIFIER_DROPPED,
    ),
    layout(
        "hf-llama",
        Component::Llm,
        "",
        HF_LLAMA_RULES,
        HF_LLAMA_DROPPED,
    ),
    layout(
        "segment-anything",
        Component::Sam,
        "",
        SEGMENT_ANYTHING_RULES,
        SEGMENT_ANYTHING_DROPPED,
    ),
    Layout {
        name: "hf-sam",
        component: Component::Sam,
        prefix: "",
        rules: HF_SAM_RULES,
        dropped: HF_SAM_DROPPED,
        tied: HF_SAM_TIED,
    },
    layout("unires-glue", Component::Glue, "", GLUE_RULES, &[]),
];

/// A layout by name.
pub fn layout_by_name(name: &str) -> Option<&'static Layout> {
    LAYOUTS.iter().find(|l| l.name == name)
}

/// How a layout classifies a set of published keys.
#[derive(Debug, Clone, Default)]
pub struct Classified {
    /// `(published, ours)` in the published keys' order.
    pub renamed: Vec<(String, String)>,
    pub dropped: Vec<String>,
    pub unknown: Vec<String>,
}

/// Classifies every key of a checkpoint with one layout.
pub fn classify(layout: &Layout, keys: &[String]) -> Classified {
    let set: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
    let present = |k: &str| set.contains(k);
    let mut c = Classified::default();
    for k in keys {
        match layout.map(k, &present) {
            Mapped::Renamed(o) => c.renamed.push((k.clone(), o)),
            Mapped::Dropped => c.dropped.push(k.clone()),
            Mapped::Unknown => c.unknown.push(k.clone()),
        }
    }
    c
}

/// The layout of `component` that explains a checkpoint's keys: the one with no unknown key
/// and the most renamed keys. `Err` carries the closest layout and its classification.
pub fn detect(
    component: Component,
    keys: &[String],
) -> std::result::Result<(&'static Layout, Classified), (&'static Layout, Classified)> {
    let mut best: Option<(&'static Layout, Classified)> = None;
    for l in LAYOUTS.iter().filter(|l| l.component == component) {
        let c = classify(l, keys);
        let better = match &best {
            None => true,
            Some((_, b)) => {
                (c.unknown.len(), usize::MAX - c.renamed.len())
                    < (b.unknown.len(), usize::MAX - b.renamed.len())
            }
        };
        if better {
            best = Some((l, c));
        }
    }
    match best {
        Some((l, c)) if c.unknown.is_empty() && !c.renamed.is_empty() => Ok((l, c)),
        Some(b) => Err(b),
        // Every component has at least one layout in LAYOUTS; the glue layout stands in.
        None => Err((&LAYOUTS[LAYOUTS.len() - 1], Classified::default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_capture_and_fill() {
        let c = capture(
            "stages.#.blocks.#.mlp.fc1.*",
            "stages.2.blocks.10.mlp.fc1.weight",
        );
        assert_eq!(c, Some(vec!["2", "10", "weight"]));
        assert_eq!(
            fill(
                "hires.encoder.stages.#.layers.#.pwconv1.*",
                &["2", "10", "weight"]
            ),
            "hires.encoder.stages.2.layers.10.pwconv1.weight"
        );
        assert_eq!(capture("stages.#.x", "stages.a.x"), None);
        assert_eq!(capture("a.*", "a"), None);
        assert_eq!(capture("a.*", "a.b.c"), Some(vec!["b.c"]));
        assert_eq!(capture("a.b", "a.b.c"), None);
    }

    #[test]
    fn both_sides_of_every_rule_capture_the_same() {
        for l in LAYOUTS {
            for (p, o) in l.rules {
                assert_eq!(signature(p), signature(o), "{}: {p} ↔ {o}", l.name);
                assert!(
                    Component::of(&fill(o, &["0", "0", "0", "0"])) == l.component
                        || l.component == Component::Glue,
                    "{}: {o} lands outside its component",
                    l.name
                );
            }
        }
    }

    #[test]
    fn dropped_wins_over_rules() {
        let l = layout_by_name("hf-llama").unwrap();
        let none = |_: &str| false;
        assert_eq!(
            l.map("model.layers.3.self_attn.rotary_emb.inv_freq", &none),
            Mapped::Dropped
        );
        assert_eq!(
            l.map("model.layers.3.self_attn.q_proj.weight", &none),
            Mapped::Renamed("llm.model.layers.3.self_attn.q_proj.weight".into())
        );
        assert_eq!(l.map("transformer.h.0.attn.weight", &none), Mapped::Unknown);
    }

    #[test]
    fn tied_duplicate_stands_in_for_a_missing_primary() {
        let l = layout_by_name("hf-sam").unwrap();
        let dup = "prompt_encoder.shared_embedding.positional_embedding";
        let primary = "shared_image_embedding.positional_embedding";
        assert_eq!(l.map(dup, &|k| k == primary), Mapped::Dropped);
        assert_eq!(
            l.map(dup, &|_| false),
            Mapped::Renamed("prompt_encoder.shared_embedding.positional_embedding".into())
        );
    }
}
