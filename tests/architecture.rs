//! The shape of the source tree (docs/architecture.md): imports between the crate's top-level
//! modules point one way, down the layers, and no source file grows past 700 lines.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The crate's top-level modules, lowest layer first. A module may use itself and the
/// modules before it, never one after it.
const LAYERS: [&str; 14] = [
    "error",
    "rng",
    "types",
    "config",
    "io",
    "weights",
    "ops",
    "proposals",
    "model",
    "pipeline",
    "synthetic",
    "eval",
    "train",
    "serve",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn src_files() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 20, "found only {} files in src/", files.len());
    (src, files)
}

/// The top-level module a source file belongs to (`None` for lib.rs and the binary).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "bin" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// The top-level modules a source text names as `crate::<module>` outside comments.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::{a, b}` groups: every name in the braces.
            if let Some(group) = after.strip_prefix('{') {
                let group = group.split('}').next().unwrap_or("");
                for part in group.split(',') {
                    let n: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !n.is_empty() {
                        out.insert(n);
                    }
                }
            } else if !name.is_empty() {
                out.insert(name);
            }
            rest = after;
        }
    }
    out
}

#[test]
fn the_reference_scanner_sees_imports_and_skips_comments() {
    let text = "use crate::model::UniRes;\n// crate::train is only mentioned\n\
                let x = crate::ops::roi_align(a); use crate::{io, weights::hub};";
    let got: Vec<String> = crate_refs(text).into_iter().collect();
    assert_eq!(got, ["io", "model", "ops", "weights"]);
}

#[test]
fn imports_point_down_the_layers() {
    let (src, files) = src_files();
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut upward = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(own) = rank(&module) else {
            panic!(
                "{}: module `{module}` is not in the layer list of tests/architecture.rs \
                 (and docs/architecture.md)",
                file.display()
            );
        };
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for target in crate_refs(&text) {
            match rank(&target) {
                Some(r) if r > own => upward.push(format!(
                    "{}: `{module}` uses `crate::{target}` (a higher layer)",
                    file.strip_prefix(&src).unwrap_or(file).display()
                )),
                _ => {}
            }
        }
    }
    assert!(upward.is_empty(), "upward imports:\n{}", upward.join("\n"));
}

#[test]
fn every_top_level_module_has_a_layer() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .unwrap_or_default();
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    assert!(declared.len() >= 10, "{declared:?}");
    for m in declared {
        assert!(
            LAYERS.contains(&m),
            "`{m}` is declared in lib.rs but has no layer"
        );
    }
}

#[test]
fn no_source_file_is_over_700_lines() {
    let (_, files) = src_files();
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).ok()?.lines().count();
            (n > 700).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split by concern: {long:?}");
}

#[test]
fn gpu_backends_take_plain_parameters() {
    // ops/cuda.rs and ops/metal.rs are called by the op files; they read only the plain
    // parameter structs (and CPU helpers), so that no op file and backend import each other.
    let ops = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ops");
    for backend in ["cuda.rs", "metal.rs"] {
        let text = std::fs::read_to_string(ops.join(backend)).unwrap_or_default();
        assert!(!text.is_empty(), "src/ops/{backend} is missing");
        for line in text.lines().map(str::trim) {
            if let Some(path) = line
                .strip_prefix("use super::")
                .or_else(|| line.strip_prefix("use crate::ops::"))
            {
                assert!(
                    path.starts_with("params::") || path.starts_with("cpu::"),
                    "src/ops/{backend}: `{line}` reaches into an op file"
                );
            }
        }
    }
}
