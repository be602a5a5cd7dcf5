//! Build script: compiles `kernels/cuda/*.cu` to PTX with `nvcc` when the `cuda` feature is
//! on (nothing otherwise). `NVCC` names the compiler (default `nvcc`), `CUDA_COMPUTE_CAP` the
//! target architecture (e.g. `80`; default: asked from `nvidia-smi`, else 80). The Metal
//! sources need no build step: they are embedded with `include_str!` and compiled at run time.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Kernel files in kernels/cuda, each compiled to `$OUT_DIR/<name>.ptx`.
const CUDA_KERNELS: &[&str] = &["roi_align", "attention", "mask_upsample"];
const CUDA_HEADERS: &[&str] = &["common.cuh"];
const DEFAULT_COMPUTE_CAP: &str = "80";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    for name in CUDA_KERNELS {
        println!("cargo:rerun-if-changed=kernels/cuda/{name}.cu");
    }
    for name in CUDA_HEADERS {
        println!("cargo:rerun-if-changed=kernels/cuda/{name}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into()));
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let cap = compute_cap();
    for name in CUDA_KERNELS {
        let src = Path::new("kernels/cuda").join(format!("{name}.cu"));
        let ptx = out_dir.join(format!("{name}.ptx"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17", "-lineinfo"])
            .arg(format!("-arch=sm_{cap}"))
            .arg("-Ikernels/cuda")
            .arg("-o")
            .arg(&ptx)
            .arg(&src)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => fail(&format!("{nvcc} failed on {} ({s})", src.display())),
            Err(e) => fail(&format!(
                "cannot run {nvcc} ({e}); the `cuda` feature needs the CUDA toolkit (set NVCC)"
            )),
        }
    }
}

/// The compute capability to compile for, without the dot (`80`, `89`, `90`).
fn compute_cap() -> String {
    if let Ok(cap) = std::env::var("CUDA_COMPUTE_CAP") {
        return cap.replace('.', "");
    }
    let query = Command::new("nvidia-smi")
        .args(["--query-gpu=compute_cap", "--format=csv,noheader"])
        .output();
    if let Ok(out) = query {
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(first) = text.lines().next().map(str::trim).filter(|l| !l.is_empty()) {
                return first.replace('.', "");
            }
        }
    }
    DEFAULT_COMPUTE_CAP.to_string()
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}
