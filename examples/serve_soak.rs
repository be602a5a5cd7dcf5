//! A soak run of `unires serve --stdio` (Linux: reads the server's RSS from /proc): N requests
//! (default 10 000), a mix of good ones on the shipped scenes (cycling through the frames and
//! their phrases, with a 1 MiB frame cache) and bad ones (malformed JSON, missing fields,
//! unknown granularity, paths out of the root, bad base64, empty expressions). It checks that
//! every request gets its answer with the expected outcome and prints the server's resident
//! memory after the warm-up (the first 10%) and at the end.
//!
//! ```text
//! cargo build --release && cargo run --release --example serve_soak [-- --n 10000]
//! ```

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    l.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Res<()> {
    let n: usize = common::flag("--n", 10_000);
    let mut good = Vec::new();
    let names = common::scene_pngs()?;
    for png in &names {
        let meta: Value =
            serde_json::from_str(&std::fs::read_to_string(png.with_extension("json"))?)?;
        let file = png
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("")
            .to_string();
        for q in meta["queries"].as_array().into_iter().flatten() {
            good.push(json!({"image": file, "expression": q["expression"],
                             "granularity": q["granularity"], "boxes": meta["proposals"]}));
        }
    }
    let bad: Vec<(String, &str)> = vec![
        ("{".into(), "bad_request"),
        (json!({"expression": "x"}).to_string(), "bad_request"),
        (
            json!({"image": "tall.png", "expression": "x", "granularity": "up"}).to_string(),
            "bad_request",
        ),
        (
            json!({"image": "../tall.png", "expression": "x"}).to_string(),
            "forbidden",
        ),
        (
            json!({"image_b64": "%%%", "expression": "x"}).to_string(),
            "bad_request",
        ),
        (
            json!({"image": "tall.png", "expression": " "}).to_string(),
            "expression",
        ),
        (
            json!({"image": "nope.png", "expression": "x"}).to_string(),
            "not_found",
        ),
    ];
    let mut child = Command::new(common::server_binary()?)
        .args(["serve", "--stdio", "--cache-mb", "1", "--image-root"])
        .arg(common::scenes_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let start = Instant::now();
    let (mut rss_warm, mut failures, mut hits) = (None, 0usize, 0usize);
    for i in 0..n {
        // Two good requests, then one bad one.
        let (line, want) = if i % 3 == 2 {
            let (l, k) = &bad[(i / 3) % bad.len()];
            (l.clone(), Some(*k))
        } else {
            let mut g = good[(i * 7) % good.len()].clone();
            g["id"] = json!(i);
            (g.to_string(), None)
        };
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        let mut reply = String::new();
        stdout.read_line(&mut reply)?;
        let v: Value = serde_json::from_str(&reply)?;
        let ok = match want {
            None => v["ok"] == true && v["id"] == json!(i),
            Some(kind) => v["ok"] == false && v["error"]["kind"] == kind,
        };
        if !ok {
            failures += 1;
            eprintln!("request {i}: unexpected answer {v}");
        }
        hits += usize::from(v["cached"] == true);
        if i + 1 == n / 10 {
            rss_warm = rss_kib(pid);
        }
    }
    let rss_end = rss_kib(pid);
    drop(stdin);
    let status = child.wait()?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{n} requests in {secs:.1} s ({:.1} ms each), {failures} unexpected answers, {hits} cache hits, server {status}",
        secs * 1e3 / n as f64
    );
    match (rss_warm, rss_end) {
        (Some(a), Some(b)) => println!(
            "server RSS after {} requests: {:.1} MiB; at the end: {:.1} MiB ({:+.1}%)",
            n / 10,
            a as f64 / 1024.0,
            b as f64 / 1024.0,
            (b as f64 / a as f64 - 1.0) * 100.0
        ),
        _ => println!("server RSS: not available on this system"),
    }
    if failures > 0 || !status.success() {
        return Err("the soak run failed".into());
    }
    Ok(())
}
