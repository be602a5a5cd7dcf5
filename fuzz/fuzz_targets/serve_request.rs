//! A request body → the engine of `unires serve` on the embedded model (paths confined to an
//! empty image root, inline images allowed): every input must get one JSON answer with `ok`.
#![no_main]

use std::sync::OnceLock;

use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;
use unires::serve::{Engine, EngineOptions};
use unires::Source;

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        let model = unires::load_segmenter(&Source::Embedded, &Device::Cpu, DType::F32)
            .expect("the embedded model loads");
        let root = std::env::temp_dir().join("unires-fuzz-root");
        let _ = std::fs::create_dir_all(&root);
        let opts = EngineOptions {
            cache_bytes: 4 << 20,
            image_root: Some(root),
            ..EngineOptions::default()
        };
        Engine::new(model, opts).expect("the engine starts")
    })
}

fuzz_target!(|data: &[u8]| {
    let v = engine().handle(data);
    assert!(v["ok"].is_boolean(), "{v}");
});
