//! Seeded initialisation: a `VarBuilder` backend whose fresh variables depend only on a seed
//! and their checkpoint name, so that a fresh model (training from scratch, the untrained
//! glue of an assembled checkpoint, tests) is the same on every machine and in every build.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::rng::SplitMix64;

/// HF's `initializer_range` default, the std of fresh embedding tables.
pub const INIT_STD: f64 = 0.02;

fn name_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a over the name, mixed with the seed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A `VarBuilder` backend that creates variables in a [`VarMap`] from the init hints with a
/// PRNG seeded by `(seed, name)`, so a fresh model is identical for a seed whatever the
/// creation order (candle's CPU RNG cannot be seeded).
///
/// Hints asking for all zeros on a matrix (`VarBuilder::get` without a hint) become
/// N(0, 0.02²); ConvNeXt layer scales start at 0.1.
pub struct SeededVarMap {
    pub varmap: VarMap,
    seed: u64,
}

impl SeededVarMap {
    pub fn new(varmap: VarMap, seed: u64) -> Self {
        Self { varmap, seed }
    }

    fn values(&self, shape: &candle_core::Shape, name: &str, init: candle_nn::Init) -> Vec<f32> {
        use candle_nn::init::{FanInOut, NormalOrUniform};
        let n = shape.elem_count();
        let mut rng = SplitMix64::new(name_seed(self.seed, name));
        let normal = |rng: &mut SplitMix64, m: f64, s: f64| -> Vec<f32> {
            (0..n).map(|_| (m + s * rng.normal_f64()) as f32).collect()
        };
        let uniform = |rng: &mut SplitMix64, lo: f64, up: f64| -> Vec<f32> {
            (0..n)
                .map(|_| (lo + (up - lo) * rng.unit_f64()) as f32)
                .collect()
        };
        match init {
            _ if name.ends_with("layer_scale_parameter") => vec![0.1; n],
            candle_nn::Init::Const(c) if c == 0.0 && shape.rank() >= 2 => {
                normal(&mut rng, 0.0, 0.02)
            }
            candle_nn::Init::Const(c) => vec![c as f32; n],
            candle_nn::Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev),
            candle_nn::Init::Uniform { lo, up } => uniform(&mut rng, lo, up),
            candle_nn::Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let fan = match fan {
                    FanInOut::FanIn => fan.for_shape(shape),
                    FanInOut::FanOut => fan.for_shape(shape),
                };
                let std = non_linearity.gain() / (fan.max(1) as f64).sqrt();
                match dist {
                    NormalOrUniform::Uniform => {
                        let b = 3f64.sqrt() * std;
                        uniform(&mut rng, -b, b)
                    }
                    NormalOrUniform::Normal => normal(&mut rng, 0.0, std),
                }
            }
        }
    }
}

impl candle_nn::var_builder::SimpleBackend for SeededVarMap {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned var map".into()))?;
        if let Some(v) = data.get(name) {
            let t = v.as_tensor();
            if t.shape() != &s {
                return Err(candle_core::Error::Msg(format!(
                    "{name}: shape {:?} requested, {:?} exists",
                    s,
                    t.shape()
                )));
            }
            return Ok(t.clone());
        }
        let vals = self.values(&s, name, h);
        let t = Tensor::from_vec(vals, s, dev)?.to_dtype(dtype)?;
        let v = Var::from_tensor(&t)?;
        let t = v.as_tensor().clone();
        data.insert(name.to_string(), v);
        Ok(t)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        Err(candle_core::Error::Msg(format!(
            "{name}: a fresh model has no tensor to read unchecked"
        )))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}
