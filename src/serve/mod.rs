//! `unires serve`: a long-running process that holds one model and answers referring
//! segmentation requests over JSON lines on stdin/stdout ([`stdio`]) or HTTP on a loopback
//! address ([`http`]), through one [`engine::Engine`]: a frame cache (encoded images keyed by
//! content, reused for every further phrase on the same frame, LRU-bounded in bytes), limits
//! on everything a request brings, image paths confined to an image root, and counters.
//! The request and response JSON are in [`protocol`].

pub mod cache;
pub mod engine;
pub mod http;
pub mod protocol;
pub mod stdio;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use engine::{Engine, EngineOptions, ServeLimits};
pub use http::{HttpOptions, HttpServer};
pub use protocol::ErrorKind;
pub use stdio::{serve_lines, StdioOptions, StdioSummary};

use crate::error::{Error, Result};

/// A flag that becomes true on SIGTERM or SIGINT (Unix), for a graceful stop.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    #[cfg(unix)]
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| Error::io("signal handler", e))?;
    }
    Ok(stop)
}
