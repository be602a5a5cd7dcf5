//! The request and response JSON of `unires serve` (the same over stdio and HTTP).
//!
//! Request: `{"id": any, "image": "path" | "image_b64": "…", "expression": "…",
//! "granularity": "auto"|"part"|"object"|"multi", "boxes": {"objects": […], "parts": […]}}`
//! (`id`, `granularity` and `boxes` optional).
//!
//! Response: `{"id", "ok": true, "granularity", "score", "empty", "size": [h, w], "rle",
//! "instances": [{"bbox": [x, y, w, h], "score", "rle"}], "timing_ms": {…}, "cached": bool}`, or
//! `{"id", "ok": false, "error": {"kind", "message"}}` with a `kind` from [`ErrorKind`]. The
//! result fields are [`crate::io::result::segmentation_json`].

use serde_json::{json, Value};

use crate::error::Error;

/// What went wrong, as clients branch on it (`error.kind`), with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed JSON, a missing or mistyped field, an unknown granularity, bad boxes.
    BadRequest,
    /// The request, the image or the box list is over a limit.
    TooLarge,
    /// An image path outside the image root, or paths not allowed at all.
    Forbidden,
    /// An image path that does not exist.
    NotFound,
    /// The image cannot be decoded or is too small or too large in pixels.
    Image,
    /// The expression is empty, too long, or holds a special token.
    Expression,
    /// The model cannot do what is asked (e.g. parts on a checkpoint without them).
    Unsupported,
    /// The queue is full: try again later.
    Busy,
    /// A missing or wrong bearer token.
    Unauthorized,
    /// Anything else (a bug or a device failure).
    Internal,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::BadRequest,
        ErrorKind::TooLarge,
        ErrorKind::Forbidden,
        ErrorKind::NotFound,
        ErrorKind::Image,
        ErrorKind::Expression,
        ErrorKind::Unsupported,
        ErrorKind::Busy,
        ErrorKind::Unauthorized,
        ErrorKind::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Image => "image",
            ErrorKind::Expression => "expression",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Busy => "busy",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Internal => "internal",
        }
    }

    /// The HTTP status of a response with this error.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest | ErrorKind::Image | ErrorKind::Expression => 400,
            ErrorKind::Unsupported => 422,
            ErrorKind::TooLarge => 413,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Busy => 503,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Internal => 500,
        }
    }

    /// The kind of a library error met while answering a request.
    pub fn of(e: &Error) -> ErrorKind {
        match e {
            Error::Json { .. }
            | Error::MissingArgument { .. }
            | Error::UnknownGranularity { .. }
            | Error::BadBox { .. }
            | Error::TooManyProposals { .. } => ErrorKind::BadRequest,
            Error::FileNotFound { .. } => ErrorKind::NotFound,
            Error::TooLarge { .. } => ErrorKind::TooLarge,
            Error::NotARegularFile { .. } => ErrorKind::BadRequest,
            Error::IsADirectory { .. } | Error::NotADirectory { .. } | Error::Io { .. } => {
                ErrorKind::BadRequest
            }
            Error::BadImage { .. }
            | Error::UnsupportedImageFormat { .. }
            | Error::ImageTooSmall { .. }
            | Error::ImageTooLarge { .. } => ErrorKind::Image,
            Error::EmptyExpression
            | Error::ExpressionTooLong { .. }
            | Error::ExpressionHasSpecialToken { .. }
            | Error::PromptTooLong { .. } => ErrorKind::Expression,
            Error::UnsupportedGranularity { .. } => ErrorKind::Unsupported,
            _ => ErrorKind::Internal,
        }
    }
}

/// A failed request: its kind and a one-line message.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::new(ErrorKind::of(&e), e.to_string())
    }
}

/// The response line of a failure.
pub fn error_json(id: &Value, f: &Failure) -> Value {
    json!({
        "id": id,
        "ok": false,
        "error": {"kind": f.kind.as_str(), "message": f.message},
    })
}

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: Value,
    pub image: ImageRef,
    pub expression: String,
    pub granularity: String,
    /// The `boxes` object as sent (parsed against the image once it is decoded).
    pub boxes: Option<Value>,
}

/// Where the request's image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Path(String),
    Base64(String),
}

/// Parses a request body. On failure, the `id` (when it could be read) comes back with the
/// error so that the response can carry it.
pub fn parse_request(body: &[u8]) -> Result<Request, (Value, Failure)> {
    let bad = |id: &Value, m: String| (id.clone(), Failure::new(ErrorKind::BadRequest, m));
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad(&Value::Null, format!("malformed JSON: {e}")))?;
    let Value::Object(mut obj) = v else {
        return Err(bad(
            &Value::Null,
            "the request must be a JSON object".into(),
        ));
    };
    let id = obj.remove("id").unwrap_or(Value::Null);
    const KNOWN: [&str; 5] = ["image", "image_b64", "expression", "granularity", "boxes"];
    if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(bad(&id, format!("unknown field {k:?}")));
    }
    let string =
        |obj: &serde_json::Map<String, Value>, k: &str| -> Result<Option<String>, String> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("{k:?} must be a string")),
            }
        };
    let image = string(&obj, "image").map_err(|m| bad(&id, m))?;
    let image_b64 = string(&obj, "image_b64").map_err(|m| bad(&id, m))?;
    let image = match (image, image_b64) {
        (Some(p), None) => ImageRef::Path(p),
        (None, Some(b)) => ImageRef::Base64(b),
        (Some(_), Some(_)) => {
            return Err(bad(
                &id,
                "give either \"image\" or \"image_b64\", not both".into(),
            ))
        }
        (None, None) => return Err(bad(&id, "missing \"image\" or \"image_b64\"".into())),
    };
    let expression = string(&obj, "expression")
        .map_err(|m| bad(&id, m))?
        .ok_or_else(|| bad(&id, "missing \"expression\"".into()))?;
    let granularity = string(&obj, "granularity")
        .map_err(|m| bad(&id, m))?
        .unwrap_or_else(|| "auto".into());
    let boxes = match obj.remove("boxes") {
        None | Some(Value::Null) => None,
        Some(b @ Value::Object(_)) => Some(b),
        Some(_) => return Err(bad(&id, "\"boxes\" must be an object".into())),
    };
    Ok(Request {
        id,
        image,
        expression,
        granularity,
        boxes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_keep_their_id() {
        let r = parse_request(br#"{"id": 7, "image": "a.png", "expression": "the dog"}"#).unwrap();
        assert_eq!(r.id, json!(7));
        assert_eq!(r.image, ImageRef::Path("a.png".into()));
        assert_eq!(r.granularity, "auto");
        for (body, id) in [
            (&br#"{"id": "x", "expression": "a"}"#[..], json!("x")),
            (
                br#"{"id": 1, "image": "a", "image_b64": "b", "expression": "a"}"#,
                json!(1),
            ),
            (br#"{"id": 2, "image": 3, "expression": "a"}"#, json!(2)),
            (br#"{"id": 3, "image": "a"}"#, json!(3)),
            (
                br#"{"id": 4, "image": "a", "expression": "e", "colour": 1}"#,
                json!(4),
            ),
            (
                br#"{"id": 5, "image": "a", "expression": "e", "boxes": [1]}"#,
                json!(5),
            ),
            (b"[1, 2]", Value::Null),
            (b"{\"id\": 1, ", Value::Null),
        ] {
            let (got, f) = parse_request(body).unwrap_err();
            assert_eq!(got, id, "{}", String::from_utf8_lossy(body));
            assert_eq!(f.kind, ErrorKind::BadRequest);
        }
    }
}
