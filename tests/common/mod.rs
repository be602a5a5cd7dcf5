//! Helpers shared by the integration tests. Each test crate includes this folder with
//! `mod common;` (the parity binary with a `#[path]`) and uses the parts it needs:
//!
//! - this file: fixture paths, temporary directories, the `unires` binary;
//! - [`tensors`]: seeded inputs and tensor comparisons;
//! - [`eval`]: the benchmark fixture cases of tests/fixtures/eval;
//! - [`weights`]: the weights fixtures (micro configuration, layouts, a local hub).

// Every test crate compiles all of it but uses only a part.
#![allow(dead_code)]

pub mod eval;
pub mod tensors;
pub mod weights;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// `tests/fixtures/<rel>` of this package.
pub fn fixtures(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
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
