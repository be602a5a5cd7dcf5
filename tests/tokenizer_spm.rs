//! The XLM-R tokenizer built from a sentencepiece model (src/weights/sentencepiece/) against
//! transformers 4.31's slow `XLMRobertaTokenizer` on the strings of
//! tests/fixtures/tokenizer_spm/cases.json (made by tests/fixtures/gen/fixtures_spm_tokenizer.py
//! with a small unigram model trained for the purpose, and the EVF-SAM added token
//! `[semantic]`).

mod common;

use tokenizers::{NormalizedString, Normalizer};
use unires::error::{Error, SpmProblem};
use unires::weights::sentencepiece::{load_xlmr_dir, xlmr_tokenizer, XlmrTokenizer};

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

#[derive(serde::Deserialize)]
struct Cases {
    vocab_size: usize,
    added_tokens: std::collections::BTreeMap<String, u32>,
    cases: Vec<Case>,
}

fn load() -> (XlmrTokenizer, Cases) {
    let tok = load_xlmr_dir(&common::fixtures("tokenizer_spm")).unwrap();
    let path = common::fixtures("tokenizer_spm/cases.json");
    let cases: Cases = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(cases.cases.len() >= 2000, "{} cases", cases.cases.len());
    (tok, cases)
}

fn report(tok: &XlmrTokenizer, bad: &[(&Case, Vec<u32>)], total: usize, what: &str) {
    let pieces = |ids: &[u32]| -> Vec<String> {
        ids.iter()
            .map(|&i| tok.tokenizer().id_to_token(i).unwrap_or(format!("#{i}")))
            .collect::<Vec<_>>()
    };
    for (c, got) in bad.iter().take(10) {
        eprintln!(
            "{:?}\n  expected {:?} {:?}\n  got      {:?} {:?}",
            c.text,
            c.ids,
            pieces(&c.ids),
            got,
            pieces(got)
        );
    }
    eprintln!("{what}: {total} strings, {} mismatches", bad.len());
}

#[test]
fn ids_match_the_slow_tokenizer() {
    let (tok, cases) = load();
    let vocab = tok.tokenizer().get_vocab_size(true);
    assert_eq!(vocab, cases.vocab_size);
    for (t, id) in &cases.added_tokens {
        assert_eq!(tok.tokenizer().token_to_id(t), Some(*id), "{t}");
    }
    let mut bad = Vec::new();
    for c in &cases.cases {
        let got = tok.encode(&c.text, true).unwrap();
        if got != c.ids {
            bad.push((c, got));
        }
    }
    report(&tok, &bad, cases.cases.len(), "XlmrTokenizer");
    assert!(
        bad.is_empty(),
        "{} of {} differ",
        bad.len(),
        cases.cases.len()
    );
}

/// The plain `tokenizers::Tokenizer` differs only where its `Precompiled` normaliser does.
#[test]
fn the_plain_tokenizer_differs_only_in_normalisation() {
    let (tok, cases) = load();
    let plain = tok.tokenizer();
    let normalizer = plain.get_normalizer().unwrap();
    let mut bad = Vec::new();
    for c in &cases.cases {
        let got = plain
            .encode(c.text.as_str(), true)
            .unwrap()
            .get_ids()
            .to_vec();
        if got == c.ids {
            continue;
        }
        let mut n = NormalizedString::from(c.text.as_str());
        normalizer.normalize(&mut n).unwrap();
        let theirs = n.get().replace(' ', "\u{2581}");
        assert_ne!(theirs, tok.normalize(&c.text), "{:?}", c.text);
        bad.push((c, got));
    }
    report(&tok, &bad, cases.cases.len(), "tokenizers::Tokenizer");
    // Combining marks and Hangul jamo: a small share of the fixture's strings.
    assert!(bad.len() * 10 < cases.cases.len(), "{} differ", bad.len());
}

#[test]
fn encodes_evf_prompts() {
    let (tok, _) = load();
    let sem = tok.tokenizer().token_to_id("[semantic]").unwrap();
    let a = tok.encode("[semantic] person hair", true).unwrap();
    let b = tok.encode("person hair", true).unwrap();
    assert_eq!(a[..2], [0, sem]);
    assert_eq!(a[2..], b[1..]);
    assert_eq!(tok.encode("", true).unwrap(), [0, 2]);
    assert_eq!(tok.encode("   ", false).unwrap(), Vec::<u32>::new());
}

fn model_bytes() -> Vec<u8> {
    std::fs::read(common::fixtures("tokenizer_spm/sentencepiece.bpe.model")).unwrap()
}

fn spm_problem(r: unires::Result<XlmrTokenizer>) -> SpmProblem {
    match r {
        Err(Error::SentencePiece { problem, .. }) => problem,
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn refuses_models_it_does_not_reproduce() {
    // A second trainer_spec merges into the first: model_type = BPE (2).
    let mut bpe = model_bytes();
    bpe.extend([0x12, 0x02, 0x18, 0x02]);
    assert_eq!(
        spm_problem(XlmrTokenizer::new(&bpe, &[])),
        SpmProblem::NotUnigram { model_type: 2 }
    );
    assert!(xlmr_tokenizer(&bpe, &[]).is_err());
    // byte_fallback = true (field 35).
    let mut bytes = model_bytes();
    bytes.extend([0x12, 0x03, 0x98, 0x02, 0x01]);
    assert!(matches!(
        spm_problem(XlmrTokenizer::new(&bytes, &[])),
        SpmProblem::Unsupported { .. }
    ));
    // unk_id = 5 (field 40).
    let mut bytes = model_bytes();
    bytes.extend([0x12, 0x03, 0xc0, 0x02, 0x05]);
    assert!(matches!(
        spm_problem(XlmrTokenizer::new(&bytes, &[])),
        SpmProblem::Layout { .. }
    ));
    let cut = model_bytes()[..1000].to_vec();
    assert!(matches!(
        spm_problem(XlmrTokenizer::new(&cut, &[])),
        SpmProblem::Truncated { .. }
    ));
}

#[test]
fn added_tokens_take_the_next_free_ids() {
    let model = model_bytes();
    let added = |v: &[(&str, u32)]| -> Vec<(String, u32)> {
        v.iter().map(|(s, i)| (s.to_string(), *i)).collect()
    };
    // 4000 pieces: <mask> = 4001, the first added token 4002.
    let two = added(&[("[part]", 4003), ("[semantic]", 4002)]);
    let tok = XlmrTokenizer::new(&model, &two).unwrap();
    assert_eq!(tok.tokenizer().token_to_id("<mask>"), Some(4001));
    assert_eq!(tok.tokenizer().token_to_id("[part]"), Some(4003));
    let enc = |s: &str| tok.encode(s, false).unwrap();
    let want = [enc("a"), vec![4003], enc("b"), vec![4002]].concat();
    assert_eq!(enc("a [part]b[semantic] "), want);
    assert_eq!(
        spm_problem(XlmrTokenizer::new(&model, &added(&[("[semantic]", 64002)]))),
        SpmProblem::AddedTokenId {
            token: "[semantic]".into(),
            got: 64002,
            expected: 4002
        }
    );
    let gap = added(&[("[semantic]", 4002), ("[part]", 4004)]);
    assert!(matches!(
        spm_problem(XlmrTokenizer::new(&model, &gap)),
        SpmProblem::AddedTokenId { expected: 4003, .. }
    ));
    for clash in ["<mask>", "▁the", ""] {
        assert_eq!(
            spm_problem(XlmrTokenizer::new(&model, &added(&[(clash, 4002)]))),
            SpmProblem::AddedTokenClash {
                token: clash.into()
            }
        );
    }
}

#[test]
fn directory_errors_are_typed() {
    let dir = common::TempDir::new("spm");
    let missing = dir.join("nope");
    assert!(matches!(
        load_xlmr_dir(&missing),
        Err(Error::FileNotFound { path }) if path == missing
    ));
    assert!(matches!(
        load_xlmr_dir(dir.path()),
        Err(Error::FileNotFound { path }) if path.ends_with("sentencepiece.bpe.model")
    ));
    std::fs::write(dir.join("sentencepiece.bpe.model"), model_bytes()).unwrap();
    assert!(matches!(
        load_xlmr_dir(&dir.join("sentencepiece.bpe.model")),
        Err(Error::NotADirectory { .. })
    ));
    // Without added_tokens.json there is no [semantic].
    let tok = load_xlmr_dir(dir.path()).unwrap();
    assert_eq!(tok.tokenizer().get_vocab_size(true), 4002);
    assert_eq!(tok.tokenizer().token_to_id("[semantic]"), None);
    std::fs::write(dir.join("added_tokens.json"), "{\"[semantic]\": \"x\"}").unwrap();
    assert!(matches!(load_xlmr_dir(dir.path()), Err(Error::Json { .. })));
    std::fs::write(dir.join("added_tokens.json"), "{\"[semantic]\": 64002}").unwrap();
    let e = load_xlmr_dir(dir.path()).err().unwrap();
    assert!(e.to_string().contains("added_tokens.json"), "{e}");
    std::fs::write(dir.join("sentencepiece.bpe.model"), b"\x0a\xff").unwrap();
    let e = load_xlmr_dir(dir.path()).err().unwrap();
    assert!(
        e.to_string().contains("sentencepiece.bpe.model: truncated"),
        "{e}"
    );
}
