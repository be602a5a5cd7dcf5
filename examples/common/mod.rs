//! Helpers shared by the examples (each includes this file with `#[path]`).

/// A `/proc/self/status` memory field (`VmRSS:` now, `VmHWM:` the peak) in KiB; 0 where
/// there is no such file (not Linux).
#[allow(dead_code)]
pub fn status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The `unires` binary built next to the running example (`target/<profile>/unires`), or
/// the one `UNIRES_BIN` names.
#[allow(dead_code)]
pub fn server_binary() -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    if let Ok(p) = std::env::var("UNIRES_BIN") {
        return Ok(std::path::PathBuf::from(p));
    }
    // target/<profile>/examples/<name> → target/<profile>/unires
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .ok_or("cannot locate the target directory")?;
    let bin = dir.join(format!("unires{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        return Err(format!(
            "{} not found: run `cargo build --release` first",
            bin.display()
        )
        .into());
    }
    Ok(bin)
}

/// The value after `--name` on the command line, parsed, or `default`.
#[allow(dead_code)]
pub fn flag<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `examples/scenes` of this package.
#[allow(dead_code)]
pub fn scenes_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scenes")
}

/// The shipped scene images `examples/scenes/*.png`, sorted.
#[allow(dead_code)]
pub fn scene_pngs() -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(scenes_dir())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    names.sort();
    Ok(names)
}
