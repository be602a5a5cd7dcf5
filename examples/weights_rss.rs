//! Peak memory of loading a checkpoint, against its size on disk.
//!
//! Writes a synthetic checkpoint of a larger configuration (the `tiny` graph with a
//! 1024-wide, 8-layer, 32000-token LLM: ~170 M parameters, ~330 MiB in bf16) to a temporary
//! directory, then loads it in fresh child processes and reads each one's peak resident set
//! (`VmHWM` in /proc/self/status) before and after. Compared side by side: unires's loader
//! (header check, then one copy per tensor out of the mapping, mapped pages released) and
//! candle's `VarBuilder::from_mmaped_safetensors` (mapping kept until the model is built).
//!
//! `cargo run --example weights_rss` (Linux only: reads /proc).

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use common::status_kb;
use unires::config::UniResConfig;
use unires::model::unires::load::{check_dir, load_dir};
use unires::model::unires::prompt::{word_level_prompt, PromptBuilder};
use unires::model::unires::UniRes;

fn config() -> UniResConfig {
    let mut c = UniResConfig::tiny();
    c.name = "rss-bench".into();
    c.llm.vocab_size = 32000;
    c.llm.hidden_size = 1024;
    c.llm.intermediate_size = 2816;
    c.llm.num_hidden_layers = 8;
    c.llm.num_attention_heads = 16;
    c.llm.num_key_value_heads = Some(16);
    c
}

fn prompt(cfg: &UniResConfig) -> (PromptBuilder, String) {
    word_level_prompt(&cfg.prompt, &cfg.tokens, &cfg.limits, &["the", "mug"]).unwrap()
}

fn write(dir: &Path) {
    let cfg = config();
    let (p, json) = prompt(&cfg);
    let (_, vars) = unires::train::fresh_model(&cfg, p, 1, DType::F32).unwrap();
    let map: std::collections::HashMap<String, Tensor> = vars
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().to_dtype(DType::BF16).unwrap()))
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    candle_core::safetensors::save(&map, dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), cfg.to_json_string()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), json).unwrap();
}

fn load(dir: &Path, dtype: DType, candle: bool) {
    let before = status_kb("VmHWM:");
    let model = if candle {
        let c = check_dir(dir).unwrap();
        let vb = unsafe {
            candle_nn::VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                dtype,
                &Device::Cpu,
            )
            .unwrap()
        };
        UniRes::new(&c.config, c.prompt, vb).unwrap()
    } else {
        load_dir(dir, &Device::Cpu, dtype).unwrap()
    };
    let after = status_kb("VmHWM:");
    let rss = status_kb("VmRSS:");
    println!("{before} {after} {rss}");
    drop(model);
}

fn child(args: &[&str]) -> String {
    let exe = std::env::current_exe().unwrap();
    let o = Command::new(exe).args(args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("write") => return write(Path::new(&args[2])),
        Some("load") => {
            let dtype = unires::weights::parse_dtype(&args[3]).unwrap();
            return load(
                Path::new(&args[2]),
                dtype,
                args.get(4).is_some_and(|a| a == "candle"),
            );
        }
        _ => {}
    }
    let dir: PathBuf = std::env::temp_dir().join(format!("unires-rss-{}", std::process::id()));
    child(&["write", dir.to_str().unwrap()]);
    let file = std::fs::metadata(dir.join("model.safetensors"))
        .unwrap()
        .len();
    let mb = |kb: u64| kb as f64 / 1024.0;
    println!(
        "checkpoint: model.safetensors, {:.0} MiB (bf16)",
        file as f64 / 1048576.0
    );
    println!(
        "| loader | load dtype | weights in memory (MiB) | peak RSS before (MiB) | peak RSS after (MiB) | peak increase / weights in memory |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, dtype, candle) in [
        ("unires", "bf16", false),
        ("candle mmap VarBuilder", "bf16", true),
        ("unires", "f32", false),
        ("candle mmap VarBuilder", "f32", true),
    ] {
        let mut a = vec!["load", dir.to_str().unwrap(), dtype];
        if candle {
            a.push("candle");
        }
        let out = child(&a);
        let v: Vec<u64> = out
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let (before, after) = (v[0], v[1]);
        let in_mem = if dtype == "f32" { file * 2 } else { file } as f64 / 1024.0;
        println!(
            "| {name} | {dtype} | {:.0} | {:.0} | {:.0} | {:.2} |",
            in_mem / 1024.0,
            mb(before),
            mb(after),
            (after - before) as f64 / in_mem
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
