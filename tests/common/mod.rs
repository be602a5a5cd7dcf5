//! Helpers shared by the integration tests. Each test crate includes this folder with
//! `mod common;` (the parity binary with a `#[path]`) and uses the parts it needs:
//!
//! - this file: fixture paths, the test device, temporary directories, the `unires` binary;
//! - [`tensors`]: seeded inputs and tensor comparisons;
//! - [`eval`]: the benchmark fixture cases of tests/fixtures/eval;
//! - [`scenes`]: the shipped showcase scenes (examples/scenes) and a model's answers on them;
//! - `serve`: running `unires serve --stdio` on request lines;
//! - [`weights`]: the weights fixtures (micro configuration, layouts, a local hub).

// Every test crate compiles all of it but uses only a part.
#![allow(dead_code)]

pub mod eval;
pub mod scenes;
#[cfg(all(feature = "serve", feature = "cli"))]
pub mod serve;
pub mod tensors;
pub mod weights;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use candle_core::Device;

/// `tests/fixtures/<rel>` of this package, or `$UNIRES_FIXTURES/<rel>` when that variable is
/// set (test binaries copied to another machine, as by tools/cuda/package.sh, find their
/// fixtures there instead of at the source path compiled into them).
pub fn fixtures(rel: &str) -> PathBuf {
    match std::env::var_os("UNIRES_FIXTURES") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join(rel),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel),
    }
}

/// The device the parity suite and the op tests compute on: `UNIRES_DEVICE` = `cpu`
/// (default), `cuda`, `cuda:N` or `metal`, as `unires::weights::parse_device` reads it.
/// Created once per process. Panics with the reason when the device cannot be had (an
/// unknown name, a GPU whose cargo feature is off, no such GPU).
pub fn device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let name = device_name();
            unires::weights::parse_device(&name)
                .unwrap_or_else(|e| panic!("UNIRES_DEVICE={name}: {e}"))
        })
        .clone()
}

/// `UNIRES_DEVICE` as set, `cpu` when unset or empty.
pub fn device_name() -> String {
    match std::env::var("UNIRES_DEVICE") {
        Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
        _ => "cpu".to_string(),
    }
}

/// The `unires` command-line program of this build.
#[cfg(feature = "cli")]
pub fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_unires"))
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory whose name contains `tag`, unique within the process and
    /// across processes.
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("unires-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The published layout in `t`: the checkpoint fixture plus the tokenizer fixture
/// (`added_tokens.json` only for the multitask variant).
pub fn evf_checkpoint(t: &TempDir, multitask: bool) -> PathBuf {
    let dir = t.join("evf-sam-tiny");
    std::fs::create_dir_all(&dir).unwrap();
    let ck = fixtures("evf_sam/tiny");
    let tok = fixtures("tokenizer_spm");
    std::fs::copy(ck.join("config.json"), dir.join("config.json")).unwrap();
    std::fs::copy(ck.join("pytorch_model.bin"), dir.join("pytorch_model.bin")).unwrap();
    std::fs::copy(
        tok.join("sentencepiece.bpe.model"),
        dir.join("sentencepiece.bpe.model"),
    )
    .unwrap();
    if multitask {
        std::fs::copy(tok.join("added_tokens.json"), dir.join("added_tokens.json")).unwrap();
    }
    dir
}
