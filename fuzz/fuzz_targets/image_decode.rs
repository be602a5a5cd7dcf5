//! Image bytes → decode with the default limits (format sniffing, header size check before
//! decoding, decoder limits). Any input must give an image or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unires::config::Limits;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = unires::io::image::decode_image(data, "fuzz", &Limits::default()) {
        assert!(img.width() >= 1 && img.height() >= 1);
    }
});
