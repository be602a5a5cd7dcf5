//! Driving `unires serve --stdio` from tests.

use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs `unires serve --stdio ARGS`, writes `lines` to its stdin and closes it; returns the
/// response lines and whether it exited 0 (within 120 s).
pub fn stdio(args: &[&str], lines: &[String]) -> (Vec<Value>, bool) {
    let mut child = super::bin()
        .args(["serve", "--stdio"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    writer.join().unwrap();
    let ok = wait(&mut child, Duration::from_secs(120));
    let replies = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (replies, ok)
}

/// Waits for `child` to exit (killing it and failing after `limit`); whether it exited 0.
pub fn wait(child: &mut Child, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Some(s) = child.try_wait().unwrap() {
            return s.success();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("the child did not exit within {limit:?}");
}
