//! A safetensors file → open (header length, JSON header, dtypes, shapes, offsets checked
//! against the file) and read every tensor it lists.
#![no_main]

#[path = "common.rs"]
mod common;

use candle_core::Device;
use libfuzzer_sys::fuzz_target;
use unires::weights::checkpoint::SafetensorsFile;

fuzz_target!(|data: &[u8]| {
    let p = common::scratch("model.safetensors", data);
    if let Ok(f) = SafetensorsFile::open(&p) {
        let names: Vec<String> = f.tensors().keys().cloned().collect();
        for n in names {
            let _ = f.tensor(&n, &Device::Cpu);
        }
    }
});
