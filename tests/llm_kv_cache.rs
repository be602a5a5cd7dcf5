//! The LLaMA decoder's KV cache, causal masking, `logits_for` and training path, checked
//! against the model's own one-pass results (HF parity is in `tests/parity`).

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::tensors::max_abs_diff;
use unires::config::{LlamaConfig, RopeScaling};
use unires::model::llm::{KvCache, Llama};

type Res = std::result::Result<(), Box<dyn std::error::Error>>;

/// GQA 4:2 with a head_dim override and Llama-3 scaling, so every RoPE branch is in play.
fn gqa_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 37,
        hidden_size: 32,
        intermediate_size: 56,
        num_hidden_layers: 3,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        head_dim: Some(12),
        max_position_embeddings: 64,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_scaling: Some(RopeScaling {
            rope_type: "llama3".into(),
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 32,
        }),
        ..LlamaConfig::default()
    }
}

/// A model on fresh random variables, and the same weights as plain (non-tracking) tensors.
fn models(
    cfg: &LlamaConfig,
) -> std::result::Result<(VarMap, Llama, Llama), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let train = Llama::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    // Norm weights start at 1; perturb everything so that no parameter is trivially neutral.
    for var in varmap.data().lock().map_err(|e| e.to_string())?.values() {
        let t = var.as_tensor();
        let noise = Tensor::randn(0f32, 0.1, t.shape(), &dev)?;
        var.set(&(t + noise)?)?;
    }
    let frozen: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    let infer = Llama::new(cfg, VarBuilder::from_tensors(frozen, DType::F32, &dev))?;
    Ok((varmap, train, infer))
}

#[test]
fn appending_after_prefill_equals_one_long_pass() -> Res {
    let cfg = gqa_config();
    let (_vm, _train, model) = models(&cfg)?;
    let (s, total) = (9, 12);
    let x = Tensor::randn(0f32, 1.0, (2, total, cfg.hidden_size), &Device::Cpu)?;
    let full = model.forward(&x, &mut model.new_cache())?;

    let mut cache = KvCache::new(model.num_layers());
    let a = model.forward(&x.narrow(1, 0, s)?, &mut cache)?;
    assert_eq!(cache.len(), s);
    let b = model.forward(&x.narrow(1, s, 1)?, &mut cache)?;
    assert_eq!(cache.len(), s + 1);
    let c = model.forward(&x.narrow(1, s + 1, 2)?, &mut cache)?;
    assert_eq!(cache.len(), total);
    let stepped = Tensor::cat(&[&a, &b, &c], 1)?;
    let d = max_abs_diff(&stepped, &full);
    assert!(d < 1e-5, "prefill + 1 + 2 vs one pass: max |diff| = {d}");

    // Truncating back to the prefill and appending again gives the same states.
    cache.truncate(s)?;
    assert_eq!(cache.len(), s);
    let again = model.forward(&x.narrow(1, s, 3)?, &mut cache)?;
    let d = max_abs_diff(&again, &full.narrow(1, s, 3)?);
    assert!(d < 1e-5, "after truncate: max |diff| = {d}");

    cache.clear();
    assert!(cache.is_empty());
    Ok(())
}

#[test]
fn right_padding_does_not_change_real_positions() -> Res {
    let cfg = gqa_config();
    let (_vm, _train, model) = models(&cfg)?;
    let dev = Device::Cpu;
    let long = Tensor::randn(0f32, 1.0, (1, 8, cfg.hidden_size), &dev)?;
    let short = Tensor::randn(0f32, 1.0, (1, 5, cfg.hidden_size), &dev)?;
    let pad = Tensor::randn(0f32, 3.0, (1, 3, cfg.hidden_size), &dev)?;
    let batch = Tensor::cat(&[&long, &Tensor::cat(&[&short, &pad], 1)?], 0)?;
    let both = model.forward(&batch, &mut model.new_cache())?;
    let alone_long = model.forward(&long, &mut model.new_cache())?;
    let alone_short = model.forward(&short, &mut model.new_cache())?;
    let d1 = max_abs_diff(&both.narrow(0, 0, 1)?, &alone_long);
    let d2 = max_abs_diff(&both.narrow(0, 1, 1)?.narrow(1, 0, 5)?, &alone_short);
    assert!(d1 < 1e-5 && d2 < 1e-5, "padded batch vs alone: {d1}, {d2}");
    Ok(())
}

#[test]
fn logits_for_equals_the_selected_columns_of_logits() -> Res {
    let cfg = gqa_config();
    let (_vm, _train, model) = models(&cfg)?;
    let x = Tensor::randn(0f32, 1.0, (2, 3, cfg.hidden_size), &Device::Cpu)?;
    let h = model.forward(&x, &mut model.new_cache())?;
    let all = model.logits(&h)?;
    assert_eq!(all.dims(), &[2, 3, cfg.vocab_size]);
    let ids = [36u32, 0, 7];
    let some = model.logits_for(&h, &ids)?;
    for (j, &id) in ids.iter().enumerate() {
        let d = max_abs_diff(&some.narrow(2, j, 1)?, &all.narrow(2, id as usize, 1)?);
        assert!(d < 1e-5, "column {j} (token {id}): {d}");
    }
    assert!(model.logits_for(&h, &[cfg.vocab_size as u32]).is_err());
    Ok(())
}

#[test]
fn context_overflow_is_a_typed_error_and_keeps_the_cache() -> Res {
    let cfg = gqa_config();
    let (_vm, _train, model) = models(&cfg)?;
    let dev = Device::Cpu;
    let mut cache = model.new_cache();
    model.forward(
        &Tensor::zeros((1, 60, cfg.hidden_size), DType::F32, &dev)?,
        &mut cache,
    )?;
    let err = model
        .forward(
            &Tensor::zeros((1, 5, cfg.hidden_size), DType::F32, &dev)?,
            &mut cache,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            unires::Error::PromptTooLong {
                tokens: 65,
                max: 64
            }
        ),
        "{err}"
    );
    assert_eq!(cache.len(), 60);
    Ok(())
}

#[test]
fn training_path_matches_inference_and_reaches_every_parameter() -> Res {
    let cfg = gqa_config();
    let (varmap, train, infer) = models(&cfg)?;
    let dev = Device::Cpu;
    let ids = Tensor::new(&[[1u32, 5, 9, 36, 2], [0, 3, 3, 8, 4]], &dev)?;
    let x = train.embed(&ids)?;
    let h_train = train.forward(&x, &mut train.new_cache())?;
    let h_infer = infer.forward(&infer.embed(&ids)?, &mut infer.new_cache())?;
    let d = max_abs_diff(&h_train, &h_infer);
    assert!(
        d < 1e-4,
        "composed (training) vs fused (inference) path: {d}"
    );

    let target = Tensor::randn(0f32, 1.0, (2, 5, cfg.vocab_size), &dev)?;
    let loss = (train.logits(&h_train)? * target)?.sum_all()?;
    let grads = loss.backward()?;
    let data = varmap.data().lock().map_err(|e| e.to_string())?;
    assert!(
        data.contains_key("lm_head.weight"),
        "a fresh VarMap follows tie_word_embeddings=false"
    );
    for (name, var) in data.iter() {
        let g = grads
            .get(var.as_tensor())
            .ok_or_else(|| format!("no gradient for {name}"))?;
        let n = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
        assert!(n.is_finite() && n > 0.0, "{name}: |grad|² = {n}");
    }
    assert!(!data.is_empty());
    Ok(())
}
