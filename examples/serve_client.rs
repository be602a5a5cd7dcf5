//! A client of `unires serve --stdio`: starts the server (the `unires` binary built next to
//! this example, or the one named by `UNIRES_BIN`), streams every shipped scene in
//! `examples/scenes/` with each of its phrases, and prints per-request latencies: the first
//! phrase on a frame pays for encoding it (cold), the others reuse the cached frame.
//!
//! ```text
//! cargo build --release && cargo run --release --example serve_client [-- --rounds 3]
//! ```

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let rounds: usize = common::flag("--rounds", 1);
    let mut requests = Vec::new();
    let names = common::scene_pngs()?;
    for _ in 0..rounds {
        for png in &names {
            let meta: Value =
                serde_json::from_str(&std::fs::read_to_string(png.with_extension("json"))?)?;
            for q in meta["queries"].as_array().into_iter().flatten() {
                requests.push(json!({
                    "id": requests.len(),
                    "image": png,
                    "expression": q["expression"],
                    "granularity": q["granularity"],
                    "boxes": meta["proposals"],
                }));
            }
        }
    }
    let mut child = Command::new(common::server_binary()?)
        .args(["serve", "--stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    println!("| # | scene | expression | granularity | cached | server ms | round trip ms |");
    println!("|---|---|---|---|---|---|---|");
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for r in &requests {
        let t = Instant::now();
        writeln!(stdin, "{r}")?;
        stdin.flush()?;
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let rt = t.elapsed().as_secs_f64() * 1e3;
        let v: Value = serde_json::from_str(&line)?;
        if v["ok"] != true {
            println!("| {} | error: {} |", r["id"], v["error"]);
            continue;
        }
        let cached = v["cached"] == true;
        let server = v["timing_ms"]["total"].as_f64().unwrap_or(f64::NAN);
        if cached {
            warm.push(server)
        } else {
            cold.push(server)
        }
        let scene = Path::new(r["image"].as_str().unwrap_or(""))
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        println!(
            "| {} | {scene} | {} | {} | {cached} | {server:.1} | {rt:.1} |",
            r["id"], r["expression"], v["granularity"]
        );
    }
    drop(stdin);
    child.wait()?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "\n{} cold requests (frame encoded): mean {:.1} ms; {} cached: mean {:.1} ms",
        cold.len(),
        mean(&cold),
        warm.len(),
        mean(&warm)
    );
    Ok(())
}
