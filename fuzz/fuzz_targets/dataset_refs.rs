//! The referring-expression annotation files of the benchmarks: `refs(*).p` (Python pickle)
//! and the JSON form, read by the evaluation's loaders.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = common::scratch("refs.p", data);
    let _ = unires::eval::refs::read_refs_pickle(&p);
    let j = common::scratch("refs.json", data);
    let _ = unires::eval::refs::read_refs_json(&j);
});
