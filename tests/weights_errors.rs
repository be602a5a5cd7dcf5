//! Bad checkpoints, bad component files and unreachable hub repositories give typed errors
//! that name the file and tensor — never a panic, never a silent load. One table of
//! checkpoint corruptions (each applied to a freshly assembled good checkpoint), one of
//! assembly mistakes, the hub cases (offline cache, a local stand-in for the hub), and the
//! CLI's exit code and message for a few of them.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use common::weights::*;
use common::{bin, TempDir};
use unires::model::unires::assemble::{assemble, GlueSource};
use unires::model::unires::load::{check_dir, load_dir, load_with};
use unires::weights::hub::HubOptions;
use unires::Error;
use unires::Source;

fn edit_tensors(file: &Path, f: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let mut m = candle_core::safetensors::load(file, &Device::Cpu).unwrap();
    f(&mut m);
    candle_core::safetensors::save(&m, file).unwrap();
}

fn edit_json(file: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(file, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn truncate(file: &Path, by: u64) {
    let len = std::fs::metadata(file).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.set_len(len - by).unwrap();
}

fn patch_bytes(file: &Path, at: usize, bytes: &[u8]) {
    let mut b = std::fs::read(file).unwrap();
    b[at..at + bytes.len()].copy_from_slice(bytes);
    std::fs::write(file, b).unwrap();
}

type Mutate = fn(&Path) -> PathBuf;
type Expect = fn(&Error, &str) -> bool;

/// (case, corrupt the checkpoint and return the path to load, what the error must be)
fn cases() -> Vec<(&'static str, Mutate, Expect)> {
    vec![
        (
            "missing directory",
            |d| d.join("nope"),
            |e, m| {
                matches!(e, Error::FileNotFound { path } if path.ends_with("nope"))
                    && m.contains("nope")
            },
        ),
        (
            "a file instead of a directory",
            |d| d.join("config.json"),
            |e, _| matches!(e, Error::NotADirectory { .. }),
        ),
        (
            "missing config.json",
            |d| {
                std::fs::remove_file(d.join("config.json")).unwrap();
                d.to_path_buf()
            },
            |e, _| matches!(e, Error::FileNotFound { path } if path.ends_with("config.json")),
        ),
        (
            "unknown config version",
            |d| {
                edit_json(&d.join("config.json"), |v| v["version"] = 99.into());
                d.to_path_buf()
            },
            |e, _| matches!(e, Error::UnsupportedConfigVersion { got: 99, .. }),
        ),
        (
            "config.json is not JSON",
            |d| {
                std::fs::write(d.join("config.json"), "{ not json").unwrap();
                d.to_path_buf()
            },
            |e, m| matches!(e, Error::Config { .. }) && m.contains("config.json"),
        ),
        (
            "config contradicts the tensors: hidden size",
            |d| {
                edit_json(&d.join("config.json"), |v| {
                    v["llm"]["hidden_size"] = 32.into()
                });
                d.to_path_buf()
            },
            |e, m| {
                matches!(e, Error::Config { .. })
                    && m.contains("llm.hidden_size is 32")
                    && m.contains("llm.model.embed_tokens.weight")
            },
        ),
        (
            "config contradicts the tensors: layer count",
            |d| {
                edit_json(&d.join("config.json"), |v| {
                    v["llm"]["num_hidden_layers"] = 3.into()
                });
                d.to_path_buf()
            },
            |e, m| matches!(e, Error::Config { .. }) && m.contains("llm.num_hidden_layers is 3"),
        ),
        (
            "missing tensor",
            |d| {
                edit_tensors(&d.join("model.safetensors"), |m| {
                    m.remove("target_head.2.weight");
                });
                d.to_path_buf()
            },
            |e, m| {
                matches!(e, Error::MissingTensor { name, file: Some(_) } if name == "target_head.2.weight")
                    && m.contains("model.safetensors")
            },
        ),
        (
            "extra tensor",
            |d| {
                edit_tensors(&d.join("model.safetensors"), |m| {
                    m.insert(
                        "decoder.extra.weight".into(),
                        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
                    );
                });
                d.to_path_buf()
            },
            |e, m| {
                matches!(e, Error::UnexpectedTensors { count: 1, first, .. } if first.contains("decoder.extra.weight"))
                    && m.contains("model.safetensors")
            },
        ),
        (
            "wrong shape",
            |d| {
                edit_tensors(&d.join("model.safetensors"), |m| {
                    m.insert(
                        "region_select.q.weight".into(),
                        Tensor::zeros((7, 16), DType::F32, &Device::Cpu).unwrap(),
                    );
                });
                d.to_path_buf()
            },
            |e, _| {
                matches!(e, Error::ShapeMismatch { name, expected, got }
                    if name == "region_select.q.weight" && expected == &vec![8, 16] && got == &vec![7, 16])
            },
        ),
        (
            "wrong dtype (integers where floats are expected)",
            |d| {
                edit_tensors(&d.join("model.safetensors"), |m| {
                    let t = m["neck.conv1.weight"].to_dtype(DType::I64).unwrap();
                    m.insert("neck.conv1.weight".into(), t);
                });
                d.to_path_buf()
            },
            |e, _| matches!(e, Error::DTypeMismatch { name, got, .. } if name == "neck.conv1.weight" && got == "I64"),
        ),
        (
            "truncated weights",
            |d| {
                truncate(&d.join("model.safetensors"), 100);
                d.to_path_buf()
            },
            |e, m| {
                matches!(e, Error::Safetensors { path, .. } if path.ends_with("model.safetensors"))
                    && m.contains("truncated")
            },
        ),
        (
            "corrupt header",
            |d| {
                patch_bytes(&d.join("model.safetensors"), 8, b"\x00\x01garbage");
                d.to_path_buf()
            },
            |e, m| matches!(e, Error::Safetensors { .. }) && m.contains("corrupt header"),
        ),
        (
            "header length beyond the file",
            |d| {
                patch_bytes(&d.join("model.safetensors"), 0, &(1u64 << 30).to_le_bytes());
                d.to_path_buf()
            },
            |e, m| matches!(e, Error::Safetensors { .. }) && m.contains("corrupt header"),
        ),
        (
            "empty weights file",
            |d| {
                std::fs::write(d.join("model.safetensors"), b"").unwrap();
                d.to_path_buf()
            },
            |e, m| matches!(e, Error::Safetensors { .. }) && m.contains("8-byte"),
        ),
        (
            "missing weights file",
            |d| {
                std::fs::remove_file(d.join("model.safetensors")).unwrap();
                d.to_path_buf()
            },
            |e, _| matches!(e, Error::FileNotFound { path } if path.ends_with("model.safetensors")),
        ),
        (
            "missing tokenizer.json",
            |d| {
                std::fs::remove_file(d.join("tokenizer.json")).unwrap();
                d.to_path_buf()
            },
            |e, _| matches!(e, Error::FileNotFound { path } if path.ends_with("tokenizer.json")),
        ),
        (
            "tokenizer without the special tokens",
            |d| {
                std::fs::copy(fx("tokenizer.json"), d.join("tokenizer.json")).unwrap();
                d.to_path_buf()
            },
            |e, _| matches!(e, Error::MissingSpecialToken { .. }),
        ),
        (
            "malformed tokenizer",
            |d| {
                std::fs::write(d.join("tokenizer.json"), "{\"model\": 3}").unwrap();
                d.to_path_buf()
            },
            |e, m| matches!(e, Error::Tokenizer { .. }) && m.contains("tokenizer.json"),
        ),
        (
            "tokenizer larger than the embedding table",
            |d| {
                edit_json(&d.join("config.json"), |v| {
                    v["llm"]["vocab_size"] = 30.into()
                });
                d.to_path_buf()
            },
            |e, m| matches!(e, Error::Config { .. }) && m.contains("tokenizer"),
        ),
    ]
}

#[test]
fn every_bad_checkpoint_is_a_typed_error() {
    for (case, mutate, expect) in cases() {
        let t = TempDir::new("bad");
        assemble_a(t.path());
        let path = mutate(t.path());
        let e = match load_dir(&path, &Device::Cpu, DType::F32) {
            Ok(_) => panic!("{case}: loaded"),
            Err(e) => e,
        };
        let msg = e.to_string();
        assert!(expect(&e, &msg), "{case}: unexpected error {e:?} ({msg})");
    }
}

fn sharded() -> TempDir {
    let t = TempDir::new("shards");
    let mut o = options(t.path(), &SET_A, GlueSource::Fresh { seed: 1 });
    o.max_shard_bytes = 40_000;
    assemble(&o).unwrap();
    t
}

fn index_of(d: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(d.join("model.safetensors.index.json")).unwrap())
        .unwrap()
}

#[test]
fn bad_shard_indexes_are_typed_errors() {
    // A shard the index names is missing.
    let t = sharded();
    let idx = index_of(t.path());
    let shard = t.join(idx["weight_map"]["llm.lm_head.weight"].as_str().unwrap());
    std::fs::remove_file(&shard).unwrap();
    let e = check_dir(t.path()).err().unwrap();
    assert!(
        matches!(&e, Error::FileNotFound { path } if path == &shard),
        "{e:?}"
    );

    // The index lists a tensor its shard does not hold.
    let t = sharded();
    let idx = index_of(t.path());
    let first_shard = idx["weight_map"]["llm.lm_head.weight"]
        .as_str()
        .unwrap()
        .to_string();
    edit_json(&t.join("model.safetensors.index.json"), |v| {
        v["weight_map"]["llm.extra.weight"] = first_shard.clone().into();
    });
    let e = check_dir(t.path()).err().unwrap();
    assert!(
        matches!(&e, Error::MissingTensor { name, file: Some(f) } if name == "llm.extra.weight" && f.ends_with(&first_shard)),
        "{e:?}"
    );

    // A shard holds a tensor the index does not list for it.
    let t = sharded();
    edit_json(&t.join("model.safetensors.index.json"), |v| {
        v["weight_map"]
            .as_object_mut()
            .unwrap()
            .remove("llm.lm_head.weight");
    });
    let e = check_dir(t.path()).err().unwrap();
    assert!(
        matches!(&e, Error::UnexpectedTensors { first, .. } if first.contains("llm.lm_head.weight")),
        "{e:?}"
    );
}

#[test]
fn unsupported_compute_dtype_is_a_typed_error() {
    let t = TempDir::new("dtype");
    assemble_a(t.path());
    assert!(matches!(
        load_dir(t.path(), &Device::Cpu, DType::U8),
        Err(Error::Config { .. })
    ));
}

#[test]
fn assembly_mistakes_are_typed_errors() {
    let t = TempDir::new("asm");
    let good = || options(&t.join("out"), &SET_A, GlueSource::Fresh { seed: 1 });
    let run = |o: unires::model::unires::assemble::AssembleOptions| assemble(&o).err().unwrap();

    // A component in a layout we do not know (an LLM given as the CLIP).
    let mut o = good();
    o.clip = vec![fx("llama")];
    let e = run(o);
    assert!(
        matches!(
            &e,
            Error::UnknownLayout {
                component: "CLIP",
                ..
            }
        ) && e.to_string().contains("llama"),
        "{e}"
    );

    // A file that is no checkpoint at all.
    std::fs::write(t.join("junk.pth"), b"not a zip").unwrap();
    let mut o = good();
    o.sam = Some(vec![t.join("junk.pth")]);
    let e = run(o);
    assert!(
        matches!(&e, Error::BadCheckpoint { path, .. } if path.ends_with("junk.pth")),
        "{e}"
    );

    // A JSON file given as weights.
    let mut o = good();
    o.llm = vec![fx("tokenizer.json")];
    assert!(matches!(run(o), Error::BadCheckpoint { .. }));

    // A missing component file and a missing tokenizer.
    let mut o = good();
    o.convnext = vec![t.join("nowhere.safetensors")];
    assert!(matches!(run(o), Error::FileNotFound { .. }));
    let mut o = good();
    o.tokenizer = t.join("nowhere.json");
    assert!(matches!(run(o), Error::FileNotFound { .. }));

    // A glue file holding tensors that are not unires glue.
    let mut o = good();
    o.glue = GlueSource::File(fx("sam_hf/model.safetensors"));
    let e = run(o);
    assert!(
        matches!(
            &e,
            Error::UnknownLayout {
                component: "glue",
                ..
            }
        ),
        "{e}"
    );

    // A glue file missing a tensor: named, with the glue file.
    let src = TempDir::new("asm-glue");
    assemble_a(src.path());
    let glue = src.join("model.safetensors");
    edit_tensors(&glue, |m| {
        m.remove("target_head.0.bias");
    });
    let mut o = good();
    o.glue = GlueSource::File(glue.clone());
    let e = run(o);
    assert!(
        matches!(&e, Error::MissingTensor { name, file: Some(f) } if name == "target_head.0.bias" && f == &glue),
        "{e}"
    );

    // A configuration whose glue sizes contradict the glue file.
    let mut o = good();
    o.glue = GlueSource::File(src.join("model.safetensors"));
    o.config.region.select_dim = 12;
    assert!(matches!(run(o), Error::ShapeMismatch { .. }));

    // An output directory that is not empty is never overwritten.
    std::fs::create_dir_all(t.join("full")).unwrap();
    std::fs::write(t.join("full/keep.txt"), b"x").unwrap();
    let mut o = good();
    o.out = t.join("full");
    assert!(matches!(run(o), Error::Io { .. }));
    assert!(t.join("full/keep.txt").exists());
}

// ------------------------------------------------------------------------------ hub

fn hub_opts(cache: &Path, offline: bool, endpoint: Option<String>) -> HubOptions {
    HubOptions {
        cache_dir: Some(cache.to_path_buf()),
        offline,
        progress: false,
        endpoint,
        token: None,
    }
}

/// Lays a checkpoint directory out as the hub cache does (refs/main → snapshot).
fn fake_cache(cache: &Path, repo: &str, ckpt: &Path, skip: &[&str]) {
    let root = cache.join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(root.join("refs")).unwrap();
    std::fs::write(root.join("refs/main"), SHA).unwrap();
    let snap = root.join("snapshots").join(SHA);
    std::fs::create_dir_all(&snap).unwrap();
    for e in std::fs::read_dir(ckpt).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if !skip.contains(&name.as_str()) {
            std::fs::copy(&p, snap.join(&name)).unwrap();
        }
    }
}

#[test]
fn hub_offline_reads_the_cache_only() {
    let t = TempDir::new("hub-off");
    let ckpt = t.join("ckpt");
    assemble_a(&ckpt);
    let src = Source::hub("someone/unires-micro");

    // Empty cache: a typed error naming the repository, no network.
    let empty = t.join("empty");
    let e = load_with(
        &src,
        &hub_opts(&empty, true, None),
        &Device::Cpu,
        DType::F32,
    )
    .err()
    .unwrap();
    assert!(
        matches!(&e, Error::Hub { repo, reason } if repo == "someone/unires-micro" && reason.contains("HF_HUB_OFFLINE")),
        "{e}"
    );

    // Partly cached: names what is missing.
    let partial = t.join("partial");
    fake_cache(&partial, "someone/unires-micro", &ckpt, &["tokenizer.json"]);
    let e = load_with(
        &src,
        &hub_opts(&partial, true, None),
        &Device::Cpu,
        DType::F32,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("tokenizer.json"), "{e}");

    // Fully cached: loads.
    let full = t.join("full");
    fake_cache(&full, "someone/unires-micro", &ckpt, &[]);
    let m = load_with(&src, &hub_opts(&full, true, None), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(m.config().name, "micro");

    // A bad repository id never reaches the cache or the network.
    let e = load_with(
        &Source::hub("no-slash"),
        &hub_opts(&full, true, None),
        &Device::Cpu,
        DType::F32,
    )
    .err()
    .unwrap();
    assert!(matches!(e, Error::Hub { .. }));
}

#[test]
fn hub_download_and_repository_not_found() {
    let t = TempDir::new("hub-on");
    let ckpt = t.join("ckpt");
    let mut o = options(&ckpt, &SET_A, GlueSource::Fresh { seed: 2 });
    o.max_shard_bytes = 40_000; // shards exercise the index download path
    assemble(&o).unwrap();
    let endpoint = serve(vec![("acme/unires-micro", ckpt.clone())]);
    let cache = t.join("cache");

    let e = load_with(
        &Source::hub("acme/missing"),
        &hub_opts(&cache, false, Some(endpoint.clone())),
        &Device::Cpu,
        DType::F32,
    )
    .err()
    .unwrap();
    assert!(
        matches!(&e, Error::Hub { repo, reason } if repo == "acme/missing" && reason.contains("not found")),
        "{e}"
    );

    let src = Source::hub("acme/unires-micro");
    let m = load_with(
        &src,
        &hub_opts(&cache, false, Some(endpoint)),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    assert_eq!(m.config().name, "micro");
    // Now cached: loads offline.
    load_with(
        &src,
        &hub_opts(&cache, true, None),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
}

// ------------------------------------------------------------------------------ CLI

fn segment_cmd(t: &TempDir) -> Command {
    image().save(t.join("img.png")).unwrap();
    let mut c = bin();
    c.arg("segment")
        .arg("--image")
        .arg(t.join("img.png"))
        .args(["--expression", "the red mug"])
        .arg("--out")
        .arg(t.join("mask.png"));
    std::fs::write(
        t.join("boxes.json"),
        r#"{"objects": [[2, 3, 20, 30]], "parts": []}"#,
    )
    .unwrap();
    c.arg("--boxes").arg(t.join("boxes.json"));
    c
}

fn fails_with(mut c: Command, needle: &str) {
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: ") && err.contains(needle),
        "{needle:?} not in {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// `segment --device cuda` with a checkpoint that lacks a tensor. Without the `cuda`
/// feature the device is refused, naming the feature to build with.
#[cfg(not(feature = "cuda"))]
fn cuda_device_fails(c: Command) {
    fails_with(c, "--features cuda");
}

/// With the `cuda` feature: where no CUDA device can be opened, the CLI fails with exactly
/// the error opening one gives (which names CUDA), on one line; where one can, the device
/// is accepted and the bad checkpoint is what fails.
#[cfg(feature = "cuda")]
fn cuda_device_fails(mut c: Command) {
    match unires::weights::source::parse_device("cuda") {
        Ok(_) => fails_with(c, "missing tensor \"mm_projector.2.bias\""),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.to_ascii_lowercase().contains("cuda"), "{msg}");
            let o = c.output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{err}");
            assert_eq!(err.trim_end(), format!("error: {msg}"));
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        }
    }
}

#[test]
fn cli_reports_bad_weights_with_exit_code_1() {
    let t = TempDir::new("cli-bad");
    let ckpt = t.join("ckpt");
    assemble_a(&ckpt);
    edit_tensors(&ckpt.join("model.safetensors"), |m| {
        m.remove("mm_projector.2.bias");
    });
    let mut c = segment_cmd(&t);
    c.arg("--weights").arg(&ckpt);
    fails_with(c, "missing tensor \"mm_projector.2.bias\"");

    let mut c = segment_cmd(&t);
    c.args(["--hub", "someone/not-cached"])
        .env("HF_HOME", t.join("hf-home"))
        .env_remove("HF_HUB_CACHE")
        .env("HF_HUB_OFFLINE", "1");
    fails_with(c, "someone/not-cached");

    let mut c = segment_cmd(&t);
    c.arg("--weights").arg(&ckpt).args(["--device", "cuda"]);
    cuda_device_fails(c);

    let mut c = bin();
    c.arg("assemble")
        .arg("--out")
        .arg(t.join("out"))
        .args(["--preset", "tiny"])
        .arg("--clip")
        .arg(fx("sam_hf"))
        .arg("--convnext")
        .arg(fx("convnext_hf"))
        .arg("--llm")
        .arg(fx("llama"))
        .arg("--tokenizer")
        .arg(fx("tokenizer.json"))
        .arg("--fresh-glue");
    fails_with(c, "not a known CLIP layout");
}

#[test]
fn components_are_fetched_from_the_hub_by_spec() {
    use unires::weights::inputs::{resolve, resolve_tokenizer};
    let t = TempDir::new("hub-comp");
    let tok_repo = t.join("tok");
    std::fs::create_dir_all(&tok_repo).unwrap();
    std::fs::copy(fx("tokenizer.json"), tok_repo.join("tokenizer.json")).unwrap();
    let endpoint = serve(vec![
        ("openai/clip-micro", fx("clip_model")),
        ("laion/convnext-micro", fx("convnext_open_clip")),
        ("lmsys/llama-micro", fx("llama")),
        ("facebook/sam-micro", fx("sam_hf")),
        ("lmsys/tokenizer", tok_repo),
    ]);
    let cache = t.join("cache");
    let hub = hub_opts(&cache, false, Some(endpoint));
    let get = |s: &str| resolve(Path::new(s), &hub).unwrap();
    let mut o = options(&t.join("out"), &SET_A, GlueSource::Fresh { seed: 4 });
    o.clip = vec![get("hf:openai/clip-micro")];
    o.convnext = vec![get("hf:laion/convnext-micro")];
    o.llm = vec![get("hf:lmsys/llama-micro@main")];
    o.sam = Some(vec![get("hf:facebook/sam-micro")]);
    o.tokenizer = resolve_tokenizer(Path::new("hf:lmsys/tokenizer"), &hub).unwrap();
    let r = assemble(&o).unwrap();
    assert_eq!(
        r.components.iter().map(|c| c.layout).collect::<Vec<_>>(),
        ["hf-clip", "open_clip-convnext", "hf-llama", "hf-sam"]
    );
    // Local paths pass through; cached components resolve offline; uncached ones do not.
    assert_eq!(
        resolve(Path::new("some/dir"), &hub).unwrap(),
        Path::new("some/dir")
    );
    let off = hub_opts(&cache, true, None);
    resolve(Path::new("hf:lmsys/llama-micro"), &off).unwrap();
    let e = resolve(Path::new("hf:lmsys/other"), &off).err().unwrap();
    assert!(
        matches!(&e, Error::Hub { repo, .. } if repo == "lmsys/other"),
        "{e}"
    );
}
