//! Helpers shared by the examples (each includes this file with `#[path]`).

/// A `/proc/self/status` memory field (`VmRSS:` now, `VmHWM:` the peak) in KiB; 0 where
/// there is no such file (not Linux).
pub fn status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
