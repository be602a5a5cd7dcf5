//! The engine both transports share: one model, the frame cache, the limits and the image
//! root, and the counters behind `/metrics`. [`Engine::handle`] answers one request body with
//! one response object and never panics; it is safe to call from many threads.

use std::collections::VecDeque;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::cache::{FrameCache, FrameKey};
use super::protocol::{error_json, parse_request, ErrorKind, Failure, ImageRef, Request};
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::io::boxes::boxes_from_value;
use crate::io::image::decode_image;
use crate::io::read::read_capped;
use crate::io::result::segmentation_json;
use crate::pipeline::{Encoded, Segmenter};
use crate::proposals::SelectiveSearch;
use crate::types::{Granularity, ProposalSource, Proposals};

/// Limits on what one request may bring.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Bytes of one request body (or stdio line), inline images included.
    pub max_request_bytes: usize,
    /// Bytes of one image file (or decoded `image_b64`).
    pub max_image_bytes: usize,
    /// Object plus part boxes of one request.
    pub max_boxes: usize,
    /// Image sides and pixels, expression length.
    pub image: Limits,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: 48 << 20,
            max_image_bytes: 32 << 20,
            max_boxes: 512,
            image: Limits::default(),
        }
    }
}

/// How the engine is set up.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Bytes of encoded frames kept (0: no cache).
    pub cache_bytes: usize,
    /// Image paths in requests are resolved under this folder only.
    pub image_root: Option<PathBuf>,
    /// Without a root, whether paths are accepted at all (stdio: yes; HTTP: no).
    pub paths_without_root: bool,
    pub limits: ServeLimits,
}

/// Request counters and recent latencies.
#[derive(Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub busy: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    latencies_ms: Mutex<VecDeque<f64>>,
}

/// Latencies kept for the quantiles.
const LATENCY_WINDOW: usize = 4096;

impl Metrics {
    fn record(&self, ms: f64, ok: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut l) = self.latencies_ms.lock() {
            if l.len() == LATENCY_WINDOW {
                l.pop_front();
            }
            l.push_back(ms);
        }
    }

    /// Counters and latency quantiles (over the last 4096 requests) as JSON.
    pub fn to_json(&self) -> Value {
        let mut l: Vec<f64> = self
            .latencies_ms
            .lock()
            .map(|l| l.iter().copied().collect())
            .unwrap_or_default();
        l.sort_by(f64::total_cmp);
        let q = |p: f64| -> Value {
            if l.is_empty() {
                return Value::Null;
            }
            let i = ((l.len() - 1) as f64 * p).round() as usize;
            json!(l[i.min(l.len() - 1)])
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "requests": get(&self.requests),
            "errors": get(&self.errors),
            "busy": get(&self.busy),
            "cache_hits": get(&self.cache_hits),
            "cache_misses": get(&self.cache_misses),
            "latency_ms": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "window": l.len()},
        })
    }
}

/// One model serving requests.
pub struct Engine {
    model: Box<dyn Segmenter>,
    cache: Mutex<FrameCache>,
    root: Option<PathBuf>,
    opts: EngineOptions,
    pub metrics: Metrics,
}

fn ms(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e4).round() / 10.0
}

impl Engine {
    /// An engine over `model`; the image root must be an existing directory.
    pub fn new(model: Box<dyn Segmenter>, opts: EngineOptions) -> Result<Self> {
        let root = match &opts.image_root {
            Some(r) => {
                let c = r.canonicalize().map_err(|e| Error::io(r, e))?;
                if !c.is_dir() {
                    return Err(Error::NotADirectory { path: r.clone() });
                }
                Some(c)
            }
            None => None,
        };
        Ok(Self {
            model,
            cache: Mutex::new(FrameCache::new(opts.cache_bytes)),
            root,
            opts,
            metrics: Metrics::default(),
        })
    }

    pub fn limits(&self) -> &ServeLimits {
        &self.opts.limits
    }

    pub fn model(&self) -> &dyn Segmenter {
        self.model.as_ref()
    }

    /// Frames in the cache and the bytes they hold.
    pub fn cache_usage(&self) -> (usize, usize) {
        self.cache
            .lock()
            .map(|c| (c.len(), c.held_bytes()))
            .unwrap_or((0, 0))
    }

    /// Answers one request body.
    pub fn handle(&self, body: &[u8]) -> Value {
        let t = Instant::now();
        let (id, result) = if body.len() > self.opts.limits.max_request_bytes {
            let f = Failure::new(
                ErrorKind::TooLarge,
                format!(
                    "request of {} bytes (limit {})",
                    body.len(),
                    self.opts.limits.max_request_bytes
                ),
            );
            (Value::Null, Err(f))
        } else {
            match parse_request(body) {
                Ok(req) => (req.id.clone(), self.answer(&req, t)),
                Err((id, f)) => (id, Err(f)),
            }
        };
        let ok = result.is_ok();
        self.metrics.record(ms(t), ok);
        match result {
            Ok(mut v) => {
                if let Value::Object(m) = &mut v {
                    m.insert("id".into(), id);
                    m.insert("ok".into(), Value::Bool(true));
                }
                v
            }
            Err(f) => error_json(&id, &f),
        }
    }

    /// A response for a request refused before it reached the engine (busy, unauthorised).
    pub fn refuse(&self, kind: ErrorKind, message: &str) -> Value {
        self.refuse_with_id(kind, message, &Value::Null)
    }

    /// [`Engine::refuse`] for a request whose body is at hand: the answer carries its `id`.
    pub fn refuse_body(&self, kind: ErrorKind, message: &str, body: &[u8]) -> Value {
        #[derive(serde::Deserialize)]
        struct IdOnly {
            #[serde(default)]
            id: Value,
        }
        let id = serde_json::from_slice::<IdOnly>(body)
            .map(|r| r.id)
            .unwrap_or(Value::Null);
        self.refuse_with_id(kind, message, &id)
    }

    fn refuse_with_id(&self, kind: ErrorKind, message: &str, id: &Value) -> Value {
        if kind == ErrorKind::Busy {
            self.metrics.busy.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics.record(0.0, false);
        error_json(id, &Failure::new(kind, message))
    }

    fn answer(&self, req: &Request, t0: Instant) -> std::result::Result<Value, Failure> {
        let granularity: Granularity = req.granularity.parse()?;
        let bytes = self.image_bytes(&req.image)?;
        let t_read = ms(t0);
        let t = Instant::now();
        let image = decode_image(&bytes, "the request's image", &self.opts.limits.image)?;
        let mut clip_report = None;
        let boxes = match &req.boxes {
            Some(v) => {
                let given = boxes_from_value(v.clone(), Path::new("the request's boxes"))?;
                let n = given.objects.len() + given.parts.len();
                if n > self.opts.limits.max_boxes {
                    return Err(Failure::new(
                        ErrorKind::TooLarge,
                        format!("{n} boxes (limit {})", self.opts.limits.max_boxes),
                    ));
                }
                let (p, report) = given.clip_to(image.width(), image.height())?;
                clip_report = Some(report);
                Some(p)
            }
            None => None,
        };
        let key = frame_key(&bytes, boxes.as_ref());
        let cached = self.cache.lock().ok().and_then(|mut c| c.get(&key));
        let (encoded, hit) = match cached {
            Some(e) => {
                self.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
                (e, true)
            }
            None => {
                self.metrics.cache_misses.fetch_add(1, Ordering::Relaxed);
                let proposals = match boxes {
                    Some(p) => p,
                    None if self.model.uses_proposals() => {
                        SelectiveSearch::default().propose(&image)?
                    }
                    None => Proposals::default(),
                };
                let e: Arc<Encoded> = Arc::new(self.model.encode(&image, &proposals)?);
                if let Ok(mut c) = self.cache.lock() {
                    c.insert(key, e.clone());
                }
                (e, false)
            }
        };
        let t_encode = ms(t);
        let t = Instant::now();
        let seg = self.model.segment(&encoded, &req.expression, granularity)?;
        let mut v = segmentation_json(&seg);
        if let Value::Object(m) = &mut v {
            m.insert("cached".into(), Value::Bool(hit));
            if let Some(r) = clip_report.filter(|r| !r.is_clean()) {
                let r = serde_json::to_value(&r).unwrap_or(Value::Null);
                m.insert("boxes".into(), r);
            }
            m.insert(
                "timing_ms".into(),
                json!({"read": t_read, "decode_encode": t_encode, "segment": ms(t), "total": ms(t0)}),
            );
        }
        Ok(v)
    }

    /// The bytes of the request's image: inline, or a file under the image root.
    fn image_bytes(&self, image: &ImageRef) -> std::result::Result<Vec<u8>, Failure> {
        let max = self.opts.limits.max_image_bytes;
        match image {
            ImageRef::Base64(b) => {
                if b.len() / 4 * 3 > max + 3 {
                    return Err(Failure::new(
                        ErrorKind::TooLarge,
                        format!("inline image over {max} bytes"),
                    ));
                }
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .map_err(|e| Failure::new(ErrorKind::BadRequest, format!("image_b64: {e}")))
            }
            ImageRef::Path(p) => {
                let path = self.resolve(p)?;
                read_capped(&path, max as u64, "image").map_err(Failure::from)
            }
        }
    }

    /// A request's image path: under the root (canonicalised, so neither `..` nor a symlink
    /// leads out of it), or as given when paths without a root are allowed.
    fn resolve(&self, p: &str) -> std::result::Result<PathBuf, Failure> {
        let forbidden = |m: String| Failure::new(ErrorKind::Forbidden, m);
        let Some(root) = &self.root else {
            if self.opts.paths_without_root {
                return Ok(PathBuf::from(p));
            }
            return Err(forbidden(
                "image paths are not accepted here (no --image-root); send image_b64".into(),
            ));
        };
        let rel = Path::new(p);
        if rel.is_absolute() || rel.has_root() {
            return Err(forbidden(format!(
                "{p:?}: give image paths relative to the image root"
            )));
        }
        if rel
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
        {
            return Err(forbidden(format!(
                "{p:?}: \"..\" is not allowed in image paths"
            )));
        }
        let joined = root.join(rel);
        let canon = joined.canonicalize().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Failure::new(ErrorKind::NotFound, format!("{p:?}: no such image"))
            } else {
                Failure::from(Error::io(&joined, e))
            }
        })?;
        if !canon.starts_with(root) {
            return Err(forbidden(format!("{p:?} leads outside the image root")));
        }
        Ok(canon)
    }
}

/// The cache key of an image and the proposals it is encoded with.
fn frame_key(bytes: &[u8], boxes: Option<&Proposals>) -> FrameKey {
    let mut h = Sha256::new();
    h.update(bytes);
    match boxes {
        Some(p) => {
            h.update(b"boxes");
            for b in p.objects.iter().chain(&p.parts) {
                for v in [b.x1, b.y1, b.x2, b.y2] {
                    h.update(v.to_le_bytes());
                }
            }
            h.update((p.objects.len() as u64).to_le_bytes());
        }
        None => h.update(b"auto"),
    }
    h.finalize().into()
}
