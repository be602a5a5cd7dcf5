//! JSON lines: one request per input line, one response line per request, in request order.
//!
//! A reader takes lines (each at most `max_request_bytes`; a longer one is answered with a
//! `too_large` error and skipped up to its newline) into a bounded queue; `workers` threads
//! answer them through the engine; a writer puts the answers back in request order. When the
//! queue is full a request is answered `busy` at once instead of growing memory. End of input,
//! or `stop` becoming true, finishes the requests already taken and returns.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::engine::Engine;
use super::protocol::ErrorKind;
use crate::error::{Error, Result};

/// Threads and queue of the stdio transport.
#[derive(Debug, Clone, Copy)]
pub struct StdioOptions {
    pub workers: usize,
    /// Requests waiting for a worker before new ones are answered `busy`.
    pub queue: usize,
}

/// What a stdio session did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StdioSummary {
    pub requests: u64,
    pub busy: u64,
}

enum Line {
    Eof,
    Text(Vec<u8>),
    TooLong(usize),
}

/// Reads one line of at most `max` bytes (without its newline); a longer line is consumed to
/// its end and reported with its length.
fn read_line(r: &mut impl BufRead, max: usize) -> std::io::Result<Line> {
    let mut out = Vec::new();
    let mut total = 0usize;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(if total == 0 {
                Line::Eof
            } else if total > max {
                Line::TooLong(total)
            } else {
                Line::Text(out)
            });
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        total += chunk.len();
        if total <= max {
            out.extend_from_slice(chunk);
        } else {
            out = Vec::new();
        }
        let used = done.unwrap_or(buf.len());
        r.consume(used);
        if done.is_some() {
            return Ok(if total > max {
                Line::TooLong(total)
            } else {
                Line::Text(out)
            });
        }
    }
}

type Job = (u64, Vec<u8>);

fn worker(engine: Arc<Engine>, jobs: Arc<Mutex<Receiver<Job>>>, out: mpsc::Sender<(u64, Value)>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((seq, line)) = job else { return };
        let reply = engine.handle(&line);
        if out.send((seq, reply)).is_err() {
            return;
        }
    }
}

fn writer(mut w: impl Write, rx: Receiver<(u64, Value)>) -> std::io::Result<u64> {
    let mut pending = BTreeMap::new();
    let mut next = 0u64;
    for (seq, v) in rx {
        pending.insert(seq, v);
        while let Some(v) = pending.remove(&next) {
            writeln!(w, "{v}")?;
            next += 1;
        }
        w.flush()?;
    }
    // Sequence numbers are dense, so nothing is left unless a worker died mid-request.
    for (_, v) in pending {
        writeln!(w, "{v}")?;
    }
    w.flush()?;
    Ok(next)
}

/// Serves JSON lines from `input` to `output` until end of input or `stop`.
pub fn serve_lines(
    engine: Arc<Engine>,
    input: impl BufRead + Send + 'static,
    output: impl Write + Send + 'static,
    opts: StdioOptions,
    stop: Arc<AtomicBool>,
) -> Result<StdioSummary> {
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(opts.queue.max(1));
    let (out_tx, out_rx) = mpsc::channel::<(u64, Value)>();
    let jobs = Arc::new(Mutex::new(job_rx));
    let workers: Vec<_> = (0..opts.workers.max(1))
        .map(|_| {
            let (e, j, o) = (engine.clone(), jobs.clone(), out_tx.clone());
            std::thread::spawn(move || worker(e, j, o))
        })
        .collect();
    let writer = std::thread::spawn(move || writer(output, out_rx));

    // The reader owns the only job sender; dropping it (end of input, or `stop`) lets the
    // workers drain the queue and finish.
    let sender: Arc<Mutex<Option<SyncSender<Job>>>> = Arc::new(Mutex::new(Some(job_tx)));
    let (done_tx, done_rx) = mpsc::channel::<std::io::Result<StdioSummary>>();
    {
        let (engine, sender, out_tx) = (engine.clone(), sender.clone(), out_tx.clone());
        let max = engine.limits().max_request_bytes;
        let mut input = input;
        std::thread::spawn(move || {
            let r = read_all(&engine, &mut input, max, &sender, &out_tx);
            let _ = done_tx.send(r);
        });
    }
    drop(out_tx);
    let summary = loop {
        match done_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(r) => break r.map_err(|e| Error::io("stdin", e))?,
            Err(mpsc::RecvTimeoutError::Timeout) if stop.load(Ordering::SeqCst) => {
                // Stop taking requests; the reader may stay blocked on its input.
                if let Ok(mut s) = sender.lock() {
                    s.take();
                }
                break StdioSummary::default();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break StdioSummary::default(),
        }
    };
    if let Ok(mut s) = sender.lock() {
        s.take();
    }
    for w in workers {
        let _ = w.join();
    }
    let written = match writer.join() {
        Ok(r) => r.map_err(|e| Error::io("stdout", e))?,
        Err(_) => 0,
    };
    Ok(StdioSummary {
        requests: summary.requests.max(written),
        busy: summary.busy,
    })
}

fn read_all(
    engine: &Engine,
    input: &mut impl BufRead,
    max: usize,
    sender: &Mutex<Option<SyncSender<Job>>>,
    out: &mpsc::Sender<(u64, Value)>,
) -> std::io::Result<StdioSummary> {
    let mut s = StdioSummary::default();
    loop {
        let line = read_line(input, max)?;
        let seq = s.requests;
        let job = match line {
            Line::Eof => break,
            Line::Text(t) if t.iter().all(|b| b.is_ascii_whitespace()) => continue,
            Line::Text(t) => t,
            Line::TooLong(n) => {
                let msg = format!("request line of {n} bytes (limit {max})");
                s.requests += 1;
                let _ = out.send((seq, engine.refuse(ErrorKind::TooLarge, &msg)));
                continue;
            }
        };
        let Ok(guard) = sender.lock() else { break };
        let Some(tx) = guard.as_ref() else { break };
        s.requests += 1;
        match tx.try_send((seq, job)) {
            Ok(()) => {}
            Err(TrySendError::Full((_, job))) => {
                s.busy += 1;
                let msg = "the queue is full; retry later";
                let reply = engine.refuse_body(ErrorKind::Busy, msg, &job);
                let _ = out.send((seq, reply));
            }
            Err(TrySendError::Disconnected(_)) => break,
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded_and_long_ones_skipped_whole() {
        let data = b"short\nthis line is too long\n\nend".to_vec();
        let mut r = std::io::Cursor::new(data);
        let mut got = Vec::new();
        loop {
            match read_line(&mut r, 8).unwrap() {
                Line::Eof => break,
                Line::Text(t) => got.push(String::from_utf8(t).unwrap()),
                Line::TooLong(n) => got.push(format!("<{n}>")),
            }
        }
        assert_eq!(got, ["short", "<21>", "", "end"]);
    }
}
