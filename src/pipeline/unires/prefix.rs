//! The prompt prefix of an encoded image, run through the LLM once.
//!
//! The prompt is `system USER: <image> <obj>… <part>… please segment {expr} . ASSISTANT:`:
//! everything up to the last region token comes before the expression, and under causal
//! attention (also with `region.bidirectional_regions`, whose span ends at the last region
//! token) its states do not depend on it. [`PromptPrefix::new`] prefills that part once per
//! image (at `encode`) and keeps its keys, values and last-layer states; a query then prefills
//! only its own tokens on a copy of that cache ([`PromptPrefix::prefill`]).
//!
//! The prefix is found by tokenising the prompt of a probe expression and cutting it after
//! the last placeholder (the image or a region token, all special tokens). A query whose own
//! prompt does not start with exactly those ids (a tokenizer that merges across the cut)
//! gets a full prefill instead, so the result never depends on the cache.
//!
//! Memory: `2 × layers × P × kv_width` values per image for `P` prefix positions — for the
//! `tiny` preset a few hundred KiB, for a 7B LLM (32 layers, width 4096) about 1 MiB per
//! position in f32 (half in f16/bf16), ~0.7 GiB for a 700-token prefix.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::model::llm::KvCache;
use crate::model::unires::prompt::Prompt;
use crate::model::unires::UniRes;
use crate::pipeline::tensor_bytes;

/// Expression used to tokenise the prompt when building the prefix (any expression gives
/// the same prefix ids; the query checks it).
const PROBE_EXPRESSION: &str = "x";

/// KV cache and last-layer states of an encoded image's prompt prefix.
#[derive(Debug, Clone)]
pub struct PromptPrefix {
    /// Prompt ids up to and including the last placeholder (`<image>` unexpanded).
    ids: Vec<u32>,
    /// Number of positions once `<image>` is expanded (`P`).
    len: usize,
    cache: KvCache,
    /// `(1, P, H)` last-layer (final-norm) states.
    hidden: Tensor,
}

impl PromptPrefix {
    /// Prefills the prompt prefix of an image with `image_tokens (N, H)` and `region_tokens
    /// (n_objects + n_parts, H)`.
    pub fn new(
        model: &UniRes,
        image_tokens: &Tensor,
        region_tokens: &Tensor,
        (n_objects, n_parts): (usize, usize),
    ) -> Result<Self> {
        let prompt = model
            .prompt_builder()
            .build(PROBE_EXPRESSION, n_objects, n_parts)?;
        let cut = Self::cut(&prompt);
        let n_img = image_tokens.dim(0)?;
        // `<image>` is inside the prefix: its one id becomes `n_img` positions.
        let len = cut - 1 + n_img;
        let embeds = model.prompt_embeddings(&prompt, image_tokens, region_tokens)?;
        let embeds = embeds.narrow(0, 0, len)?.unsqueeze(0)?;
        let positions: Vec<usize> = prompt
            .objects_at
            .iter()
            .chain(prompt.parts_at.iter())
            .map(|&i| prompt.expanded_pos(i, n_img))
            .collect();
        let span = crate::pipeline::unires::query::region_span(&positions);
        let mut cache = model.llm().new_cache();
        let hidden = model.llm_prefill(&embeds, &mut cache, &[span])?;
        Ok(Self {
            ids: prompt.ids[..cut].to_vec(),
            len,
            cache,
            hidden,
        })
    }

    /// Number of ids of `prompt` up to and including its last placeholder.
    fn cut(prompt: &Prompt) -> usize {
        prompt
            .objects_at
            .iter()
            .chain(prompt.parts_at.iter())
            .copied()
            .chain(std::iter::once(prompt.image_at))
            .max()
            .map_or(0, |i| i + 1)
    }

    /// Number of positions `P` the prefix covers.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held by the cached keys, values and states.
    pub fn bytes(&self) -> usize {
        self.cache.bytes() + tensor_bytes(&self.hidden)
    }

    /// Whether `prompt` (with `seq_len` expanded positions) starts with this prefix and has
    /// tokens of its own after it.
    pub fn matches(&self, prompt: &Prompt, seq_len: usize) -> bool {
        seq_len > self.len && prompt.ids.starts_with(&self.ids)
    }

    /// Prefills `embeds (S, H)` — a whole prompt that [`PromptPrefix::matches`] — on a copy
    /// of the prefix cache: only positions `P..S` are computed. Returns the states of all
    /// `S` positions `(1, S, H)` and the cache, as a full prefill would.
    pub fn prefill(&self, model: &UniRes, embeds: &Tensor) -> Result<(Tensor, KvCache)> {
        let s = embeds.dim(0)?;
        if s <= self.len {
            return Err(Error::shape(
                "prompt prefix",
                format!("a prompt of {s} positions after a prefix of {}", self.len),
            ));
        }
        let mut cache = self.cache.clone();
        let own = embeds.narrow(0, self.len, s - self.len)?.unsqueeze(0)?;
        let h = model.llm().forward(&own, &mut cache)?;
        Ok((Tensor::cat(&[&self.hidden, &h], 1)?, cache))
    }
}
