//! Bounded reads of caller-given files: only regular files are opened, and never more than a
//! cap is read, so that `/dev/zero`, a FIFO or a 300 MB file where a small JSON file belongs
//! fail at once with a typed error instead of hanging or filling the memory.
//!
//! The caps of the model's inputs (image and boxes files) are in
//! [`Limits`](crate::config::Limits) (`max_image_bytes`, `max_boxes_bytes`); the caps below
//! are for the files that come with a checkpoint or a benchmark. Checkpoint weights are not
//! read whole (they are memory-mapped or streamed tensor by tensor) and keep their own checks,
//! but are opened through [`open_regular`] too.
//!
//! | what | cap | largest known real file |
//! |---|---|---|
//! | `config.json`, `added_tokens.json`, shard indexes, hub refs | [`MAX_CONFIG_BYTES`] = 16 MiB | a few MB (shard index of a 400B-parameter model) |
//! | `tokenizer.json`, sentencepiece models | [`MAX_TOKENIZER_BYTES`] = 128 MiB | about 35 MB (Gemma 3's `tokenizer.json`) |
//! | benchmark annotations and prediction files | [`MAX_DATASET_BYTES`] = 2 GiB | about 450 MB (COCO `instances_train2014.json`) |

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// Cap of small JSON files: `config.json`, `added_tokens.json`, safetensors shard indexes and
/// hub refs (16 MiB).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Cap of tokenizer files: `tokenizer.json` and sentencepiece models (128 MiB).
pub const MAX_TOKENIZER_BYTES: u64 = 128 << 20;

/// Cap of benchmark files: annotation JSON, refs pickles and prediction files (2 GiB).
pub const MAX_DATASET_BYTES: u64 = 2 << 30;

/// What a non-regular file is, in words.
fn kind_of(ft: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "FIFO (named pipe)";
        }
        if ft.is_char_device() {
            return "character device";
        }
        if ft.is_block_device() {
            return "block device";
        }
        if ft.is_socket() {
            return "socket";
        }
    }
    if ft.is_symlink() {
        return "symbolic link";
    }
    "special file"
}

/// The typed error for a path that exists but is not a regular file, if it is one.
fn not_regular(path: &Path, ft: &std::fs::FileType) -> Option<Error> {
    if ft.is_dir() {
        Some(Error::IsADirectory {
            path: path.to_path_buf(),
        })
    } else if !ft.is_file() {
        Some(Error::NotARegularFile {
            path: path.to_path_buf(),
            kind: kind_of(ft),
        })
    } else {
        None
    }
}

/// Opens without blocking: a FIFO with no writer would otherwise block `open` itself.
/// Reads from regular files are unaffected by the flag.
#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

/// Opens `path` for reading if it is a regular file (symbolic links are followed) and returns
/// it with its size. Directories are [`Error::IsADirectory`]; FIFOs, devices and sockets are
/// [`Error::NotARegularFile`], refused without reading a byte (and without blocking: the type
/// is checked on the opened handle, so the answer is about the file actually opened).
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    let file = match open_nonblocking(path) {
        Ok(f) => f,
        Err(e) => {
            // A socket cannot be opened at all: say what it is rather than "no such device".
            if let Some(bad) = std::fs::metadata(path)
                .ok()
                .and_then(|m| not_regular(path, &m.file_type()))
            {
                return Err(bad);
            }
            return Err(Error::io(path, e));
        }
    };
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if let Some(bad) = not_regular(path, &meta.file_type()) {
        return Err(bad);
    }
    Ok((file, meta.len()))
}

/// The error for an input of `kind` named `what` over `max` bytes (`size` when known).
pub fn too_large(
    what: impl Into<String>,
    kind: &'static str,
    size: Option<u64>,
    max: u64,
) -> Error {
    Error::TooLarge {
        what: what.into(),
        kind,
        size,
        max,
    }
}

/// Checks the length of an in-memory input of `kind` (named `what`) against `max_bytes`.
pub fn check_len(len: usize, max_bytes: u64, what: &str, kind: &'static str) -> Result<()> {
    let len = len as u64;
    if len > max_bytes {
        return Err(too_large(what, kind, Some(len), max_bytes));
    }
    Ok(())
}

/// Reads a regular file of at most `max_bytes` bytes; `kind` says what the file is in errors
/// ("image", "boxes JSON", …). A file whose size is over the cap is refused before a byte is
/// read; one that grows past it while being read (or reports no size, as `/proc` files do)
/// is refused after `max_bytes + 1` bytes.
pub fn read_capped(path: &Path, max_bytes: u64, kind: &'static str) -> Result<Vec<u8>> {
    let (file, len) = open_regular(path)?;
    if len > max_bytes {
        return Err(too_large(
            path.display().to_string(),
            kind,
            Some(len),
            max_bytes,
        ));
    }
    // `len ≤ max_bytes`; the capacity is a hint only.
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    if buf.len() as u64 > max_bytes {
        return Err(too_large(path.display().to_string(), kind, None, max_bytes));
    }
    Ok(buf)
}

/// [`read_capped`] of a UTF-8 text file; text that is not UTF-8 is an [`Error::Io`] of kind
/// `InvalidData`, as `std::fs::read_to_string` reports it.
pub fn read_capped_to_string(path: &Path, max_bytes: u64, kind: &'static str) -> Result<String> {
    let bytes = read_capped(path, max_bytes, kind)?;
    String::from_utf8(bytes).map_err(|e| {
        Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the {kind} is not UTF-8 text ({e})"),
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("unires-read-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_up_to_the_cap_and_refuses_more() {
        let d = temp("cap");
        let p = d.join("f.json");
        std::fs::write(&p, b"0123456789").unwrap();
        assert_eq!(read_capped(&p, 10, "test file").unwrap(), b"0123456789");
        let err = read_capped(&p, 9, "test file").unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    kind: "test file",
                    size: Some(10),
                    max: 9,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("f.json"), "{err}");
        // A sparse file far over the cap is refused by its size, not by reading it.
        let big = d.join("big.json");
        File::create(&big).unwrap().set_len(1 << 40).unwrap();
        let t = std::time::Instant::now();
        assert!(matches!(
            read_capped(&big, 1 << 20, "test file"),
            Err(Error::TooLarge {
                size: Some(0x100_0000_0000),
                ..
            })
        ));
        assert!(t.elapsed().as_secs() < 5);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn text_must_be_utf8() {
        let d = temp("utf8");
        let p = d.join("t.txt");
        std::fs::write(&p, b"ok \xff").unwrap();
        let err = read_capped_to_string(&p, 100, "text").unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::InvalidData)
        );
        std::fs::write(&p, "héllo").unwrap();
        assert_eq!(read_capped_to_string(&p, 100, "text").unwrap(), "héllo");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn directories_and_missing_files_are_typed() {
        let d = temp("dir");
        assert!(matches!(
            read_capped(&d, 100, "x"),
            Err(Error::IsADirectory { .. })
        ));
        assert!(matches!(
            read_capped(&d.join("nope"), 100, "x"),
            Err(Error::FileNotFound { .. })
        ));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn devices_are_refused_without_reading() {
        for dev in ["/dev/zero", "/dev/urandom"] {
            let err = read_capped(Path::new(dev), 1 << 20, "image").unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::NotARegularFile {
                        kind: "character device",
                        ..
                    }
                ),
                "{dev}: {err}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_without_writer_is_refused_at_once() {
        let d = temp("fifo");
        let p = d.join("pipe");
        let c = std::ffi::CString::new(p.display().to_string()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_capped(&p, 100, "boxes JSON").unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotARegularFile {
                    kind: "FIFO (named pipe)",
                    ..
                }
            ),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn in_memory_lengths_are_checked() {
        assert!(check_len(10, 10, "request", "image").is_ok());
        assert!(matches!(
            check_len(11, 10, "request", "image"),
            Err(Error::TooLarge {
                size: Some(11),
                max: 10,
                ..
            })
        ));
    }
}
