//! Wall time per stage of the inference path, for benchmarks and profiling.
//!
//! Off by default: a stage then costs one relaxed atomic load. [`enable`] turns recording on
//! for the whole process; each thread records the stages it runs into its own list, which
//! [`take`] returns and clears. Stage names: `preprocess`, `clip`, `convnext`, `dense`,
//! `regions`, `llm_prefix` (at encode), `prompt`, `llm_query`, `head`, `upsample`,
//! `instances` (per query). Work a stage hands to other threads (rayon) is inside its time.
//! On a GPU the times are those of launching the work unless the stage ends by reading a
//! result back.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static ON: AtomicBool = AtomicBool::new(false);

thread_local! {
    static TIMES: RefCell<Vec<(&'static str, Duration)>> = const { RefCell::new(Vec::new()) };
}

/// Turns recording on or off (process-wide).
pub fn enable(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// Whether recording is on.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Runs `f` as stage `name`, recording its wall time on this thread when recording is on.
pub fn stage<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    let t = Instant::now();
    let out = f();
    let dt = t.elapsed();
    TIMES.with(|v| v.borrow_mut().push((name, dt)));
    out
}

/// The stages this thread recorded since the last call, in order, and clears them.
pub fn take() -> Vec<(&'static str, Duration)> {
    TIMES.with(|v| std::mem::take(&mut *v.borrow_mut()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_when_on_and_per_thread() {
        let _ = take();
        stage("off", || ());
        assert!(take().is_empty());
        enable(true);
        let x = stage("a", || 2 + 2);
        std::thread::spawn(|| stage("other thread", || ()))
            .join()
            .unwrap();
        stage("b", || ());
        enable(false);
        let got: Vec<&str> = take().into_iter().map(|(n, _)| n).collect();
        assert_eq!((x, got), (4, vec!["a", "b"]));
    }
}
