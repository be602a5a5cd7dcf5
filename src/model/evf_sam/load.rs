//! Loading an EVF-SAM checkpoint in its published layout: `config.json`,
//! `pytorch_model.bin` (read tensor by tensor, never a second full copy) or `model.safetensors`
//! (also sharded), `sentencepiece.bpe.model` and, for the multitask checkpoint,
//! `added_tokens.json` (`[semantic]`). Everything is checked before a tensor is read: the
//! config, the tokenizer's ids against BEiT-3's vocabulary, and every tensor name and shape
//! against the graph (missing, extra and misshapen tensors are errors).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::EvfSam;
use crate::config::{EvfSamConfig, Limits};
use crate::error::{Error, Result};
use crate::io::config_file::read_config_text;
use crate::weights::checkpoint::require_dir;
use crate::weights::hub::{fetch_component, fetch_file, fetch_optional_file, HubOptions};
use crate::weights::inputs::{Input, InputBackend, DIR_CANDIDATES};
use crate::weights::sentencepiece::{load_xlmr_dir, XlmrTokenizer};
use crate::weights::source::{check_dtype, Source};
use crate::weights::validate::{check_requested, id_bound, requested_tensors, Requested};

/// The tokenizer model file of a published checkpoint.
pub const TOKENIZER_MODEL: &str = "sentencepiece.bpe.model";
/// The multitask checkpoint's extra tokens.
pub const ADDED_TOKENS: &str = "added_tokens.json";
/// The prefix token of the multitask checkpoint's part and semantic queries.
pub const SEMANTIC_TOKEN: &str = "[semantic]";

/// A loaded EVF-SAM checkpoint: the graph, its tokenizer, and whether it is the multitask one.
pub struct EvfSamModel {
    pub graph: EvfSam,
    pub tokenizer: XlmrTokenizer,
    /// The tokenizer knows `[semantic]` (the multitask checkpoint: parts and semantic masks).
    pub multitask: bool,
    pub limits: Limits,
}

impl std::fmt::Debug for EvfSamModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvfSamModel")
            .field("graph", &self.graph)
            .field("multitask", &self.multitask)
            .finish_non_exhaustive()
    }
}

/// Every tensor the graph of `cfg` asks for, with its shape, without allocating any.
pub fn requested(cfg: &EvfSamConfig, present: HashSet<String>) -> Result<Vec<Requested>> {
    requested_tensors(present, |vb| EvfSam::new(cfg, vb).map(|_| ()))
}

/// A checked (not yet loaded) checkpoint directory.
pub struct Checked {
    pub config: EvfSamConfig,
    pub tokenizer: XlmrTokenizer,
    pub input: Input,
    pub multitask: bool,
}

/// Checks a checkpoint directory without reading a tensor's data.
pub fn check_dir(dir: &Path) -> Result<Checked> {
    require_dir(dir)?;
    let cfg_path = dir.join("config.json");
    let text = read_config_text(&cfg_path)?;
    let what = cfg_path.display().to_string();
    let config = EvfSamConfig::from_json_str(&what, &text)?;
    let tokenizer = load_xlmr_dir(dir)?;
    let vocab = config.beit3(&what)?.vocab_size;
    let bound = id_bound(tokenizer.tokenizer());
    if bound > vocab {
        return Err(Error::Tokenizer {
            reason: format!(
                "{}: token ids reach {} but BEiT-3's vocabulary has {vocab} entries",
                dir.join(TOKENIZER_MODEL).display(),
                bound - 1
            ),
        });
    }
    let multitask = tokenizer.split_tokens().any(|(t, _)| t == SEMANTIC_TOKEN);
    let input = Input::open(&[dir.to_path_buf()])?;
    let present: HashSet<String> = input.names().into_iter().collect();
    let req = requested(&config, present)?;
    check_requested(&req, &input)?;
    Ok(Checked {
        config,
        tokenizer,
        input,
        multitask,
    })
}

/// Loads a checkpoint directory (after [`check_dir`]) onto `device`, computing in `dtype`.
pub fn load_dir(dir: &Path, device: &Device, dtype: DType) -> Result<EvfSamModel> {
    check_dtype(dtype)?;
    let c = check_dir(dir)?;
    let vb = VarBuilder::from_backend(
        Box::new(InputBackend::new(Arc::new(c.input))),
        dtype,
        device.clone(),
    );
    Ok(EvfSamModel {
        graph: EvfSam::new(&c.config, vb)?,
        tokenizer: c.tokenizer,
        multitask: c.multitask,
        limits: Limits::default(),
    })
}

/// Loads from a directory or a hub repository (config, weights in the first layout found
/// among [`DIR_CANDIDATES`], the tokenizer model and, when present, `added_tokens.json`).
pub fn load_with(
    source: &Source,
    hub: &HubOptions,
    device: &Device,
    dtype: DType,
) -> Result<EvfSamModel> {
    match source {
        Source::Embedded => Err(Error::NoModel {
            reason: "no EVF-SAM model is embedded; pass --weights DIR or --hub YxZhang/evf-sam"
                .into(),
        }),
        Source::Dir(dir) => load_dir(dir, device, dtype),
        Source::Hub { repo, revision } => {
            let dir = fetch_component(repo, revision, DIR_CANDIDATES, hub)?;
            fetch_file(repo, revision, "config.json", hub)?;
            fetch_file(repo, revision, TOKENIZER_MODEL, hub)?;
            fetch_optional_file(repo, revision, ADDED_TOKENS, hub)?;
            load_dir(&dir, device, dtype)
        }
    }
}
