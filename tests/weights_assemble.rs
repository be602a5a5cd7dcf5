//! `unires assemble` on tiny checkpoints in every published layout we import
//! (tests/fixtures/gen/fixtures_weights.py): layout detection, the rename tables both ways,
//! equality of the tensors assembled from two layouts of the same weights, the SAM token
//! mapping, embedding growth, adopted configurations, sharded and dtype-converted output, and
//! the assembled checkpoints loaded and run end to end (library and CLI).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use candle_core::{DType, Device, IndexOp, Tensor};
use common::tensors::max_abs_diff;
use common::weights::*;
use common::{bin, TempDir};
use unires::model::unires::assemble::{assemble, GlueSource, SAM_TOKENS_FOR_GRANULARITY};
use unires::model::unires::load::load_dir;
use unires::weights::inputs::Input;
use unires::weights::rename::{classify, detect, layout_by_name, Component, LAYOUTS};
use unires::Granularity;
use unires::Source;

fn keys_of(rel: &str) -> Vec<String> {
    Input::open(&[fx(rel)]).unwrap().names()
}

/// (fixture, component, expected layout, keys)
fn fixture_keysets() -> Vec<(String, Component, &'static str, Vec<String>)> {
    let mut v = vec![
        ("clip_model", Component::Clip, "hf-clip"),
        ("clip_vision", Component::Clip, "hf-clip-vision"),
        (
            "convnext_open_clip",
            Component::ConvNext,
            "open_clip-convnext",
        ),
        ("convnext_hf", Component::ConvNext, "hf-convnext"),
        ("llama", Component::Llm, "hf-llama"),
        ("sam_vit_micro.pth", Component::Sam, "segment-anything"),
        ("sam_hf", Component::Sam, "hf-sam"),
    ]
    .into_iter()
    .map(|(f, c, l)| (f.to_string(), c, l, keys_of(f)))
    .collect::<Vec<_>>();
    // Derived key sets for the layouts that share a table: bare timm (open_clip's trunk
    // without the prefix, plus timm's classifier head) and HF's image-classification
    // wrapper (`convnext.` prefix, `classifier.*`).
    let timm: Vec<String> = keys_of("convnext_open_clip")
        .into_iter()
        .filter_map(|k| k.strip_prefix("visual.trunk.").map(str::to_string))
        .chain(["head.fc.weight".to_string(), "head.fc.bias".to_string()])
        .collect();
    v.push((
        "timm (derived)".into(),
        Component::ConvNext,
        "timm-convnext",
        timm,
    ));
    let cls: Vec<String> = keys_of("convnext_hf")
        .into_iter()
        .map(|k| format!("convnext.{k}"))
        .chain(["classifier.weight".to_string()])
        .collect();
    v.push((
        "hf classifier (derived)".into(),
        Component::ConvNext,
        "hf-convnext-classifier",
        cls,
    ));
    v
}

#[test]
fn layouts_are_detected_and_rename_tables_round_trip() {
    let mut used: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (name, component, want, keys) in fixture_keysets() {
        let (layout, c) = detect(component, &keys).unwrap_or_else(|(l, c)| {
            panic!("{name}: no layout (closest {}: {:?})", l.name, c.unknown)
        });
        assert_eq!(layout.name, want, "{name}");
        assert!(c.unknown.is_empty() && !c.renamed.is_empty(), "{name}");
        // published -> ours -> published is the identity on every renamed key
        let mut ours_seen = BTreeSet::new();
        for (published, ours) in &c.renamed {
            assert_eq!(Component::of(ours), component, "{name}: {ours}");
            assert!(ours_seen.insert(ours.clone()), "{name}: {ours} twice");
            assert_eq!(
                layout.to_published(ours).as_deref(),
                Some(published.as_str()),
                "{name}: {published} -> {ours} -> back"
            );
        }
        used.entry(layout.name)
            .or_default()
            .extend(layout.rules_used(keys.iter().map(String::as_str)));
    }
    // Every rule of every published layout is exercised by some fixture key.
    for l in LAYOUTS.iter().filter(|l| l.component != Component::Glue) {
        let u = used.get(l.name).cloned().unwrap_or_default();
        let unused: Vec<&str> = (0..l.rules.len())
            .filter(|i| !u.contains(i))
            .map(|i| l.rules[i].0)
            .collect();
        assert!(
            unused.is_empty(),
            "{}: rules never used: {unused:?}",
            l.name
        );
    }
    // A layout is not fooled by another component's checkpoint.
    assert!(detect(Component::Clip, &keys_of("llama")).is_err());
    assert!(detect(Component::Sam, &keys_of("convnext_hf")).is_err());
}

#[test]
fn glue_table_round_trips_on_an_assembled_checkpoint() {
    let t = TempDir::new("glue-rt");
    assemble_a(t.path());
    let keys: Vec<String> = read_all(t.path()).into_keys().collect();
    let glue = layout_by_name("unires-glue").unwrap();
    let c = classify(glue, &keys);
    assert!(!c.renamed.is_empty());
    for (p, o) in &c.renamed {
        assert_eq!(p, o);
        assert_eq!(glue.to_published(o).as_deref(), Some(p.as_str()));
    }
    for k in &c.unknown {
        assert!(
            matches!(
                Component::of(k),
                Component::Clip | Component::ConvNext | Component::Llm
            ),
            "{k}"
        );
    }
}

#[test]
fn two_layouts_of_the_same_weights_assemble_to_the_same_checkpoint() {
    let a = TempDir::new("set-a");
    let b = TempDir::new("set-b");
    let ra = assemble_a(a.path());
    assert_eq!(
        ra.components.iter().map(|c| c.layout).collect::<Vec<_>>(),
        [
            "hf-clip",
            "open_clip-convnext",
            "hf-llama",
            "segment-anything"
        ]
    );
    assert!(ra.fresh_tensors > 0 && !ra.warnings.is_empty());
    // Set B takes its glue from set A's checkpoint (a unires directory as the glue file).
    let rb = assemble(&options(
        b.path(),
        &SET_B,
        GlueSource::File(a.join("model.safetensors")),
    ))
    .unwrap();
    assert_eq!(
        rb.components.iter().map(|c| c.layout).collect::<Vec<_>>(),
        [
            "hf-clip-vision",
            "hf-convnext",
            "hf-llama",
            "hf-sam",
            "unires-glue"
        ]
    );
    assert_eq!(rb.fresh_tensors, 0);
    // The glue file's CLIP/ConvNeXt/LLM tensors and its decoder (SAM given) are ignored.
    assert!(rb.ignored_glue > 0);
    let ta = read_all(a.path());
    let tb = read_all(b.path());
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (k, x) in &ta {
        assert_eq!(x.dims(), tb[k].dims(), "{k}");
        assert_eq!(max_abs_diff(x, &tb[k]), 0.0, "{k} differs between layouts");
    }
    assert_eq!(
        std::fs::read_to_string(a.join("config.json")).unwrap(),
        std::fs::read_to_string(b.join("config.json")).unwrap()
    );
}

#[test]
fn sam_tokens_embedding_rows_and_configs() {
    let t = TempDir::new("details");
    let r = assemble_a(t.path());
    let out = read_all(t.path());
    let hf_sam =
        candle_core::safetensors::load(fx("sam_hf/model.safetensors"), &Device::Cpu).unwrap();

    // SAM's multimask tokens 1..3 become ours 0..2, with their hypernetworks and IoU rows.
    let idx = Tensor::new(
        SAM_TOKENS_FOR_GRANULARITY
            .iter()
            .map(|&i| i as u32)
            .collect::<Vec<_>>()
            .as_slice(),
        &Device::Cpu,
    )
    .unwrap();
    for name in [
        "mask_decoder.mask_tokens.weight",
        "mask_decoder.iou_prediction_head.proj_out.weight",
        "mask_decoder.iou_prediction_head.proj_out.bias",
    ] {
        let want = hf_sam[name].index_select(&idx, 0).unwrap();
        assert_eq!(max_abs_diff(&out[name], &want), 0.0, "{name}");
    }
    for (ours, &sam) in SAM_TOKENS_FOR_GRANULARITY.iter().enumerate() {
        for w in ["proj_in.weight", "layers.0.bias", "proj_out.weight"] {
            let a = &out[&format!("mask_decoder.output_hypernetworks_mlps.{ours}.{w}")];
            let b = &hf_sam[&format!("mask_decoder.output_hypernetworks_mlps.{sam}.{w}")];
            assert_eq!(max_abs_diff(a, b), 0.0);
        }
    }
    assert!(!out.contains_key("mask_decoder.output_hypernetworks_mlps.3.proj_in.weight"));
    // The tied positional embedding comes from shared_image_embedding.
    assert_eq!(
        max_abs_diff(
            &out["prompt_encoder.shared_embedding.positional_embedding"],
            &hf_sam["shared_image_embedding.positional_embedding"]
        ),
        0.0
    );

    // Tokenizer: 29 ids + 7 special tokens -> 36 ids; the LLM had 32 rows -> 36.
    assert_eq!(r.added_tokens.len(), 7);
    assert_eq!(r.vocab_rows, (32, 36));
    let llama = unires::weights::inputs::Input::open(&[fx("llama")]).unwrap();
    let old = llama.load("model.embed_tokens.weight").unwrap();
    let new = &out["llm.model.embed_tokens.weight"];
    assert_eq!(new.dims(), &[36, 16]);
    assert_eq!(max_abs_diff(&new.narrow(0, 0, 32).unwrap(), &old), 0.0);
    let mean = old.mean_keepdim(0).unwrap();
    for row in 32..36 {
        let d = max_abs_diff(&new.i(row..row + 1).unwrap(), &mean);
        assert!(d < 1e-6, "new row {row} is the mean of the old rows ({d})");
    }
    assert_eq!(out["llm.lm_head.weight"].dims(), &[36, 16]);

    // Component configurations were adopted: CLIP/LLaMA/SAM from config.json, ConvNeXt
    // from the tensors.
    let cfg = unires::UniResConfig::from_file(&t.join("config.json")).unwrap();
    let micro = micro_config();
    assert_eq!(cfg.vision.clip, micro.vision.clip);
    assert_eq!(cfg.hires.convnext.hidden_sizes, vec![8, 12, 16, 24]);
    assert_eq!(cfg.hires.convnext.depths, vec![1, 1, 2, 1]);
    assert_eq!(cfg.llm.vocab_size, 36);
    assert_eq!(cfg.llm.num_key_value_heads, Some(1));
    assert_eq!(cfg.decoder.sam.num_multimask_outputs, 2);
    let by: BTreeMap<Component, &str> = r
        .components
        .iter()
        .map(|c| (c.component, c.config_from.as_str()))
        .collect();
    assert!(by[&Component::Clip].ends_with("clip_model/config.json"));
    assert_eq!(by[&Component::ConvNext], "its tensors");
    // Dropped parts are reported: CLIP's text tower, open_clip's text tower and head, SAM's
    // image encoder and the single-mask token.
    for c in &r.components {
        if c.component != Component::Llm {
            assert!(c.dropped > 0, "{:?} dropped nothing", c.component);
        }
    }
}

#[test]
fn fresh_glue_matches_train_fresh_model() {
    // The same seed gives the same glue values as `train::fresh_model` (same initialiser).
    let t = TempDir::new("fresh");
    assemble_a(t.path());
    let out = read_all(t.path());
    let c = unires::model::unires::load::check_dir(t.path()).unwrap();
    let (_, vars) = unires::train::fresh_model(&c.config, c.prompt.clone(), 5, DType::F32).unwrap();
    let data = vars.data().lock().unwrap();
    for name in [
        "mm_projector.0.weight",
        "target_head.2.bias",
        "neck.conv1.weight",
    ] {
        assert_eq!(
            max_abs_diff(&out[name], data[name].as_tensor()),
            0.0,
            "{name}"
        );
    }
}

#[test]
fn assembled_checkpoints_load_and_segment_in_every_dtype_and_sharding() {
    let t = TempDir::new("run");
    let mut opts = options(t.path(), &SET_A, GlueSource::Fresh { seed: 9 });
    opts.max_shard_bytes = 40_000;
    opts.dtype = Some(DType::BF16);
    let r = assemble(&opts).unwrap();
    let shards = r
        .files
        .iter()
        .filter(|p| p.to_string_lossy().contains("-of-"))
        .count();
    assert!(shards >= 2, "small shards: {:?}", r.files);
    assert!(t.join("model.safetensors.index.json").exists());
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let m = load_dir(t.path(), &Device::Cpu, dtype).unwrap();
        assert_eq!(m.dtype(), dtype);
        let enc = m.encode(&image(), &proposals()).unwrap();
        for g in [Granularity::Part, Granularity::Auto] {
            let s = m.segment(&enc, "the red mug", g).unwrap();
            assert_eq!((s.mask.height(), s.mask.width()), (36, 48));
            assert!(s.score.is_finite());
        }
    }
    let m = unires::model::unires::load::load(
        &Source::Dir(t.path().to_path_buf()),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    assert_eq!(m.config().llm.vocab_size, 36);
}

#[test]
fn cli_assembles_each_layout_set_and_segments() {
    let t = TempDir::new("cli");
    let cfg = t.join("micro.json");
    std::fs::write(&cfg, micro_config().to_json_string()).unwrap();
    image().save(t.join("img.png")).unwrap();
    std::fs::write(
        t.join("boxes.json"),
        r#"{"objects": [[2, 3, 20, 30], [24, 4, 46, 34]], "parts": [[4, 5, 12, 14]]}"#,
    )
    .unwrap();
    for (tag, set, extra) in [
        ("a", &SET_A, vec!["--fresh-glue", "--seed", "3"]),
        ("b", &SET_B, vec!["--fresh-glue", "--dtype", "f16"]),
    ] {
        let out = t.join(&format!("ckpt-{tag}"));
        let o = bin()
            .arg("assemble")
            .arg("--out")
            .arg(&out)
            .arg("--config")
            .arg(&cfg)
            .arg("--clip")
            .arg(fx(set.clip))
            .arg("--convnext")
            .arg(fx(set.convnext))
            .arg("--llm")
            .arg(format!(
                "{},{}",
                fx("llama/model-00001-of-00002.safetensors").display(),
                fx("llama/model-00002-of-00002.safetensors").display()
            ))
            .arg("--sam")
            .arg(fx(set.sam))
            .arg("--tokenizer")
            .arg(fx("tokenizer.json"))
            .args(&extra)
            .arg("--quiet")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "assemble {tag}: {err}");
        assert!(
            err.contains("WARNING") && err.contains("meaningless"),
            "{err}"
        );
        let mask = t.join(&format!("mask-{tag}.png"));
        let json = t.join(&format!("mask-{tag}.json"));
        let o = bin()
            .arg("segment")
            .arg("--weights")
            .arg(&out)
            .arg("--image")
            .arg(t.join("img.png"))
            .arg("--boxes")
            .arg(t.join("boxes.json"))
            .args([
                "--expression",
                "the handle of the red mug",
                "--granularity",
                "part",
            ])
            .arg("--out")
            .arg(&mask)
            .arg("--json")
            .arg(&json)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "segment {tag}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let img = image::open(&mask).unwrap();
        assert_eq!((img.width(), img.height()), (48, 36));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["granularity"], "part");
    }
}

#[test]
fn derived_convnext_layouts_assemble_identically() {
    // Bare timm (open_clip's trunk without its prefix, plus a classifier head) and HF's
    // image-classification wrapper (`convnext.` prefix, `classifier.*`), written from the
    // fixtures, assemble to the same tensors as the open_clip file.
    let t = TempDir::new("derived");
    let open_clip = candle_core::safetensors::load(
        fx("convnext_open_clip/open_clip_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let mut timm: std::collections::HashMap<String, Tensor> = open_clip
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("visual.trunk.")
                .map(|k| (k.to_string(), v.clone()))
        })
        .collect();
    timm.insert(
        "head.fc.weight".into(),
        Tensor::zeros((10, 24), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&timm, t.join("timm.safetensors")).unwrap();
    let hf =
        candle_core::safetensors::load(fx("convnext_hf/model.safetensors"), &Device::Cpu).unwrap();
    let mut cls: std::collections::HashMap<String, Tensor> = hf
        .iter()
        .map(|(k, v)| (format!("convnext.{k}"), v.clone()))
        .collect();
    cls.insert(
        "classifier.bias".into(),
        Tensor::zeros(10, DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&cls, t.join("cls.safetensors")).unwrap();

    let base = TempDir::new("derived-base");
    assemble_a(base.path());
    let want = read_all(base.path());
    for (tag, file, layout) in [
        ("timm", "timm.safetensors", "timm-convnext"),
        ("cls", "cls.safetensors", "hf-convnext-classifier"),
    ] {
        let out = t.join(tag);
        let mut o = options(&out, &SET_A, GlueSource::Fresh { seed: 5 });
        o.convnext = vec![t.join(file)];
        let r = assemble(&o).unwrap();
        assert_eq!(r.components[1].layout, layout);
        let got = read_all(&out);
        assert_eq!(got.len(), want.len());
        for (k, v) in &want {
            assert_eq!(max_abs_diff(v, &got[k]), 0.0, "{tag}: {k}");
        }
    }
}
