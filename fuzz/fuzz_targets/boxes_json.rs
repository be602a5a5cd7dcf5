//! Boxes JSON text → parse, then validate against a 640×480 image.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = unires::io::boxes::parse_boxes(text, std::path::Path::new("fuzz.json")) {
        let _ = p.validate(640, 480);
    }
});
