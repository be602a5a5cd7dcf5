//! COCO compressed RLE: the first 2 bytes pick a size up to 255×255, the rest is the counts
//! string → parse, decode, re-encode, and the re-encoding must decode to the same mask.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unires::io::rle::Rle;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (h, w) = (data[0] as usize, data[1] as usize);
    let Ok(s) = std::str::from_utf8(&data[2..]) else {
        return;
    };
    if let Ok(r) = Rle::from_compressed(h, w, s) {
        if let Ok(m) = r.decode() {
            let again = Rle::from_compressed(h, w, &Rle::encode(&m).to_compressed())
                .and_then(|r| r.decode())
                .expect("a fresh encoding parses and decodes");
            assert_eq!(m, again);
        }
    }
});
