//! Bad requests to `unires serve --stdio`, one table: each row is a request line and the error
//! kind it must get; the server answers every row in order, never dies, and still answers a
//! good request at the end. Runs the real binary on the embedded model.
#![cfg(all(feature = "serve", feature = "cli"))]

mod common;

use std::path::Path;

use base64::Engine as _;
use common::TempDir;
use serde_json::{json, Value};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn every_bad_request_gets_its_error_kind_and_the_server_lives_on() {
    let t = TempDir::new("serve-bad");
    let root = t.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let scenes = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scenes");
    let png = std::fs::read(scenes.join("tall.png")).unwrap();
    std::fs::write(root.join("ok.png"), &png).unwrap();
    std::fs::write(root.join("truncated.png"), &png[..png.len() / 3]).unwrap();
    std::fs::write(root.join("text.png"), b"this is not an image").unwrap();
    std::fs::create_dir_all(root.join("dir.png")).unwrap();
    let big = std::fs::File::create(root.join("huge.png")).unwrap();
    big.set_len(40 << 20).unwrap(); // sparse: 40 MiB over the 32 MiB image limit
    let mut tiny = Vec::new();
    image::RgbImage::new(2, 2)
        .write_to(
            &mut std::io::Cursor::new(&mut tiny),
            image::ImageFormat::Png,
        )
        .unwrap();
    let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec();

    let ok = |extra: Value| {
        let mut v = json!({"image": "ok.png", "expression": "the orange car"});
        if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
            m.extend(e);
        }
        v.to_string()
    };
    let many_boxes: Vec<[f32; 4]> = (0..600)
        .map(|i| [1.0, 1.0, 2.0 + i as f32 * 0.1, 9.0])
        .collect();
    let rows: Vec<(String, &str)> = vec![
        ("{".into(), "bad_request"),
        ("[1, 2, 3]".into(), "bad_request"),
        ("\"just a string\"".into(), "bad_request"),
        ("null".into(), "bad_request"),
        ("{}".into(), "bad_request"),
        (json!({"expression": "x"}).to_string(), "bad_request"),
        (json!({"image": "ok.png"}).to_string(), "bad_request"),
        (
            json!({"image": 5, "expression": "x"}).to_string(),
            "bad_request",
        ),
        (
            json!({"image": "ok.png", "expression": 5}).to_string(),
            "bad_request",
        ),
        (ok(json!({"image_b64": "AAAA"})), "bad_request"),
        (ok(json!({"unknown": true})), "bad_request"),
        (ok(json!({"granularity": "sideways"})), "bad_request"),
        (ok(json!({"granularity": 3})), "bad_request"),
        (ok(json!({"boxes": [1, 2]})), "bad_request"),
        (
            ok(json!({"boxes": {"objects": [[1, 2, 3]]}})),
            "bad_request",
        ),
        (
            ok(json!({"boxes": {"objects": [[50, 50, 10, 10]]}})),
            "bad_request",
        ),
        (ok(json!({"boxes": {"objects": "no"}})), "bad_request"),
        (ok(json!({"boxes": {"cars": []}})), "bad_request"),
        (ok(json!({"boxes": {"objects": many_boxes}})), "too_large"),
        (ok(json!({"expression": ""})), "expression"),
        (ok(json!({"expression": "   "})), "expression"),
        (ok(json!({"expression": "x".repeat(600)})), "expression"),
        (ok(json!({"expression": "the [SEG] car"})), "expression"),
        (ok(json!({"expression": "a <image> b"})), "expression"),
        (
            json!({"image": "../ok.png", "expression": "x"}).to_string(),
            "forbidden",
        ),
        (
            json!({"image": "/etc/passwd", "expression": "x"}).to_string(),
            "forbidden",
        ),
        (
            json!({"image": "missing.png", "expression": "x"}).to_string(),
            "not_found",
        ),
        (
            json!({"image": "dir.png", "expression": "x"}).to_string(),
            "bad_request",
        ),
        (
            json!({"image": "huge.png", "expression": "x"}).to_string(),
            "too_large",
        ),
        (
            json!({"image": "truncated.png", "expression": "x"}).to_string(),
            "image",
        ),
        (
            json!({"image": "text.png", "expression": "x"}).to_string(),
            "image",
        ),
        (
            json!({"image_b64": b64(&tiny), "expression": "x"}).to_string(),
            "image",
        ),
        (
            json!({"image_b64": b64(&gif), "expression": "x"}).to_string(),
            "image",
        ),
        (
            json!({"image_b64": "!!!not base64!!!", "expression": "x"}).to_string(),
            "bad_request",
        ),
        (
            json!({"image_b64": "", "expression": "x"}).to_string(),
            "image",
        ),
        (
            json!({"image_b64": "A".repeat(45 << 20), "expression": "x"}).to_string(),
            "too_large",
        ),
        (
            format!("{{\"expression\": \"{}\"}}", "a".repeat(49 << 20)),
            "too_large",
        ),
        ("\u{0}\u{1}\u{2}".into(), "bad_request"),
        (
            "{\"image\": \"ok.png\", \"expression\": \"\\ud800\"}".into(),
            "bad_request",
        ),
        (
            ok(json!({"id": {"nested": [1, 2]}, "expression": ""})),
            "expression",
        ),
    ];
    assert!(rows.len() >= 40, "{} rows", rows.len());

    let mut lines: Vec<String> = rows.iter().map(|(l, _)| l.clone()).collect();
    lines.push(ok(json!({"id": "last"})));
    let root_arg = root.to_string_lossy().into_owned();
    let (replies, exited) =
        common::serve::stdio(&["--queue", "1000", "--image-root", &root_arg], &lines);
    assert!(exited, "exit 0 at the end of input");
    assert_eq!(replies.len(), rows.len() + 1, "one answer per line");
    let mut wrong = Vec::new();
    for (i, ((line, kind), r)) in rows.iter().zip(&replies).enumerate() {
        if r["ok"] != false || r["error"]["kind"] != *kind {
            let shown: String = line.chars().take(80).collect();
            wrong.push(format!("row {i} {shown:?}: want {kind}, got {r}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let last = replies.last().unwrap();
    assert_eq!(
        (last["id"].clone(), last["ok"].clone()),
        (json!("last"), json!(true))
    );
}
