//! A PyTorch zip-format pickle → open through candle's pickle reader and read every tensor.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use unires::weights::pickle::PickleFile;

fuzz_target!(|data: &[u8]| {
    let p = common::scratch("pytorch_model.bin", data);
    if let Ok(f) = PickleFile::open(&p) {
        let names: Vec<String> = f.tensors().keys().cloned().collect();
        for n in names {
            let _ = f.tensor(&n);
        }
    }
});
