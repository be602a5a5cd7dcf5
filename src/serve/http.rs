//! HTTP on a loopback address: `POST /segment` (the request JSON as body), `GET /healthz`,
//! `GET /metrics`. Built on `tiny_http`: a small synchronous server without an async runtime,
//! which suits a CPU-bound model answered by a fixed pool of threads.
//!
//! An acceptor thread takes connections into a bounded queue (full: `503 busy` at once);
//! `workers` threads answer them. A non-loopback address needs a bearer token; with a token,
//! every request without `Authorization: Bearer <token>` gets `401`. `stop` becoming true
//! finishes the requests taken and returns.

use std::io::Read;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response, Server};

use super::engine::Engine;
use super::protocol::ErrorKind;
use crate::error::{Error, Result};

/// Address, threads, queue and token of the HTTP transport.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub addr: String,
    pub workers: usize,
    pub queue: usize,
    /// The bearer token every request must carry (required off loopback).
    pub token: Option<String>,
}

/// A bound HTTP server, not yet answering.
pub struct HttpServer {
    server: Arc<Server>,
    addr: SocketAddr,
    opts: HttpOptions,
}

fn config_err(reason: String) -> Error {
    Error::Config {
        what: "serve --listen".into(),
        reason,
    }
}

impl HttpServer {
    /// Binds `opts.addr` (port 0: any free port); a non-loopback address without a token is
    /// refused.
    pub fn bind(opts: HttpOptions) -> Result<Self> {
        let addrs: Vec<SocketAddr> = opts
            .addr
            .to_socket_addrs()
            .map_err(|e| config_err(format!("{:?}: {e}", opts.addr)))?
            .collect();
        let addr = *addrs
            .first()
            .ok_or_else(|| config_err(format!("{:?} names no address", opts.addr)))?;
        if !addr.ip().is_loopback() && opts.token.is_none() {
            return Err(config_err(format!(
                "{addr} is not a loopback address: pass --token-file so that requests must \
                 carry a bearer token"
            )));
        }
        let server = Server::http(addr).map_err(|e| config_err(format!("{addr}: {e}")))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| config_err("not an IP socket".into()))?;
        Ok(Self {
            server: Arc::new(server),
            addr,
            opts,
        })
    }

    /// The address bound (with the port chosen when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers requests until `stop`.
    pub fn serve(self, engine: Arc<Engine>, stop: Arc<AtomicBool>) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel::<Request>(self.opts.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let token = Arc::new(self.opts.token.clone());
        let workers: Vec<_> = (0..self.opts.workers.max(1))
            .map(|_| {
                let (e, r, t) = (engine.clone(), rx.clone(), token.clone());
                std::thread::spawn(move || worker(&e, &r, t.as_deref()))
            })
            .collect();
        while !stop.load(Ordering::SeqCst) {
            let req = match self.server.recv_timeout(Duration::from_millis(100)) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => return Err(Error::io("HTTP listener", e)),
            };
            match tx.try_send(req) {
                Ok(()) => {}
                Err(TrySendError::Full(req)) => {
                    let v = engine.refuse(ErrorKind::Busy, "the queue is full; retry later");
                    respond(req, 503, &v);
                }
                Err(TrySendError::Disconnected(_)) => break,
            }
        }
        drop(tx);
        for w in workers {
            let _ = w.join();
        }
        Ok(())
    }
}

fn respond(req: Request, status: u16, body: &Value) {
    let mut r = Response::from_string(body.to_string()).with_status_code(status);
    if let Ok(h) = Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]) {
        r = r.with_header(h);
    }
    // The client may have gone away; nothing to do then.
    let _ = req.respond(r);
}

fn authorised(req: &Request, token: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    let want = format!("Bearer {token}");
    req.headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .is_some_and(|h| constant_time_eq(h.value.as_str().as_bytes(), want.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn worker(engine: &Engine, rx: &Mutex<Receiver<Request>>, token: Option<&str>) {
    loop {
        let next = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(req) = next else { return };
        answer(engine, req, token);
    }
}

fn answer(engine: &Engine, mut req: Request, token: Option<&str>) {
    if !authorised(&req, token) {
        let v = engine.refuse(ErrorKind::Unauthorized, "missing or wrong bearer token");
        return respond(req, 401, &v);
    }
    let path = req.url().split('?').next().unwrap_or("").to_string();
    match (req.method(), path.as_str()) {
        (Method::Get, "/healthz") => {
            let (frames, bytes) = engine.cache_usage();
            let v = json!({
                "ok": true,
                "family": engine.model().family().as_str(),
                "cache": {"frames": frames, "bytes": bytes},
            });
            respond(req, 200, &v)
        }
        (Method::Get, "/metrics") => {
            let mut v = engine.metrics.to_json();
            let (frames, bytes) = engine.cache_usage();
            if let Value::Object(m) = &mut v {
                m.insert("cache".into(), json!({"frames": frames, "bytes": bytes}));
            }
            respond(req, 200, &v)
        }
        (Method::Post, "/segment") => {
            let max = engine.limits().max_request_bytes;
            if req.body_length().is_some_and(|n| n > max) {
                let v = engine.refuse(ErrorKind::TooLarge, &format!("body over {max} bytes"));
                return respond(req, 413, &v);
            }
            let mut body = Vec::new();
            let read = req.as_reader().take(max as u64 + 1).read_to_end(&mut body);
            if read.is_err() {
                let v = engine.refuse(ErrorKind::BadRequest, "cannot read the request body");
                return respond(req, 400, &v);
            }
            if body.len() > max {
                let v = engine.refuse(ErrorKind::TooLarge, &format!("body over {max} bytes"));
                return respond(req, 413, &v);
            }
            let v = engine.handle(&body);
            let status = status_of(&v);
            respond(req, status, &v)
        }
        (_, "/segment" | "/healthz" | "/metrics") => {
            let v = engine.refuse(ErrorKind::BadRequest, "method not allowed");
            respond(req, 405, &v)
        }
        _ => {
            let v = engine.refuse(ErrorKind::NotFound, "no such endpoint");
            respond(req, 404, &v)
        }
    }
}

/// The HTTP status of a response object.
fn status_of(v: &Value) -> u16 {
    if v["ok"] == Value::Bool(true) {
        return 200;
    }
    let kind = v["error"]["kind"].as_str().unwrap_or("");
    ErrorKind::ALL
        .iter()
        .find(|k| k.as_str() == kind)
        .map_or(500, |k| k.status())
}
