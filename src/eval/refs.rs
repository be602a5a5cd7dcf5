//! Referring-expression records as published: the refer toolkit's `refs(<split_by>).p`
//! (Python-2 pickles, protocol 2, strings as `BINSTRING`/`SHORT_BINSTRING`), and gRefCOCO's
//! `grefs(unc).json` (or its pickle twin), where `ann_id` is an int or a list and `[-1]`
//! means "no target".

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_pickle::{DeOptions, HashableValue, Value};

use crate::error::{Error, Result};
use crate::io::read::{read_capped, read_capped_to_string, MAX_DATASET_BYTES};

/// The annotation id gRefCOCO uses for "refers to nothing".
pub const NO_TARGET_ANN_ID: i64 = -1;

/// One sentence of a referent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentenceRecord {
    pub sent_id: i64,
    /// `raw` (the expression as typed) when present, else `sent` (the normalised one).
    pub text: String,
}

/// One referent: an object (RefCOCO family) or a target set (gRefCOCO).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefRecord {
    pub ref_id: i64,
    pub image_id: i64,
    /// The split as written in the file (`train`, `val`, `testA`, …).
    pub split: String,
    /// Annotation ids; `[-1]` for a gRefCOCO no-target referent.
    pub ann_ids: Vec<i64>,
    pub sentences: Vec<SentenceRecord>,
}

impl RefRecord {
    /// True for gRefCOCO's `ann_id == [-1]`.
    pub fn is_no_target(&self) -> bool {
        self.ann_ids == [NO_TARGET_ANN_ID]
    }
}

fn dataset_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Dataset {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads a refer-toolkit refs pickle (also gRefCOCO's `grefs(unc).p`).
pub fn read_refs_pickle(path: &Path) -> Result<Vec<RefRecord>> {
    let bytes = read_capped(path, MAX_DATASET_BYTES, "refs pickle")?;
    // Python-2 `str` stays bytes here; the fields are decoded one by one below so that a
    // stray non-UTF-8 byte in one sentence does not make the whole file unreadable.
    let value = serde_pickle::value_from_slice(&bytes, DeOptions::new())
        .map_err(|e| dataset_err(path, format!("not a readable pickle: {e}")))?;
    let refs = as_list(&value).ok_or_else(|| dataset_err(path, "expected a list of refs"))?;
    refs.iter()
        .enumerate()
        .map(|(i, r)| ref_from_value(r).map_err(|why| dataset_err(path, format!("ref {i}: {why}"))))
        .collect()
}

fn as_list(v: &Value) -> Option<&Vec<Value>> {
    match v {
        Value::List(items) | Value::Tuple(items) => Some(items),
        _ => None,
    }
}

fn field<'a>(d: &'a BTreeMap<HashableValue, Value>, key: &str) -> Option<&'a Value> {
    d.get(&HashableValue::Bytes(key.as_bytes().to_vec()))
        .or_else(|| d.get(&HashableValue::String(key.to_string())))
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::I64(i) => Some(*i),
        Value::Int(big) => big.to_string().parse().ok(),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn req<'a>(
    d: &'a BTreeMap<HashableValue, Value>,
    key: &str,
) -> std::result::Result<&'a Value, String> {
    field(d, key).ok_or_else(|| format!("no {key:?}"))
}

fn req_int(d: &BTreeMap<HashableValue, Value>, key: &str) -> std::result::Result<i64, String> {
    int(req(d, key)?).ok_or_else(|| format!("{key:?} is not an integer"))
}

fn ref_from_value(v: &Value) -> std::result::Result<RefRecord, String> {
    let Value::Dict(d) = v else {
        return Err("not a dict".into());
    };
    let ann_ids = match req(d, "ann_id")? {
        Value::List(items) | Value::Tuple(items) => items
            .iter()
            .map(|x| int(x).ok_or_else(|| "\"ann_id\" holds a non-integer".to_string()))
            .collect::<std::result::Result<Vec<_>, _>>()?,
        other => vec![int(other).ok_or("\"ann_id\" is not an integer or a list")?],
    };
    let split = text(req(d, "split")?).ok_or("\"split\" is not a string")?;
    let sentences = as_list(req(d, "sentences")?)
        .ok_or("\"sentences\" is not a list")?
        .iter()
        .enumerate()
        .map(|(j, s)| {
            let Value::Dict(sd) = s else {
                return Err(format!("sentence {j} is not a dict"));
            };
            let sent_id = req_int(sd, "sent_id").map_err(|e| format!("sentence {j}: {e}"))?;
            let text = field(sd, "raw")
                .and_then(text)
                .or_else(|| field(sd, "sent").and_then(text))
                .ok_or_else(|| format!("sentence {j} has neither \"raw\" nor \"sent\""))?;
            Ok(SentenceRecord { sent_id, text })
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RefRecord {
        ref_id: req_int(d, "ref_id")?,
        image_id: req_int(d, "image_id")?,
        split,
        ann_ids,
        sentences,
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(i64),
    Many(Vec<i64>),
}

#[derive(Deserialize)]
struct SentenceJson {
    sent_id: i64,
    #[serde(default)]
    raw: Option<String>,
    #[serde(default)]
    sent: Option<String>,
}

#[derive(Deserialize)]
struct RefJson {
    ref_id: i64,
    image_id: i64,
    split: String,
    ann_id: OneOrMany,
    sentences: Vec<SentenceJson>,
}

/// Reads gRefCOCO's `grefs(unc).json`.
pub fn read_refs_json(path: &Path) -> Result<Vec<RefRecord>> {
    let text = read_capped_to_string(path, MAX_DATASET_BYTES, "refs file")?;
    let refs: Vec<RefJson> = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    refs.into_iter()
        .map(|r| {
            let sentences = r
                .sentences
                .into_iter()
                .map(|s| {
                    let text = s.raw.or(s.sent).ok_or_else(|| {
                        dataset_err(
                            path,
                            format!(
                                "ref {}: sentence {} has neither \"raw\" nor \"sent\"",
                                r.ref_id, s.sent_id
                            ),
                        )
                    })?;
                    Ok(SentenceRecord {
                        sent_id: s.sent_id,
                        text,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(RefRecord {
                ref_id: r.ref_id,
                image_id: r.image_id,
                split: r.split,
                ann_ids: match r.ann_id {
                    OneOrMany::One(a) => vec![a],
                    OneOrMany::Many(v) => v,
                },
                sentences,
            })
        })
        .collect()
}
