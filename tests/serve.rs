//! `unires serve` as a client sees it, on the embedded model: JSON lines over stdio and HTTP
//! on loopback, the frame cache, the image root, the token, limits, the busy answer and a
//! graceful stop. Every test drives the real binary.
#![cfg(all(feature = "serve", feature = "cli"))]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::serve::{stdio, wait};
use common::TempDir;
use serde_json::{json, Value};

fn scene() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scenes")
}

fn b64(path: &Path) -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}

fn req(id: u64, image: &Path, expr: &str) -> String {
    json!({"id": id, "image": image, "expression": expr}).to_string()
}

#[test]
fn stdio_answers_in_order_caches_frames_and_survives_bad_lines() {
    let tall = scene().join("tall.png");
    let boxes: Value =
        serde_json::from_str(&std::fs::read_to_string(scene().join("tall.json")).unwrap()).unwrap();
    let with_boxes = |id: u64, expr: &str, g: &str| {
        json!({"id": id, "image": tall, "expression": expr, "granularity": g,
               "boxes": boxes["proposals"].clone()})
        .to_string()
    };
    let lines = vec![
        with_boxes(1, "the two cars", "auto"),
        "{not json".to_string(),
        with_boxes(3, "the handle of the mug", "part"),
        json!({"id": "four", "image_b64": b64(&tall), "expression": "the blue boat",
               "boxes": boxes["proposals"].clone()})
        .to_string(),
        json!({"id": 5, "image": tall, "expression": "", "boxes": boxes["proposals"].clone()})
            .to_string(),
        json!({"id": 6, "image": tall, "expression": "x", "granularity": "sideways"}).to_string(),
        json!({"id": 7, "image": tall, "expression": "the orange car",
               "boxes": {"objects": [[-5, -5, 60, 60], [500, 500, 600, 600]]}})
        .to_string(),
    ];
    let (r, ok) = stdio(&["--workers", "2"], &lines);
    assert!(ok, "exit status");
    assert_eq!(r.len(), 7);
    let ids: Vec<Value> = r.iter().map(|v| v["id"].clone()).collect();
    assert_eq!(
        ids,
        [
            json!(1),
            Value::Null,
            json!(3),
            json!("four"),
            json!(5),
            json!(6),
            json!(7)
        ]
    );
    // Boxes reaching out of the image are clipped, those wholly outside dropped, and said so.
    assert_eq!(r[6]["ok"], true, "{}", r[6]);
    assert_eq!(r[6]["boxes"]["clipped"], 1);
    assert_eq!(r[6]["boxes"]["dropped"].as_array().unwrap().len(), 1);
    assert_eq!(r[0]["ok"], true);
    assert_eq!(r[0]["granularity"], "multi");
    assert_eq!(r[0]["instances"].as_array().unwrap().len(), 2);
    assert_eq!(r[0]["cached"], false);
    assert_eq!(r[1]["error"]["kind"], "bad_request");
    assert_eq!(r[2]["granularity"], "part");
    // Requests 3 and 4 reuse the frame encoded for request 1 (same bytes, same boxes; the
    // inline copy hashes the same), whichever worker answered first.
    let cached =
        r[2]["cached"].as_bool().unwrap() as u32 + r[3]["cached"].as_bool().unwrap() as u32;
    assert!(cached >= 1, "{r:?}");
    assert_eq!(r[3]["empty"], true, "no boat in the scene");
    assert_eq!(r[4]["error"]["kind"], "expression");
    assert_eq!(r[5]["error"]["kind"], "bad_request");
    for v in &r[..1] {
        assert!(v["timing_ms"]["total"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn stdio_limits_line_length_and_answers_busy_when_the_queue_is_full() {
    let tall = scene().join("tall.png");
    let mut lines = vec![req(0, &tall, "the two cars")];
    lines.push(format!(
        "{{\"id\": 1, \"expression\": \"{}\"}}",
        "a".repeat(2 << 20)
    ));
    for i in 2..12 {
        lines.push(req(i, &tall, "the orange car"));
    }
    let (r, ok) = stdio(
        &["--workers", "1", "--queue", "1", "--max-request-mb", "1"],
        &lines,
    );
    assert!(ok);
    assert_eq!(r.len(), 12, "one answer per request");
    assert_eq!(r[1]["error"]["kind"], "too_large");
    let busy = r.iter().filter(|v| v["error"]["kind"] == "busy").count();
    let answered = r.iter().filter(|v| v["ok"] == true).count();
    assert!(
        busy >= 1,
        "a 1-deep queue behind a slow first request must overflow: {r:?}"
    );
    assert_eq!(busy + answered + 1, 12);
    for (i, v) in r.iter().enumerate().filter(|(i, _)| *i != 1) {
        assert_eq!(v["id"], json!(i), "busy answers carry the request id too");
    }
}

#[test]
fn image_paths_stay_under_the_root() {
    let t = TempDir::new("serve-root");
    let root = t.join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(scene().join("tall.png"), root.join("in.png")).unwrap();
    std::fs::copy(scene().join("tall.png"), t.join("outside.png")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(t.join("outside.png"), root.join("link.png")).unwrap();
    let ask = |id: u64, p: &str| {
        json!({"id": id, "image": p, "expression": "the orange car"}).to_string()
    };
    let lines = vec![
        ask(1, "in.png"),
        ask(2, "../outside.png"),
        ask(3, t.join("outside.png").to_str().unwrap()),
        ask(4, "link.png"),
        ask(5, "missing.png"),
        ask(6, "."),
    ];
    let root_arg = root.to_str().unwrap();
    let (r, ok) = stdio(&["--image-root", root_arg], &lines);
    assert!(ok);
    assert_eq!(r[0]["ok"], true, "{}", r[0]);
    assert_eq!(r[1]["error"]["kind"], "forbidden");
    assert_eq!(r[2]["error"]["kind"], "forbidden", "an absolute path");
    #[cfg(unix)]
    assert_eq!(
        r[3]["error"]["kind"], "forbidden",
        "a symlink out of the root"
    );
    assert_eq!(r[4]["error"]["kind"], "not_found");
    assert_eq!(r[5]["error"]["kind"], "bad_request", "a directory");
}

/// A running `unires serve --listen 127.0.0.1:0`, its base URL, and its stderr reader.
struct Http {
    child: Child,
    url: String,
}

impl Http {
    fn start(args: &[&str]) -> Http {
        let mut child = common::bin()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("unires serve: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Http { child, url }
    }

    fn post(&self, body: &str, token: Option<&str>) -> (u16, Value) {
        let mut r = ureq::post(&format!("{}/segment", self.url));
        if let Some(t) = token {
            r = r.set("Authorization", &format!("Bearer {t}"));
        }
        reply(r.send_string(body))
    }

    fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut r = ureq::get(&format!("{}{path}", self.url));
        if let Some(t) = token {
            r = r.set("Authorization", &format!("Bearer {t}"));
        }
        reply(r.call())
    }

    /// SIGTERM, then the exit status must be 0.
    fn stop(mut self) {
        #[cfg(unix)]
        {
            let pid = self.child.id().to_string();
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap();
            assert!(
                wait(&mut self.child, Duration::from_secs(30)),
                "exit 0 on SIGTERM"
            );
        }
        #[cfg(not(unix))]
        let _ = self.child.kill();
    }
}

fn reply(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    (status, resp.into_json().unwrap())
}

#[test]
fn http_segments_inline_images_and_refuses_paths_without_a_root() {
    let s = Http::start(&["--workers", "2", "--max-request-mb", "1"]);
    let tall = scene().join("tall.png");
    let (st, v) = s.get("/healthz", None);
    assert_eq!(
        (st, v["ok"].clone(), v["family"].clone()),
        (200, json!(true), json!("unires"))
    );
    let body = json!({"id": 9, "image_b64": b64(&tall), "expression": "the two cars"}).to_string();
    let (st, v) = s.post(&body, None);
    assert_eq!(st, 200, "{v}");
    assert_eq!((v["id"].clone(), v["ok"].clone()), (json!(9), json!(true)));
    let (_, v2) = s.post(&body, None);
    assert_eq!(v2["cached"], true);
    assert_eq!(v2["rle"], v["rle"], "the cached frame gives the same mask");
    let (st, v) = s.post(&req(10, &tall, "the two cars"), None);
    assert_eq!((st, v["error"]["kind"].clone()), (403, json!("forbidden")));
    let (st, v) = s.post("{", None);
    assert_eq!(
        (st, v["error"]["kind"].clone()),
        (400, json!("bad_request"))
    );
    let big = format!("{{\"expression\": \"{}\"}}", "a".repeat(2 << 20));
    let (st, _) = s.post(&big, None);
    assert_eq!(st, 413);
    let (st, _) = s.get("/nowhere", None);
    assert_eq!(st, 404);
    let (st, m) = s.get("/metrics", None);
    assert_eq!(st, 200);
    assert!(m["requests"].as_u64().unwrap() >= 6, "{m}");
    assert_eq!(m["cache_hits"], 1);
    assert!(m["latency_ms"]["p50"].as_f64().is_some());
    s.stop();
}

#[test]
fn http_off_loopback_needs_a_token_and_checks_it() {
    let t = TempDir::new("serve-token");
    let out = common::bin()
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token-file"));

    let token_file = t.join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let s = Http::start(&["--token-file", token_file.to_str().unwrap()]);
    let (st, v) = s.get("/healthz", None);
    assert_eq!(
        (st, v["error"]["kind"].clone()),
        (401, json!("unauthorized"))
    );
    let (st, _) = s.get("/healthz", Some("wrong"));
    assert_eq!(st, 401);
    let (st, _) = s.get("/healthz", Some("s3cret"));
    assert_eq!(st, 200);
    let body = json!({"image_b64": b64(&scene().join("tall.png")), "expression": "the orange car"});
    let (st, _) = s.post(&body.to_string(), None);
    assert_eq!(st, 401);
    let (st, v) = s.post(&body.to_string(), Some("s3cret"));
    assert_eq!((st, v["ok"].clone()), (200, json!(true)));
    s.stop();
}
