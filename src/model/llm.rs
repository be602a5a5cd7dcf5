//! LLaMA-family decoder over `inputs_embeds` with a KV cache, HF `LlamaForCausalLM`
//! semantics (transformers `modeling_llama.py`, `modeling_rope_utils.py`).
//!
//! Facts about the reference that this file reproduces:
//! * `hidden_states` (with `output_hidden_states=True`) has `num_hidden_layers + 1` entries:
//!   the input embeddings, the outputs of layers `1..N−1`, and — replacing the raw output of
//!   layer `N` — the **final-norm** output (`last_hidden_state`).
//! * RoPE is the "rotate half" form: `q·cos + rotate_half(q)·sin` with the frequency table
//!   `[f, f]` over the head dim, `inv_freq_i = 1 / θ^(2i/d)` computed in f32, `d` the head dim
//!   (`head_dim` overrides `hidden_size / num_attention_heads`). Positions continue from
//!   the cache length.
//! * Llama-3 scaling (`rope_type = "llama3"`): wavelengths `2π / inv_freq` longer than
//!   `original_max_position_embeddings / low_freq_factor` are divided by `factor`, shorter
//!   than `… / high_freq_factor` kept, and in between blended with
//!   `s = (original_max / wavelen − low) / (high − low)`: `(1 − s)·f/factor + s·f`.
//!   The attention scaling factor is 1 for both rope types.
//! * RMSNorm is computed in f32 and cast back before the weight multiply; RoPE here and the
//!   attention softmax are computed in f32 when the model runs in bf16/f16.
//! * `lm_head` is tied to `model.embed_tokens` when `tie_word_embeddings` is set, or when the
//!   checkpoint holds `model.embed_tokens.weight` but no `lm_head.weight` (what
//!   `save_pretrained` writes for a tied model). A fresh `VarMap` (neither tensor present)
//!   follows the config.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;

use crate::config::{Activation, LlamaConfig, Quantization};
use crate::error::{Error, Result};
use crate::model::init::INIT_STD;
use crate::model::nn::{activation, attention_f32, Linear, RmsNorm};
use crate::ops::attention::AttnMask;

/// Per-layer keys and values of the positions seen so far.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// `(k, v)` per layer, each `(B, Hkv, S, head_dim)`.
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            len: 0,
        }
    }

    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every cached position.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.len = 0;
    }

    /// Keeps only the first `len` positions (e.g. a shared prompt prefix); no-op when the
    /// cache is not longer.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        for slot in self.layers.iter_mut() {
            *slot = match slot.take() {
                Some((k, v)) if len > 0 => Some((k.narrow(2, 0, len)?, v.narrow(2, 0, len)?)),
                _ => None,
            };
        }
        self.len = len;
        Ok(())
    }

    fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Bytes held by the cached keys and values.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }

    /// Appends `k, v` to layer `i` and returns the full keys and values.
    fn append(&mut self, i: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let slot = self
            .layers
            .get_mut(i)
            .ok_or_else(|| Error::shape("KvCache", format!("no layer {i}")))?;
        let (k, v) = match slot.take() {
            None => (k, v),
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
        };
        *slot = Some((k.clone(), v.clone()));
        Ok((k, v))
    }
}

/// What [`Llama::quantize`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantReport {
    pub format: Quantization,
    /// Linear layers quantised.
    pub layers: usize,
    /// Their weights' bytes before and after.
    pub bytes_before: usize,
    pub bytes_after: usize,
}

/// What [`Llama::forward_hidden_states`] returns: HF's `hidden_states` tuple and
/// `last_hidden_state`.
#[derive(Debug, Clone)]
pub struct LlamaOutput {
    /// `num_hidden_layers + 1` tensors `(B, S, H)`; the last one is the final-norm output.
    pub hidden_states: Vec<Tensor>,
    /// Final-norm output `(B, S, H)`.
    pub last_hidden_state: Tensor,
}

/// Rotary position embedding: the inverse frequencies as HF computes them.
#[derive(Debug, Clone)]
struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    fn new(cfg: &LlamaConfig) -> Result<Self> {
        let dim = cfg.head_dim();
        let base = cfg.rope_theta;
        // HF: 1 / base^(arange(0, d, 2) / d), all in f32.
        let mut inv_freq: Vec<f32> = (0..dim / 2)
            .map(|i| {
                let e = (2 * i) as f32 / dim as f32;
                1.0 / (base as f32).powf(e)
            })
            .collect();
        if let Some(s) = &cfg.rope_scaling {
            match s.rope_type.as_str() {
                "default" => {}
                "llama3" => {
                    let old = s.original_max_position_embeddings as f64;
                    let low_wavelen = old / s.low_freq_factor;
                    let high_wavelen = old / s.high_freq_factor;
                    for f in inv_freq.iter_mut() {
                        let fr = *f as f64;
                        let wavelen = 2.0 * std::f64::consts::PI / fr;
                        let scaled = if wavelen > low_wavelen {
                            fr / s.factor
                        } else {
                            fr
                        };
                        let medium = (high_wavelen..=low_wavelen).contains(&wavelen);
                        let out = if medium {
                            let smooth = (old / wavelen - s.low_freq_factor)
                                / (s.high_freq_factor - s.low_freq_factor);
                            (1.0 - smooth) * scaled / s.factor + smooth * scaled
                        } else {
                            scaled
                        };
                        *f = out as f32;
                    }
                }
                other => {
                    return Err(Error::Config {
                        what: "llm.rope_scaling".into(),
                        reason: format!(
                            "rope_type {other:?} is not supported (supported: default, llama3)"
                        ),
                    })
                }
            }
        }
        Ok(Self { inv_freq })
    }

    /// `cos`, `sin` tables `(S, head_dim / 2)` in f32 for positions `start..start + len`.
    fn tables(&self, start: usize, len: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in start..start + len {
            for &f in &self.inv_freq {
                // The product is rounded to f32 as in HF; cos/sin of that value.
                let a = (p as f32 * f) as f64;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        Ok((
            Tensor::from_vec(cos, (len, half), dev)?,
            Tensor::from_vec(sin, (len, half), dev)?,
        ))
    }
}

/// Applies RoPE to `x: (B, H, S, D)` in f32 and casts back to `x`'s dtype.
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let y = if xf.track_op() {
        let half = cos.dim(1)?;
        let x1 = xf.narrow(D::Minus1, 0, half)?;
        let x2 = xf.narrow(D::Minus1, half, half)?;
        let y1 = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
        let y2 = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
        Tensor::cat(&[&y1, &y2], D::Minus1)?
    } else {
        candle_nn::rotary_emb::rope(&xf.contiguous()?, cos, sin)?
    };
    Ok(y.to_dtype(dtype)?)
}

#[derive(Debug, Clone)]
struct LlamaAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl LlamaAttention {
    fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (h, hd, nh, nkv) = (
            cfg.hidden_size,
            cfg.head_dim(),
            cfg.num_attention_heads,
            cfg.kv_heads(),
        );
        let bias = cfg.attention_bias;
        Ok(Self {
            q_proj: Linear::new(h, nh * hd, bias, vb.pp("q_proj"))?,
            k_proj: Linear::new(h, nkv * hd, bias, vb.pp("k_proj"))?,
            v_proj: Linear::new(h, nkv * hd, bias, vb.pp("v_proj"))?,
            o_proj: Linear::new(nh * hd, h, bias, vb.pp("o_proj"))?,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cache: &mut KvCache,
        layer: usize,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let heads = |t: Tensor, n: usize| -> Result<Tensor> {
            Ok(t.reshape((b, s, n, self.head_dim))?.transpose(1, 2)?)
        };
        let q = heads(self.q_proj.forward(x)?, self.num_heads)?;
        let k = heads(self.k_proj.forward(x)?, self.num_kv_heads)?;
        let v = heads(self.v_proj.forward(x)?, self.num_kv_heads)?.contiguous()?;
        let q = apply_rope(&q, cos, sin)?;
        let k = apply_rope(&k, cos, sin)?;
        let (k, v) = cache.append(layer, k, v)?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let mask = mask.map_or(AttnMask::Causal, AttnMask::Additive);
        let o = attention_f32(&q, &k, &v, mask, scale)?;
        let o = o
            .transpose(1, 2)?
            .reshape((b, s, self.num_heads * self.head_dim))?;
        self.o_proj.forward(&o)
    }
}

#[derive(Debug, Clone)]
struct LlamaMlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    act: Activation,
}

impl LlamaMlp {
    fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i, bias) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Ok(Self {
            gate_proj: Linear::new(h, i, bias, vb.pp("gate_proj"))?,
            up_proj: Linear::new(h, i, bias, vb.pp("up_proj"))?,
            down_proj: Linear::new(i, h, bias, vb.pp("down_proj"))?,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = activation(&self.gate_proj.forward(x)?, self.act)?;
        self.down_proj.forward(&(g * self.up_proj.forward(x)?)?)
    }
}

#[derive(Debug, Clone)]
struct LlamaDecoderLayer {
    self_attn: LlamaAttention,
    mlp: LlamaMlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl LlamaDecoderLayer {
    fn linears(&self) -> [(&'static str, &Linear); 7] {
        let (a, m) = (&self.self_attn, &self.mlp);
        [
            ("q_proj", &a.q_proj),
            ("k_proj", &a.k_proj),
            ("v_proj", &a.v_proj),
            ("o_proj", &a.o_proj),
            ("gate_proj", &m.gate_proj),
            ("up_proj", &m.up_proj),
            ("down_proj", &m.down_proj),
        ]
    }

    fn linears_mut(&mut self) -> [(&'static str, &mut Linear); 7] {
        let (a, m) = (&mut self.self_attn, &mut self.mlp);
        [
            ("q_proj", &mut a.q_proj),
            ("k_proj", &mut a.k_proj),
            ("v_proj", &mut a.v_proj),
            ("o_proj", &mut a.o_proj),
            ("gate_proj", &mut m.gate_proj),
            ("up_proj", &mut m.up_proj),
            ("down_proj", &mut m.down_proj),
        ]
    }

    fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            self_attn: LlamaAttention::new(cfg, vb.pp("self_attn"))?,
            mlp: LlamaMlp::new(cfg, vb.pp("mlp"))?,
            input_layernorm: RmsNorm::new(h, eps, vb.pp("input_layernorm"))?,
            post_attention_layernorm: RmsNorm::new(h, eps, vb.pp("post_attention_layernorm"))?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cache: &mut KvCache,
        layer: usize,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let a = self.self_attn.forward(
            &self.input_layernorm.forward(x)?,
            cos,
            sin,
            cache,
            layer,
            mask,
        )?;
        let x = (x + a)?;
        let m = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&x)?)?;
        Ok((x + m)?)
    }
}

/// HF `LlamaForCausalLM`: token embeddings, decoder layers, final norm and `lm_head`.
#[derive(Debug, Clone)]
pub struct Llama {
    embed_tokens: candle_nn::Embedding,
    layers: Vec<LlamaDecoderLayer>,
    norm: RmsNorm,
    /// `(vocab, hidden)`; the embedding matrix itself when tied.
    lm_head: Tensor,
    rope: Rope,
    hidden_size: usize,
    max_positions: usize,
}

impl Llama {
    /// `vb` sits at HF `LlamaForCausalLM`'s root (`model.embed_tokens`, `model.layers.N.*`,
    /// `model.norm`, `lm_head`).
    pub fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let nkv = cfg.kv_heads();
        if cfg.num_attention_heads == 0 || nkv == 0 || cfg.num_attention_heads % nkv != 0 {
            return Err(Error::Config {
                what: "LlamaConfig".into(),
                reason: format!(
                    "num_attention_heads {} is not a positive multiple of num_key_value_heads {nkv}",
                    cfg.num_attention_heads
                ),
            });
        }
        if cfg.head_dim() % 2 != 0 {
            return Err(Error::Config {
                what: "LlamaConfig".into(),
                reason: format!("head_dim {} must be even for RoPE", cfg.head_dim()),
            });
        }
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let vm = vb.pp("model");
        let had_embeddings = vm.contains_tensor("embed_tokens.weight");
        let embed = vm.pp("embed_tokens").get_with_hints(
            (v, h),
            "weight",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: INIT_STD,
            },
        )?;
        let embed_tokens = candle_nn::Embedding::new(embed.clone(), h);
        let vl = vm.pp("layers");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| LlamaDecoderLayer::new(cfg, vl.pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(h, cfg.rms_norm_eps, vm.pp("norm"))?;
        let tied =
            cfg.tie_word_embeddings || (had_embeddings && !vb.contains_tensor("lm_head.weight"));
        let lm_head = if tied {
            embed
        } else {
            vb.pp("lm_head").get_with_hints(
                (v, h),
                "weight",
                candle_nn::init::DEFAULT_KAIMING_NORMAL,
            )?
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope: Rope::new(cfg)?,
            hidden_size: h,
            max_positions: cfg.max_position_embeddings,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Quantises the weights of every decoder layer's linear maps (attention q/k/v/o and the
    /// MLP) to `format`; embeddings, norms and `lm_head` stay as they are. Hidden states keep
    /// the model's dtype. All layers are checked before any is changed.
    pub fn quantize(&mut self, format: Quantization) -> Result<QuantReport> {
        let mut report = QuantReport {
            format,
            layers: 0,
            bytes_before: 0,
            bytes_after: 0,
        };
        for (i, layer) in self.layers.iter().enumerate() {
            for (name, l) in layer.linears() {
                let in_dim = l
                    .weight()
                    .map(|w| w.dims2())
                    .transpose()?
                    .map_or(0, |d| d.1);
                if l.quantization().is_some() || in_dim % format.block_size() != 0 {
                    return Err(Error::Config {
                        what: format!("llm layer {i} {name}"),
                        reason: match l.quantization() {
                            Some(q) => format!("already quantised ({q})"),
                            None => format!(
                                "input width {in_dim} is not a multiple of {}, the block size \
                                 of {format}",
                                format.block_size()
                            ),
                        },
                    });
                }
            }
        }
        for (i, layer) in self.layers.iter_mut().enumerate() {
            for (name, l) in layer.linears_mut() {
                let (b, a) = l.quantize(format, &format!("llm layer {i} {name}"))?;
                report.layers += 1;
                report.bytes_before += b;
                report.bytes_after += a;
            }
        }
        Ok(report)
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// A cache sized for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// Token embeddings: `ids: (B, S)` integer → `(B, S, H)`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        use candle_core::Module;
        Ok(self.embed_tokens.forward(ids)?)
    }

    /// Runs the decoder over `inputs_embeds: (B, S, H)` at positions
    /// `cache.len()..cache.len() + S` with causal attention over the cached and new
    /// positions, appends the new keys/values to `cache`, and returns the final-norm hidden
    /// states of all `S` positions `(B, S, H)`.
    pub fn forward(&self, inputs_embeds: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        self.run(inputs_embeds, cache, None, None)
    }

    /// As [`Llama::forward`], with an additive attention mask in place of the causal one:
    /// `(B, 1, S, cache.len() + S)` f32 (0 = attend, −∞ = not), e.g. from [`span_mask`].
    pub fn forward_masked(
        &self,
        inputs_embeds: &Tensor,
        cache: &mut KvCache,
        mask: &Tensor,
    ) -> Result<Tensor> {
        let (b, s, _) = inputs_embeds.dims3()?;
        let want = [b, 1, s, cache.len() + s];
        if mask.dims() != want {
            return Err(Error::shape(
                "Llama::forward_masked",
                format!("mask {:?}, need {want:?}", mask.dims()),
            ));
        }
        self.run(inputs_embeds, cache, None, Some(mask))
    }

    /// As [`Llama::forward`], also returning HF's `hidden_states` tuple.
    pub fn forward_hidden_states(
        &self,
        inputs_embeds: &Tensor,
        cache: &mut KvCache,
    ) -> Result<LlamaOutput> {
        let mut hs = Vec::with_capacity(self.layers.len() + 1);
        let last = self.run(inputs_embeds, cache, Some(&mut hs), None)?;
        // HF replaces the raw output of the last layer by the final-norm output.
        hs.pop();
        hs.push(last.clone());
        Ok(LlamaOutput {
            hidden_states: hs,
            last_hidden_state: last,
        })
    }

    fn run(
        &self,
        inputs_embeds: &Tensor,
        cache: &mut KvCache,
        mut collect: Option<&mut Vec<Tensor>>,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (_b, s, h) = inputs_embeds.dims3()?;
        if h != self.hidden_size || s == 0 {
            return Err(Error::shape(
                "Llama::forward",
                format!(
                    "inputs_embeds {:?}: need (B, S ≥ 1, {})",
                    inputs_embeds.dims(),
                    self.hidden_size
                ),
            ));
        }
        if cache.num_layers() != self.layers.len() {
            return Err(Error::shape(
                "Llama::forward",
                format!(
                    "cache has {} layers, the model {}",
                    cache.num_layers(),
                    self.layers.len()
                ),
            ));
        }
        let start = cache.len();
        if start + s > self.max_positions {
            return Err(Error::PromptTooLong {
                tokens: start + s,
                max: self.max_positions,
            });
        }
        let (cos, sin) = self.rope.tables(start, s, inputs_embeds.device())?;
        let mut x = inputs_embeds.to_dtype(self.lm_head.dtype())?;
        if let Some(c) = collect.as_deref_mut() {
            c.push(x.clone());
        }
        let result = (|| -> Result<Tensor> {
            for (i, layer) in self.layers.iter().enumerate() {
                x = layer.forward(&x, &cos, &sin, cache, i, mask)?;
                if let Some(c) = collect.as_deref_mut() {
                    c.push(x.clone());
                }
            }
            self.norm.forward(&x)
        })();
        match result {
            Ok(y) => {
                cache.len = start + s;
                Ok(y)
            }
            Err(e) => {
                // A failure part-way leaves some layers longer than others: roll back.
                cache.len = cache
                    .layers
                    .iter()
                    .flatten()
                    .map(|(k, _)| k.dim(2).unwrap_or(0))
                    .max()
                    .unwrap_or(0);
                cache.truncate(start)?;
                Err(e)
            }
        }
    }

    /// Full `lm_head`: `(…, H)` → `(…, vocab)`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        matmul_rows_t(hidden, &self.lm_head)
    }

    /// Only the `token_ids` rows of `lm_head`: `(…, H)` → `(…, token_ids.len())`, column `j`
    /// being the logit of `token_ids[j]`.
    pub fn logits_for(&self, hidden: &Tensor, token_ids: &[u32]) -> Result<Tensor> {
        let vocab = self.lm_head.dim(0)?;
        if let Some(&bad) = token_ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::shape(
                "Llama::logits_for",
                format!("token id {bad} is outside the vocabulary of {vocab}"),
            ));
        }
        let ids = Tensor::new(token_ids, self.lm_head.device())?;
        let rows = self.lm_head.index_select(&ids, 0)?;
        matmul_rows_t(hidden, &rows)
    }
}

/// `x: (…, H)` times `w: (N, H)` transposed → `(…, N)`.
fn matmul_rows_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (n, h) = w.dims2()?;
    let dims = x.dims();
    if dims.last() != Some(&h) {
        return Err(Error::shape(
            "Llama::logits",
            format!("hidden {dims:?}: last dim must be {h}"),
        ));
    }
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let mut out_dims = dims[..dims.len() - 1].to_vec();
    out_dims.push(n);
    let y = x.to_dtype(w.dtype())?.reshape((rows, h))?.matmul(&w.t()?)?;
    Ok(y.reshape(out_dims)?)
}

/// The causal mask of `s` new positions after `start` cached ones, `(B, 1, s, start + s)` f32,
/// where each sequence `b` with `spans[b] = Some((lo, hi))` also lets every position in
/// `lo..=hi` attend to every other position of that range (absolute positions): a block of
/// tokens that see each other, inside a causal sequence.
pub fn span_mask(
    spans: &[Option<(usize, usize)>],
    start: usize,
    s: usize,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let k = start + s;
    let mut v = vec![f32::NEG_INFINITY; spans.len() * s * k];
    for (b, span) in spans.iter().enumerate() {
        for i in 0..s {
            let qi = start + i;
            let row = &mut v[(b * s + i) * k..(b * s + i + 1) * k];
            for (j, x) in row.iter_mut().enumerate() {
                let inside =
                    span.is_some_and(|(lo, hi)| (lo..=hi).contains(&qi) && (lo..=hi).contains(&j));
                if j <= qi || inside {
                    *x = 0.0;
                }
            }
        }
    }
    Ok(Tensor::from_vec(v, (spans.len(), 1, s, k), device)?)
}
