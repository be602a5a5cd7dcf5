//! Held-out phrasings: the same structured queries ([`Query`]) said in ways the training
//! templates never use, to measure how much the model leans on the templates' syntax.
//!
//! The trained templates give the granularity away ("the X of …" is a part, "all …" and
//! "the two …" are multi-object). The held-out forms break those cues:
//!
//! | query | held-out forms (one is drawn per sample) |
//! |---|---|
//! | object | relative clauses ("the car that is red", "the car that is on the left"), colour after the noun ("the car in red"), a fronted group ("of the cars, the one on the left"), "the only car" |
//! | part | possessives ("the red car's window"), "the window on the red car", "the window that belongs to the car on the left" |
//! | all | "every red car", "each car", bare plurals ("the cars", "the red cars"), "all of the cars", "everything that is red" |
//! | count | "both cars", "three red mugs" (no article), "the cars, both of them" |
//!
//! Words outside the training vocabulary ("that", "is", "every", "both", "'s", …) are part of
//! the test: a word-level tokenizer maps them to its unknown token. None of these forms is
//! ever used in training (`examples/train_synthetic.rs` draws from [`Query::text`] only).

use std::fmt;
use std::str::FromStr;

use super::query::{join, Description, Query, Relation};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// Which phrasing a synthetic evaluation uses (`unires eval --dataset synthetic --phrasing …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phrasing {
    /// The templates the model was trained on ([`Query::text`]).
    #[default]
    Trained,
    /// [`heldout_text`]: never seen in training.
    Heldout,
}

impl Phrasing {
    pub const ALL: [Phrasing; 2] = [Phrasing::Trained, Phrasing::Heldout];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Phrasing::Trained => "trained",
            Phrasing::Heldout => "heldout",
        }
    }
}

impl fmt::Display for Phrasing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Phrasing {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Phrasing::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| Error::Config {
                what: "phrasing".into(),
                reason: format!("`{s}` is not one of trained, heldout"),
            })
    }
}

/// The relation as a predicate after "that is": "on the left", "the biggest".
fn predicate(r: Relation) -> String {
    match r.words() {
        ("", post) => post.to_string(),
        (pre, _) => format!("the {pre}"),
    }
}

/// "the [pre] [colour] class" without a trailing relation (for possessives).
fn noun_phrase(d: &Description) -> String {
    let pre = d.relation.map_or("", |r| r.words().0);
    join(&[
        "the",
        pre,
        d.colour.map_or("", |c| c.name()),
        d.class.name(),
    ])
}

fn object_text(d: &Description, rng: &mut SplitMix64) -> String {
    let colour = d.colour.map(|c| c.name());
    match (colour, d.relation) {
        (None, None) => match rng.below(2) {
            0 => format!("the only {}", d.class.name()),
            _ => format!("that {}", d.class.name()),
        },
        (Some(c), None) => match rng.below(2) {
            0 => format!("the {} that is {c}", d.class.name()),
            _ => format!("the {} in {c}", d.class.name()),
        },
        (colour, Some(r)) => {
            let group = join(&["the", colour.unwrap_or(""), d.class.plural()]);
            let one = match r.words() {
                ("", post) => format!("the one {post}"),
                (pre, _) => format!("the {pre} one"),
            };
            match rng.below(2) {
                0 => format!("of {group}, {one}"),
                _ => join(&[
                    "the",
                    colour.unwrap_or(""),
                    d.class.name(),
                    "that is",
                    &predicate(r),
                ]),
            }
        }
    }
}

fn part_text(part: &str, of: &Description, rng: &mut SplitMix64) -> String {
    let post_relation = of.relation.is_some_and(|r| r.words().0.is_empty());
    if post_relation {
        let mut plain = *of;
        plain.relation = None;
        let r = of.relation.map(predicate).unwrap_or_default();
        return match rng.below(2) {
            0 => format!("the {part} that belongs to {} {r}", noun_phrase(&plain)),
            _ => format!("{}'s {part}, the one {r}", noun_phrase(&plain)),
        };
    }
    match rng.below(2) {
        0 => format!("{}'s {part}", noun_phrase(of)),
        _ => format!("the {part} on {}", noun_phrase(of)),
    }
}

/// A held-out phrasing of `q` (see the module docs); `rng` picks among the forms.
pub fn heldout_text(q: &Query, rng: &mut SplitMix64) -> String {
    match q {
        Query::Object(d) => object_text(d, rng),
        Query::Part { part, of } => part_text(part.name(), of, rng),
        Query::All { class, colour } => {
            let c = colour.map_or("", |c| c.name());
            match class {
                None => match rng.below(2) {
                    0 => format!("everything that is {c}"),
                    _ => join(&["all the", c, "things"]),
                },
                Some(k) => match rng.below(4) {
                    0 => join(&["every", c, k.name()]),
                    1 => join(&["each", c, k.name()]),
                    2 => join(&["the", c, k.plural()]),
                    _ => join(&["all of the", c, k.plural()]),
                },
            }
        }
        Query::Count { n, class, colour } => {
            let c = colour.map_or("", |c| c.name());
            let plural = join(&[c, class.plural()]);
            match (n, rng.below(2)) {
                (2, 0) => format!("both {plural}"),
                (2, _) => format!("the {plural}, both of them"),
                (n, _) => {
                    let word = super::query::COUNT_WORDS.get(*n).copied().unwrap_or("");
                    join(&[word, &plural])
                }
            }
        }
    }
}

/// Function words of the training templates that [`perturb`] may drop.
pub const FUNCTION_WORDS: [&str; 5] = ["the", "of", "on", "at", "all"];

/// A word outside every vocabulary of the crate, which a word-level tokenizer maps to its
/// unknown token; [`perturb`] inserts it.
pub const UNKNOWN_WORD: &str = "zzq";

/// A training-time perturbation of a trained phrase that keeps its content words in order:
/// each function word ([`FUNCTION_WORDS`]) is dropped with probability ½, and half of the
/// time an unknown word ([`UNKNOWN_WORD`]) is inserted somewhere. The model then has to read
/// the granularity from the nouns ("window", "cars") rather than from the template's syntax
/// ("the X of …", "all …"), and learns that an unknown token carries nothing. It uses none of
/// the held-out forms or their words.
pub fn perturb(text: &str, rng: &mut SplitMix64) -> String {
    let mut words: Vec<&str> = text
        .split(' ')
        .filter(|w| !(FUNCTION_WORDS.contains(w) && rng.chance(0.5)))
        .collect();
    if rng.chance(0.5) {
        let at = rng.below(words.len() + 1);
        words.insert(at, UNKNOWN_WORD);
    }
    if words.iter().all(|w| *w == UNKNOWN_WORD) {
        return text.to_string();
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{episode, SyntheticConfig};

    #[test]
    fn heldout_forms_never_equal_a_trained_phrase() {
        let cfg = SyntheticConfig::mixed_sizes();
        let mut trained = std::collections::HashSet::new();
        let mut queries = Vec::new();
        for i in 0..300 {
            for s in episode(31, i, &cfg).samples {
                trained.insert(s.expression.clone());
                queries.push(s.query);
            }
        }
        let mut rng = SplitMix64::new(9);
        let mut distinct = std::collections::HashSet::new();
        for q in &queries {
            let h = heldout_text(q, &mut rng);
            assert!(!trained.contains(&h), "{h:?} is a trained phrase");
            assert_ne!(h, q.text());
            assert!(!h.is_empty() && !h.contains("  "), "{h:?}");
            distinct.insert(h);
        }
        // About as many distinct phrases as the trained forms have, not one fallback.
        assert!(
            distinct.len() >= trained.len(),
            "{} held-out vs {} trained phrases",
            distinct.len(),
            trained.len()
        );
    }

    #[test]
    fn perturb_keeps_the_content_words_in_order() {
        let mut rng = SplitMix64::new(4);
        let text = "the window of the red car on the left";
        let content: Vec<&str> = text
            .split(' ')
            .filter(|w| !FUNCTION_WORDS.contains(w))
            .collect();
        let mut changed = 0;
        for _ in 0..200 {
            let p = perturb(text, &mut rng);
            let kept: Vec<&str> = p
                .split(' ')
                .filter(|w| !FUNCTION_WORDS.contains(w) && *w != UNKNOWN_WORD)
                .collect();
            assert_eq!(kept, content, "{p:?}");
            changed += usize::from(p != text);
        }
        assert!(changed > 150, "{changed}");
        // The held-out forms' words never appear.
        for w in ["that", "is", "every", "each", "both", "'s", "in", "only"] {
            assert!(!FUNCTION_WORDS.contains(&w) && UNKNOWN_WORD != w);
        }
    }

    #[test]
    fn phrasing_parses_by_name() {
        for p in Phrasing::ALL {
            assert_eq!(p.name().parse::<Phrasing>().ok(), Some(p));
        }
        assert!("paraphrased".parse::<Phrasing>().is_err());
    }
}
