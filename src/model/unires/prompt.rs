//! Prompt assembly: the tokenizer (HF `tokenizer.json` via `tokenizers`), the special tokens
//! of the graph, and where image and region embeddings go in the sequence.
//!
//! The prompt is `system USER: <image> <obj>… <part>… please segment {expr} . ASSISTANT:`
//! (exact text from [`PromptConfig`]). `<image>` is replaced by the projected image tokens,
//! each `<obj>` / `<part>` by one region token. The answer is the granularity token followed
//! by `[SEG]`, appended after the prefill with the KV cache.

use std::collections::BTreeMap;

use tokenizers::Tokenizer;

use crate::config::{Limits, PromptConfig, TokensConfig};
use crate::error::{Error, Result};

/// Ids of the special tokens, resolved from the tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub image: u32,
    pub object: u32,
    pub part: u32,
    /// Granularity tokens in the order part, object, multi.
    pub granularity: [u32; 3],
    pub seg: u32,
}

/// A tokenised prompt and where its placeholders are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub ids: Vec<u32>,
    /// Index in `ids` of the `<image>` placeholder.
    pub image_at: usize,
    /// Indices in `ids` of the `<obj>` placeholders, in proposal order.
    pub objects_at: Vec<usize>,
    /// Indices in `ids` of the `<part>` placeholders, in proposal order.
    pub parts_at: Vec<usize>,
}

impl Prompt {
    /// Sequence length once `<image>` is expanded to `n_image` tokens.
    pub fn expanded_len(&self, n_image: usize) -> usize {
        self.ids.len() - 1 + n_image
    }

    /// Position in the expanded sequence of the token at `i` in `ids`.
    pub fn expanded_pos(&self, i: usize, n_image: usize) -> usize {
        if i > self.image_at {
            i - 1 + n_image
        } else {
            i
        }
    }
}

/// Builds prompts with a tokenizer and the configured template.
#[derive(Clone)]
pub struct PromptBuilder {
    tokenizer: Tokenizer,
    ids: SpecialIds,
    tokens: TokensConfig,
    cfg: PromptConfig,
    max_chars: usize,
}

impl std::fmt::Debug for PromptBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptBuilder")
            .field("ids", &self.ids)
            .finish_non_exhaustive()
    }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer {
        reason: e.to_string(),
    }
}

impl PromptBuilder {
    /// Resolves the special tokens; a tokenizer that lacks one is an error.
    pub fn new(
        tokenizer: Tokenizer,
        tokens: &TokensConfig,
        cfg: &PromptConfig,
        limits: &Limits,
    ) -> Result<Self> {
        let id = |t: &str| {
            tokenizer
                .token_to_id(t)
                .ok_or_else(|| Error::MissingSpecialToken {
                    token: t.to_string(),
                })
        };
        let ids = SpecialIds {
            image: id(&tokens.image)?,
            object: id(&tokens.object)?,
            part: id(&tokens.part)?,
            granularity: [
                id(&tokens.granularity[0])?,
                id(&tokens.granularity[1])?,
                id(&tokens.granularity[2])?,
            ],
            seg: id(&tokens.seg)?,
        };
        Ok(Self {
            tokenizer,
            ids,
            tokens: tokens.clone(),
            cfg: cfg.clone(),
            max_chars: limits.max_expression_chars,
        })
    }

    /// Parses a `tokenizer.json` text.
    pub fn tokenizer_from_json(json: &[u8]) -> Result<Tokenizer> {
        Tokenizer::from_bytes(json).map_err(tok_err)
    }

    pub fn ids(&self) -> SpecialIds {
        self.ids
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Checks a referring expression: not empty, within the length limit, no special tokens.
    pub fn check_expression<'a>(&self, expression: &'a str) -> Result<&'a str> {
        let e = expression.trim();
        if e.is_empty() {
            return Err(Error::EmptyExpression);
        }
        let chars = e.chars().count();
        if chars > self.max_chars {
            return Err(Error::ExpressionTooLong {
                chars,
                max: self.max_chars,
            });
        }
        let specials = [
            &self.tokens.image,
            &self.tokens.object,
            &self.tokens.part,
            &self.tokens.granularity[0],
            &self.tokens.granularity[1],
            &self.tokens.granularity[2],
            &self.tokens.seg,
        ];
        if let Some(t) = specials.iter().find(|t| e.contains(t.as_str())) {
            return Err(Error::ExpressionHasSpecialToken {
                token: t.to_string(),
            });
        }
        Ok(e)
    }

    /// Tokenises the prompt for `expression` with `n_objects` + `n_parts` region tokens.
    pub fn build(&self, expression: &str, n_objects: usize, n_parts: usize) -> Result<Prompt> {
        let expression = self.check_expression(expression)?;
        let mut regions: Vec<&str> = Vec::with_capacity(n_objects + n_parts);
        regions.extend(std::iter::repeat_n(self.tokens.object.as_str(), n_objects));
        regions.extend(std::iter::repeat_n(self.tokens.part.as_str(), n_parts));
        let user = self
            .cfg
            .user
            .replace("{regions}", &regions.join(" "))
            .replace("{expression}", expression);
        let text = [
            self.cfg.system.as_str(),
            user.as_str(),
            self.cfg.assistant.as_str(),
        ]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
        let enc = self
            .tokenizer
            .encode(text, self.cfg.add_bos)
            .map_err(tok_err)?;
        let ids = enc.get_ids().to_vec();
        let find_all = |t: u32| -> Vec<usize> {
            ids.iter()
                .enumerate()
                .filter(|(_, &x)| x == t)
                .map(|(i, _)| i)
                .collect()
        };
        let images = find_all(self.ids.image);
        let objects_at = find_all(self.ids.object);
        let parts_at = find_all(self.ids.part);
        if images.len() != 1 || objects_at.len() != n_objects || parts_at.len() != n_parts {
            return Err(Error::Config {
                what: "prompt template".into(),
                reason: format!(
                    "expected one {} and {n_objects} {} / {n_parts} {} tokens, found {} / {} / {}",
                    self.tokens.image,
                    self.tokens.object,
                    self.tokens.part,
                    images.len(),
                    objects_at.len(),
                    parts_at.len()
                ),
            });
        }
        Ok(Prompt {
            ids,
            image_at: images[0],
            objects_at,
            parts_at,
        })
    }
}

/// Special tokens every unires tokenizer carries, in id order for a fresh word-level vocabulary.
pub fn special_token_list(tokens: &TokensConfig) -> Vec<String> {
    let mut v: Vec<String> = ["<unk>", "<s>", "</s>", "<pad>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.push(tokens.image.clone());
    v.push(tokens.object.clone());
    v.push(tokens.part.clone());
    v.extend(tokens.granularity.iter().cloned());
    v.push(tokens.seg.clone());
    v
}

/// The words of the chat template itself (system, user and assistant text without the
/// `{regions}` / `{expression}` placeholders and special tokens), lowercased and split as the
/// word-level tokenizer splits text: runs of letters, digits and `_`, and runs of other
/// non-space characters.
pub fn template_words(prompt: &PromptConfig, tokens: &TokensConfig) -> Vec<String> {
    let mut text = [&prompt.system, &prompt.user, &prompt.assistant]
        .map(|t| t.replace("{regions}", " ").replace("{expression}", " "))
        .join(" ");
    for t in special_token_list(tokens) {
        text = text.replace(&t, " ");
    }
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut cur_word = false;
    for c in text.to_lowercase().chars() {
        let word = c.is_alphanumeric() || c == '_';
        if (c.is_whitespace() || word != cur_word) && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        if !c.is_whitespace() {
            cur.push(c);
            cur_word = word;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|w| seen.insert(w.clone()));
    out
}

/// A prompt builder on a word-level tokenizer over the template's own words
/// ([`template_words`]) and `words`, with that tokenizer's `tokenizer.json` text.
pub fn word_level_prompt(
    prompt: &PromptConfig,
    tokens: &TokensConfig,
    limits: &Limits,
    words: &[&str],
) -> Result<(PromptBuilder, String)> {
    let own = template_words(prompt, tokens);
    let all: Vec<&str> = own
        .iter()
        .map(String::as_str)
        .chain(words.iter().copied())
        .collect();
    let json = word_level_tokenizer_json(&all, tokens);
    let tok = PromptBuilder::tokenizer_from_json(json.as_bytes())?;
    Ok((PromptBuilder::new(tok, tokens, prompt, limits)?, json))
}

/// A word-level `tokenizer.json` (lowercasing, whitespace/punctuation splitting, `<s>` BOS)
/// over the special tokens and `words` — what the `tiny` preset uses.
pub fn word_level_tokenizer_json(words: &[&str], tokens: &TokensConfig) -> String {
    let specials = special_token_list(tokens);
    let mut vocab: BTreeMap<String, u32> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for s in specials
        .iter()
        .map(|s| s.to_string())
        .chain(words.iter().map(|w| w.to_lowercase()))
    {
        if !vocab.contains_key(&s) {
            vocab.insert(s.clone(), order.len() as u32);
            order.push(s);
        }
    }
    let added: Vec<serde_json::Value> = specials
        .iter()
        .map(|s| {
            serde_json::json!({"id": vocab[s.as_str()], "content": s, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let bos = vocab["<s>"];
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [bos], "tokens": ["<s>"]}}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    serde_json::to_string_pretty(&json).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UniResConfig;

    fn builder() -> PromptBuilder {
        let cfg = UniResConfig::tiny();
        word_level_prompt(
            &cfg.prompt,
            &cfg.tokens,
            &cfg.limits,
            &["the", "red", "mug"],
        )
        .unwrap()
        .0
    }

    #[test]
    fn template_words_are_the_tokenizer_splits() {
        let cfg = UniResConfig::tiny();
        assert_eq!(
            template_words(&cfg.prompt, &cfg.tokens),
            ["user", ":", "please", "segment", ".", "assistant"]
        );
    }

    #[test]
    fn placeholders_are_found_in_order() {
        let b = builder();
        let p = b.build("The red MUG", 2, 3).unwrap();
        let ids = b.ids();
        assert_eq!(p.ids[0], 1, "BOS first");
        assert_eq!(p.ids[p.image_at], ids.image);
        assert_eq!(p.objects_at.len(), 2);
        assert_eq!(p.parts_at.len(), 3);
        assert!(p.image_at < p.objects_at[0] && p.objects_at[1] < p.parts_at[0]);
        // The expression is lowercased and tokenised word by word, none of it unknown.
        let unk = b.tokenizer().token_to_id("<unk>").unwrap();
        assert!(!p.ids.contains(&unk));
        assert_eq!(p.expanded_len(10), p.ids.len() + 9);
        assert_eq!(p.expanded_pos(p.objects_at[0], 10), p.objects_at[0] + 9);
    }

    #[test]
    fn bad_expressions_are_typed_errors() {
        let b = builder();
        assert!(matches!(b.build("   ", 0, 0), Err(Error::EmptyExpression)));
        assert!(matches!(
            b.build(&"a".repeat(10_000), 0, 0),
            Err(Error::ExpressionTooLong { .. })
        ));
        assert!(matches!(
            b.build("the [SEG] mug", 0, 0),
            Err(Error::ExpressionHasSpecialToken { .. })
        ));
    }

    #[test]
    fn missing_special_token_is_reported() {
        let cfg = UniResConfig::tiny();
        let mut tokens = cfg.tokens.clone();
        let json = word_level_tokenizer_json(&["a"], &tokens);
        tokens.seg = "<seg_missing>".into();
        let tok = PromptBuilder::tokenizer_from_json(json.as_bytes()).unwrap();
        assert!(matches!(
            PromptBuilder::new(tok, &tokens, &cfg.prompt, &cfg.limits),
            Err(Error::MissingSpecialToken { .. })
        ));
    }
}
