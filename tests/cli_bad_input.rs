//! The `unires segment` command on bad input, as a table: every row is a set of files and
//! arguments and what must happen. A refused input exits with code 1 and a one-line
//! `error: …` message naming the problem (never a panic, never exit code 101, no mask
//! written); an input that is only suspicious (boxes reaching past the image, no object
//! proposals) exits 0 with a `warning: …` line. Every run is killed after [`DEADLINE`]: a
//! hang (reading `/dev/zero` or a FIFO) fails its row instead of the whole test run.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{bin, TempDir};

/// The longest a row may take (the embedded model loads and runs in well under a second).
const DEADLINE: Duration = Duration::from_secs(20);

/// What a row must do.
#[derive(Clone, Copy)]
enum Expect {
    /// Exit code 1, one line on stderr containing the phrase, no mask written.
    Fails(&'static str),
    /// Exit code 0, a mask written, a `warning:` line containing the phrase.
    Warns(&'static str),
}

/// One row: a name, the arguments after `segment` (files made in the row's directory; `--out`
/// is added), and the expected outcome.
struct Case {
    name: &'static str,
    setup: fn(&TempDir) -> Vec<String>,
    expect: Expect,
}

// ------------------------------------------------------------------------------ inputs

fn path(t: &TempDir, rel: &str) -> String {
    t.join(rel).display().to_string()
}

fn scene_image() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/scenes/tall.png")
        .display()
        .to_string()
}

/// A plain 40×30 PNG.
fn good_image(t: &TempDir) -> String {
    let p = path(t, "ok.png");
    image::RgbImage::from_pixel(40, 30, image::Rgb([90, 120, 150]))
        .save(&p)
        .unwrap();
    p
}

fn args(image: String, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--image".to_string(),
        image,
        "--expression".into(),
        "the orange car".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn expression(t: &TempDir, e: &str) -> Vec<String> {
    vec![
        "--image".into(),
        good_image(t),
        "--expression".into(),
        e.into(),
    ]
}

/// The shipped scene (128×160) with a boxes file holding `text`.
fn boxes(t: &TempDir, text: &[u8]) -> Vec<String> {
    let b = path(t, "boxes.json");
    std::fs::write(&b, text).unwrap();
    args(scene_image(), &["--boxes", &b])
}

fn write(t: &TempDir, rel: &str, bytes: &[u8]) -> String {
    let p = path(t, rel);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A sparse file of `len` bytes: nothing is written, so it costs no disk.
fn sparse(t: &TempDir, rel: &str, len: u64) -> String {
    let p = path(t, rel);
    std::fs::File::create(&p).unwrap().set_len(len).unwrap();
    p
}

#[cfg(unix)]
fn fifo(t: &TempDir, rel: &str) -> String {
    let p = path(t, rel);
    let c = std::ffi::CString::new(p.clone()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {p}");
    p
}

/// CRC-32 (IEEE) as PNG chunks use it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A PNG chunk: length, type, data, CRC.
fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    let mut b = (data.len() as u32).to_be_bytes().to_vec();
    b.extend_from_slice(&body);
    b.extend_from_slice(&crc32(&body).to_be_bytes());
    b
}

/// A well-formed PNG whose header claims `w × h` (RGB, 8 bit) and whose one IDAT chunk holds
/// a few bytes only: the size is all a decoder can learn before the pixels run out.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    b.extend(png_chunk(b"IHDR", &ihdr));
    // A zlib stream of an empty stored block.
    b.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x01, 0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 1],
    ));
    b.extend(png_chunk(b"IEND", &[]));
    b
}

/// A real JPEG of 16×16 pixels.
fn jpeg_bytes() -> Vec<u8> {
    let img = image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8 * 9, y as u8 * 9, 50]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// That JPEG with its frame header claiming `w × h`.
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let mut b = jpeg_bytes();
    let sof = b
        .windows(2)
        .position(|m| m[0] == 0xff && (m[1] == 0xc0 || m[1] == 0xc2))
        .expect("a SOF marker");
    // FFC0, length (2), precision (1), height (2), width (2).
    b[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    b[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    b
}

/// A unires checkpoint directory holding only the embedded model's `config.json`, edited.
fn unires_dir_with_config(t: &TempDir, edit: fn(&mut serde_json::Value)) -> String {
    let dir = t.join("ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/tiny/config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
    dir.display().to_string()
}

fn with_weights(t: &TempDir, dir: String) -> Vec<String> {
    args(good_image(t), &["--weights", &dir])
}

// ------------------------------------------------------------------------------ the table

fn cases() -> Vec<Case> {
    use Expect::{Fails, Warns};
    let mut v = vec![
        // ---------------------------------------------------------------- image files
        Case {
            name: "missing image",
            setup: |t| args(path(t, "nope.png"), &[]),
            expect: Fails("nope.png: no such file"),
        },
        Case {
            name: "image is a directory",
            setup: |t| args(t.0.display().to_string(), &[]),
            expect: Fails("is a directory"),
        },
        Case {
            name: "image is a 1 GiB sparse file",
            setup: |t| args(sparse(t, "huge.png", 1 << 30), &[]),
            expect: Fails("the image is 1073741824 bytes, over the limit of 268435456 bytes"),
        },
        Case {
            name: "empty image file",
            setup: |t| args(write(t, "empty.png", b""), &[]),
            expect: Fails("unsupported image format"),
        },
        Case {
            name: "text file named .png",
            setup: |t| args(write(t, "notes.png", b"hello, this is not an image\n"), &[]),
            expect: Fails("unsupported image format"),
        },
        Case {
            name: "GIF (format not built in)",
            setup: |t| {
                args(
                    write(t, "img.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"),
                    &[],
                )
            },
            expect: Fails("unsupported image format"),
        },
        Case {
            name: "truncated PNG",
            setup: |t| {
                let p = good_image(t);
                let bytes = std::fs::read(&p).unwrap();
                std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
                args(p, &[])
            },
            expect: Fails("ok.png: cannot decode image"),
        },
        Case {
            name: "PNG signature then garbage",
            setup: |t| {
                let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
                b.extend_from_slice(&[7u8; 64]);
                args(write(t, "bad.png", &b), &[])
            },
            expect: Fails("bad.png"),
        },
        Case {
            name: "truncated JPEG",
            setup: |t| {
                let b = jpeg_bytes();
                args(write(t, "cut.jpg", &b[..b.len() * 2 / 3]), &[])
            },
            expect: Fails("cut.jpg: cannot decode image"),
        },
        Case {
            name: "PNG claiming 0x0",
            setup: |t| args(write(t, "zero.png", &png_claiming(0, 0)), &[]),
            expect: Fails("zero.png"),
        },
        Case {
            name: "1x1 PNG",
            setup: |t| {
                let p = path(t, "dot.png");
                image::RgbImage::new(1, 1).save(&p).unwrap();
                args(p, &[])
            },
            expect: Fails("image is 1x1; both sides must be at least 8 pixels"),
        },
        Case {
            name: "PNG claiming 100000x100000",
            setup: |t| args(write(t, "giant.png", &png_claiming(100_000, 100_000)), &[]),
            expect: Fails("image is 100000x100000"),
        },
        Case {
            name: "JPEG header claiming 60000x60000",
            setup: |t| args(write(t, "giant.jpg", &jpeg_claiming(60_000, 60_000)), &[]),
            expect: Fails("image is 60000x60000"),
        },
        Case {
            name: "real PNG one pixel over the side limit",
            setup: |t| {
                let p = path(t, "wide.png");
                image::GrayImage::new(16_385, 8).save(&p).unwrap();
                args(p, &[])
            },
            expect: Fails("image is 16385x8"),
        },
        // ---------------------------------------------------------------- boxes files
        Case {
            name: "missing boxes file",
            setup: |t| args(scene_image(), &["--boxes", &path(t, "none.json")]),
            expect: Fails("none.json: no such file"),
        },
        Case {
            name: "boxes is a directory",
            setup: |t| args(scene_image(), &["--boxes", &t.0.display().to_string()]),
            expect: Fails("is a directory"),
        },
        Case {
            name: "boxes is a 300 MB sparse file",
            setup: |t| {
                args(
                    scene_image(),
                    &["--boxes", &sparse(t, "b.json", 300_000_000)],
                )
            },
            expect: Fails("the boxes JSON is 300000000 bytes, over the limit of 16777216 bytes"),
        },
        Case {
            name: "malformed boxes JSON",
            setup: |t| boxes(t, br#"{"objects": [[1, 2, 3]"#),
            expect: Fails("boxes.json: malformed JSON"),
        },
        Case {
            name: "box with three coordinates",
            setup: |t| boxes(t, br#"{"objects": [[1, 2, 3]]}"#),
            expect: Fails("boxes.json: malformed JSON"),
        },
        Case {
            name: "NaN coordinate (not JSON)",
            setup: |t| boxes(t, br#"{"objects": [[NaN, 2, 30, 40]]}"#),
            expect: Fails("boxes.json: malformed JSON"),
        },
        Case {
            name: "coordinate overflowing f32",
            setup: |t| boxes(t, br#"{"objects": [[1, 2, 1e39, 40]]}"#),
            expect: Fails("box 0 [1, 2, inf, 40]: a coordinate is not a finite number"),
        },
        Case {
            name: "inverted box",
            setup: |t| boxes(t, br#"{"objects": [[20, 3, 10, 20]], "parts": []}"#),
            expect: Fails("box 0 [20, 3, 10, 20]: x2 < x1 or y2 < y1"),
        },
        Case {
            name: "inverted part (index counts objects first)",
            setup: |t| {
                boxes(
                    t,
                    br#"{"objects": [[1, 1, 9, 9]], "parts": [[5, 9, 8, 2]]}"#,
                )
            },
            expect: Fails("box 1 [5, 9, 8, 2]"),
        },
        Case {
            name: "misspelt key",
            setup: |t| boxes(t, br#"{"objets": [[1, 2, 3, 4]]}"#),
            expect: Fails("unknown field `objets`"),
        },
        Case {
            name: "boxes file not UTF-8",
            setup: |t| boxes(t, b"{\"objects\": [[1, 2, 3, 4]], \"x\xff\": 1}"),
            expect: Fails("boxes.json: malformed JSON"),
        },
        Case {
            name: "boxes partly outside the image",
            setup: |t| boxes(t, br#"{"objects": [[-6, 95, 70, 150], [60, 20, 135, 90]]}"#),
            expect: Warns("2 box(es) clipped to the image"),
        },
        Case {
            name: "a box outside the image and one of zero width",
            setup: |t| {
                boxes(
                    t,
                    br#"{"objects": [[300, 300, 400, 400], [3, 95, 70, 150]],
                         "parts": [[10, 10, 10, 40]]}"#,
                )
            },
            expect: Warns(
                "2 box(es) dropped: objects[0] [300, 300, 400, 400] (outside the image), \
                 parts[0] [10, 10, 10, 40] (zero width or height)",
            ),
        },
        Case {
            name: "every box outside the image",
            setup: |t| {
                boxes(
                    t,
                    br#"{"objects": [[-50, -50, -1, -1]], "parts": [[200, 0, 260, 9]]}"#,
                )
            },
            expect: Warns("no object proposals; the whole image is the one object proposal"),
        },
        Case {
            name: "no boxes at all",
            setup: |t| boxes(t, br#"{"objects": [], "parts": []}"#),
            expect: Warns("no object proposals; the whole image is the one object proposal"),
        },
        // ---------------------------------------------------------------- query
        Case {
            name: "empty expression",
            setup: |t| expression(t, ""),
            expect: Fails("the expression is empty"),
        },
        Case {
            name: "white-space expression",
            setup: |t| expression(t, " \t\n "),
            expect: Fails("the expression is empty"),
        },
        Case {
            name: "expression over the length limit",
            setup: |t| expression(t, &"mug ".repeat(200)),
            expect: Fails("the expression has 799 characters; the limit is 512"),
        },
        Case {
            name: "expression with the image token",
            setup: |t| expression(t, "the <image> mug"),
            expect: Fails("special token \"<image>\""),
        },
        Case {
            name: "expression with [SEG]",
            setup: |t| expression(t, "the mug [SEG]"),
            expect: Fails("special token \"[SEG]\""),
        },
        Case {
            name: "unknown granularity",
            setup: |t| args(good_image(t), &["--granularity", "pixel"]),
            expect: Fails("unknown granularity \"pixel\""),
        },
        Case {
            name: "unknown dtype",
            setup: |t| args(good_image(t), &["--dtype", "f8"]),
            expect: Fails("f8"),
        },
        Case {
            name: "unknown device",
            setup: |t| args(good_image(t), &["--device", "tpu"]),
            expect: Fails("tpu"),
        },
        // ---------------------------------------------------------------- weights
        Case {
            name: "missing weights directory",
            setup: |t| with_weights(t, path(t, "no-such-model")),
            expect: Fails("no-such-model: no such file"),
        },
        Case {
            name: "weights path is a file",
            setup: |t| {
                let f = write(t, "model.bin", b"x");
                with_weights(t, f)
            },
            expect: Fails("model.bin: is not a directory"),
        },
        Case {
            name: "unires directory without tokenizer and weights",
            setup: |t| {
                let d = unires_dir_with_config(t, |_| {});
                with_weights(t, d)
            },
            expect: Fails("tokenizer.json: no such file"),
        },
        Case {
            name: "unires config with hires.image_size off the stride",
            setup: |t| {
                let d = unires_dir_with_config(t, |v| v["hires"]["image_size"] = 150.into());
                with_weights(t, d)
            },
            expect: Fails(
                "hires.image_size 150 is not a positive multiple of the ConvNeXt stride 16",
            ),
        },
        Case {
            name: "unires config with region.select_dim 0",
            setup: |t| {
                let d = unires_dir_with_config(t, |v| v["region"]["select_dim"] = 0.into());
                with_weights(t, d)
            },
            expect: Fails("region.select_dim must be > 0"),
        },
        Case {
            name: "EVF-SAM directory with only config.json",
            setup: |t| {
                let dir = t.join("evf");
                std::fs::create_dir_all(&dir).unwrap();
                let cfg = common::fixtures("evf_sam/tiny/config.json");
                std::fs::copy(cfg, dir.join("config.json")).unwrap();
                with_weights(t, dir.display().to_string())
            },
            expect: Fails("sentencepiece.bpe.model: no such file"),
        },
    ];
    #[cfg(unix)]
    v.extend([
        Case {
            name: "image is a FIFO without writer",
            setup: |t| args(fifo(t, "cam.png"), &[]),
            expect: Fails("cam.png: is a FIFO (named pipe), expected a regular file"),
        },
        Case {
            name: "boxes is a FIFO without writer",
            setup: |t| args(scene_image(), &["--boxes", &fifo(t, "det.json")]),
            expect: Fails("det.json: is a FIFO (named pipe), expected a regular file"),
        },
        Case {
            name: "config.json is a FIFO",
            setup: |t| {
                let dir = t.join("ckpt");
                std::fs::create_dir_all(&dir).unwrap();
                fifo(t, "ckpt/config.json");
                with_weights(t, dir.display().to_string())
            },
            expect: Fails("config.json: is a FIFO"),
        },
    ]);
    #[cfg(target_os = "linux")]
    v.extend([
        Case {
            name: "image is /dev/zero",
            setup: |_| args("/dev/zero".into(), &[]),
            expect: Fails("/dev/zero: is a character device, expected a regular file"),
        },
        Case {
            name: "boxes is /dev/zero",
            setup: |_| args(scene_image(), &["--boxes", "/dev/zero"]),
            expect: Fails("/dev/zero: is a character device, expected a regular file"),
        },
        Case {
            name: "image is /dev/urandom",
            setup: |_| args("/dev/urandom".into(), &[]),
            expect: Fails("/dev/urandom: is a character device"),
        },
    ]);
    v
}

// ------------------------------------------------------------------------------ the runner

/// What one run did.
struct Run {
    code: Option<i32>,
    stderr: String,
    elapsed: Duration,
}

/// Runs `cmd` with stdout and stderr to files in `t` (a chatty process cannot block on a full
/// pipe), killing it once it runs past `deadline`.
fn run_with_deadline(
    mut cmd: std::process::Command,
    t: &TempDir,
    deadline: Duration,
) -> std::result::Result<Run, String> {
    let err_path = t.join("stderr.txt");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(t.join("stdout.txt")).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Ok(Run {
                code: status.code(),
                stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
                elapsed: start.elapsed(),
            });
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("still running after {deadline:?}: killed"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks one row; on success, how long it took and its last stderr line.
fn check(case: &Case) -> std::result::Result<(Duration, String), String> {
    let t = TempDir::new("cli-bad-input");
    let mut args = (case.setup)(&t);
    let mask = path(&t, "mask.png");
    args.extend(["--out".to_string(), mask.clone()]);
    let mut cmd = bin();
    cmd.arg("segment").args(&args);
    let r = run_with_deadline(cmd, &t, DEADLINE)?;
    let err = r.stderr.trim_end();
    if err.contains("panicked") || r.code == Some(101) {
        return Err(format!("panicked: {err}"));
    }
    let wrote = Path::new(&mask).exists();
    match case.expect {
        Expect::Fails(needle) => {
            if r.code != Some(1) {
                return Err(format!("exit code {:?}, expected 1: {err}", r.code));
            }
            if err.lines().count() != 1 || !err.starts_with("error: ") {
                return Err(format!("not one `error:` line: {err:?}"));
            }
            if !err.contains(needle) {
                return Err(format!("{err:?} lacks {needle:?}"));
            }
            if wrote {
                return Err("wrote a mask".into());
            }
        }
        Expect::Warns(needle) => {
            if r.code != Some(0) {
                return Err(format!("exit code {:?}, expected 0: {err}", r.code));
            }
            let warned = err
                .lines()
                .any(|l| l.starts_with("warning: ") && l.contains(needle));
            if !warned {
                return Err(format!("no warning with {needle:?}: {err:?}"));
            }
            if !wrote {
                return Err("no mask written".into());
            }
        }
    }
    Ok((r.elapsed, err.lines().last().unwrap_or("").to_string()))
}

#[test]
fn every_bad_input_fails_cleanly_or_warns_within_the_deadline() {
    let cases = cases();
    assert!(cases.len() >= 25, "{} rows", cases.len());
    let mut failures = Vec::new();
    let mut log = std::io::stderr().lock();
    for case in &cases {
        match check(case) {
            Ok((took, said)) => {
                let _ = writeln!(
                    log,
                    "ok {:>5.2}s  {}: {said}",
                    took.as_secs_f64(),
                    case.name
                );
            }
            Err(why) => failures.push(format!("{}: {why}", case.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The deadline itself works: a process that would run for ten minutes is killed and
/// reported as a failure.
#[cfg(unix)]
#[test]
fn the_runner_kills_a_process_past_the_deadline() {
    let t = TempDir::new("cli-deadline");
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("600");
    let start = Instant::now();
    let r = run_with_deadline(cmd, &t, Duration::from_millis(300));
    assert!(matches!(&r, Err(why) if why.contains("killed")));
    assert!(start.elapsed() < Duration::from_secs(5));
}
