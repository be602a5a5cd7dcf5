//! Training the graph with candle autograd (AdamW): batches ([`batch`], through the same
//! pipeline as inference), the losses ([`loss`]), and the optimisation loop used by
//! `examples/train_synthetic.rs`.
//!
//! One step takes `B` scenes with `Q` queries each. Images are encoded once per scene; the
//! LLM sees `B·Q` right-padded sequences (prompt + granularity token + `[SEG]`, teacher
//! forcing — causal attention makes right padding harmless); the head runs on all queries.
//! Losses: per-pixel BCE + Dice on the mask of the ground-truth granularity token (positive
//! queries), cross-entropy over the three granularity tokens, BCE of the no-target head,
//! BCE of region selection against proposals matching the target (IoU ≥ 0.5), and for part
//! and object queries the cross-entropy of the competing (softmax) selection; optional
//! auxiliary attribute and position losses on the LLM states ([`AuxHeads`]).

pub mod batch;
pub mod loss;

use std::path::Path;

use candle_core::{DType, Device, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use image::RgbImage;

pub use batch::batch_loss;
pub use loss::{attribute_labels, bce_with_logits, dice_loss, mask_to_grid, select_labels};

use crate::config::UniResConfig;
use crate::error::{Error, Result};
use crate::model::init::SeededVarMap;
use crate::model::nn::Linear;
use crate::model::unires::prompt::PromptBuilder;
use crate::model::unires::UniRes;
use crate::types::{BoxXyxy, Granularity, Mask, Proposals};

/// One training query.
#[derive(Debug, Clone)]
pub struct TrainQuery {
    pub expression: String,
    /// The concrete granularity the expression asks for (also for no-target queries).
    pub granularity: Granularity,
    /// Ground-truth union mask at the image's resolution; `None` = no target.
    pub target: Option<Mask>,
    /// Boxes of the target instances (objects, or the part), original coordinates.
    pub target_boxes: Vec<BoxXyxy>,
}

/// A ground-truth box with an attribute class (e.g. class and colour of an object), for the
/// auxiliary region-attribute loss: proposals matching it (IoU ≥ 0.5, same kind) learn to
/// predict `label` from their last-layer LLM state.
#[derive(Debug, Clone)]
pub struct RegionAttribute {
    pub bbox: BoxXyxy,
    /// A part box (matched against part proposals) rather than an object box.
    pub part: bool,
    pub label: u32,
}

impl From<crate::synthetic::Sample> for TrainQuery {
    fn from(s: crate::synthetic::Sample) -> Self {
        Self {
            target_boxes: s.targets.iter().map(|t| t.bbox).collect(),
            expression: s.expression,
            granularity: s.granularity,
            target: s.mask,
        }
    }
}

/// One training scene.
#[derive(Debug, Clone)]
pub struct TrainScene {
    pub image: RgbImage,
    pub proposals: Proposals,
    pub queries: Vec<TrainQuery>,
    /// Ground-truth attributes for the auxiliary loss (empty: none).
    pub attributes: Vec<RegionAttribute>,
}

fn one() -> f64 {
    1.0
}

/// Loss weights.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct LossWeights {
    pub mask_bce: f64,
    pub mask_dice: f64,
    pub granularity: f64,
    pub target: f64,
    pub select: f64,
    /// Auxiliary region-attribute cross-entropy (needs an attribute head and
    /// [`TrainScene::attributes`]).
    #[serde(default)]
    pub attributes: f64,
    /// Auxiliary position loss (needs a position head): the sin/cos encoding of each
    /// region's box, and of the target box of single-target queries from the `[SEG]` state,
    /// regressed by one shared head (squared error).
    #[serde(default)]
    pub position: f64,
    /// Cross-entropy of the competing selection (part and object queries, when the model
    /// has `region.single_target_softmax`): the softmax mass on the matching proposals.
    #[serde(default = "one")]
    pub rank: f64,
    /// Teacher forcing of the box prompts: weight α of the ground-truth selection in the
    /// selection weights the mask decoder sees (0 = the model's own, as at inference).
    #[serde(default)]
    pub teacher_forcing: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self {
            mask_bce: 1.0,
            mask_dice: 1.0,
            granularity: 0.5,
            target: 0.5,
            select: 1.0,
            attributes: 0.0,
            position: 0.0,
            rank: 1.0,
            teacher_forcing: 0.0,
        }
    }
}

/// Scalar loss values of one step.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LossParts {
    pub total: f32,
    pub mask_bce: f32,
    pub mask_dice: f32,
    pub granularity: f32,
    pub target: f32,
    pub select: f32,
    pub attributes: f32,
    pub position: f32,
    pub rank: f32,
}

/// Frequencies of the box encoding that the position loss regresses (π, 2π, 4π: coarse
/// enough to be read from a state, fine enough to tell the boxes of one scene apart).
pub const POSITION_FREQS: usize = 3;

/// Training-only heads on last-layer LLM states (variables under `aux.`: not part of the
/// checkpoint; [`Trainer::save_aux`] writes them separately).
#[derive(Debug, Clone, Default)]
pub struct AuxHeads {
    /// Region and `[SEG]` states → attribute logits (see [`RegionAttribute`]).
    pub attributes: Option<Linear>,
    /// Region and `[SEG]` states → the box encoding of their box (the target's for `[SEG]`).
    pub position: Option<Linear>,
}

/// A fresh model of `cfg` whose variables are initialised from `seed`, and its variables
/// (see [`UniRes::fresh`]).
pub fn fresh_model(
    cfg: &UniResConfig,
    prompt: PromptBuilder,
    seed: u64,
    dtype: DType,
) -> Result<(UniRes, VarMap)> {
    UniRes::fresh(cfg, prompt, seed, dtype)
}

/// Scales gradients so that their global L2 norm is at most `max_norm`; returns the norm.
pub fn clip_grad_norm(
    vars: &[Var],
    grads: &mut candle_core::backprop::GradStore,
    max_norm: f64,
) -> Result<f64> {
    let mut sq = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    let norm = sq.sqrt();
    if norm > max_norm && norm.is_finite() {
        let s = max_norm / norm;
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let g = (g * s)?;
                grads.insert(v.as_tensor(), g);
            }
        }
    }
    Ok(norm)
}

/// Optimisation settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainOptions {
    pub seed: u64,
    pub steps: usize,
    pub lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    pub clip_norm: f64,
    pub weights: LossWeights,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            steps: 3000,
            lr: 1e-3,
            warmup: 150,
            weight_decay: 0.01,
            clip_norm: 1.0,
            weights: LossWeights::default(),
        }
    }
}

/// Learning rate at `step`: linear warm-up, then cosine decay to 5% of the peak.
pub fn lr_at(o: &TrainOptions, step: usize) -> f64 {
    if step < o.warmup {
        return o.lr * (step + 1) as f64 / o.warmup as f64;
    }
    let t = (step - o.warmup) as f64 / (o.steps.saturating_sub(o.warmup)).max(1) as f64;
    o.lr * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos()))
}

/// A model being trained: the variables and the graph built on them.
pub struct Trainer {
    pub varmap: VarMap,
    pub model: UniRes,
    opt: AdamW,
    vars: Vec<Var>,
    pub opts: TrainOptions,
    step: usize,
    aux: AuxHeads,
}

impl Trainer {
    /// A fresh model of `cfg` with variables initialised from `opts.seed`.
    pub fn new(cfg: &UniResConfig, prompt: PromptBuilder, opts: TrainOptions) -> Result<Self> {
        Self::with_attribute_classes(cfg, prompt, opts, 0)
    }

    /// [`Trainer::new`] with a training-only attribute head of `classes` outputs (0: none)
    /// for the auxiliary loss, and a position head when `opts.weights.position > 0`; their
    /// variables live under `aux.`, outside the checkpoint that [`Trainer::save`] writes.
    pub fn with_attribute_classes(
        cfg: &UniResConfig,
        prompt: PromptBuilder,
        opts: TrainOptions,
        classes: usize,
    ) -> Result<Self> {
        let (model, varmap) = UniRes::fresh(cfg, prompt, opts.seed, DType::F32)?;
        let aux_vb = || {
            let backend = SeededVarMap::new(varmap.clone(), opts.seed ^ 0xa77);
            VarBuilder::from_backend(Box::new(backend), DType::F32, Device::Cpu)
        };
        let h = cfg.llm.hidden_size;
        let attributes = if classes > 0 {
            Some(Linear::new(
                h,
                classes,
                true,
                aux_vb().pp("aux.attributes"),
            )?)
        } else {
            None
        };
        let position = if opts.weights.position > 0.0 {
            Some(Linear::new(
                h,
                8 * POSITION_FREQS,
                true,
                aux_vb().pp("aux.position"),
            )?)
        } else {
            None
        };
        let aux = AuxHeads {
            attributes,
            position,
        };
        let vars = varmap.all_vars();
        let opt = AdamW::new(
            vars.clone(),
            ParamsAdamW {
                lr: opts.lr,
                weight_decay: opts.weight_decay,
                ..Default::default()
            },
        )?;
        Ok(Self {
            varmap,
            model,
            opt,
            vars,
            opts,
            step: 0,
            aux,
        })
    }

    /// One optimisation step on a batch; returns the losses and the gradient norm.
    pub fn step(&mut self, batch: &[TrainScene]) -> Result<(LossParts, f64)> {
        let (loss, parts) = batch_loss(&self.model, batch, &self.opts.weights, &self.aux)?;
        let mut grads = loss.backward()?;
        let norm = clip_grad_norm(&self.vars, &mut grads, self.opts.clip_norm)?;
        self.opt.set_learning_rate(lr_at(&self.opts, self.step));
        self.opt.step(&grads)?;
        self.step += 1;
        Ok((parts, norm))
    }

    /// Saves the model's variables (not the training-only `aux.` ones) as safetensors in
    /// `dtype` (keys = checkpoint names).
    pub fn save(&self, path: &Path, dtype: DType) -> Result<()> {
        self.save_where(path, dtype, |n| !n.starts_with("aux."))
    }

    /// Saves the training-only `aux.` heads (f32), so that a run started from this one
    /// (`--init`) keeps them instead of starting them afresh.
    pub fn save_aux(&self, path: &Path) -> Result<()> {
        self.save_where(path, DType::F32, |n| n.starts_with("aux."))
    }

    fn save_where(&self, path: &Path, dtype: DType, keep: impl Fn(&str) -> bool) -> Result<()> {
        let vars = self
            .varmap
            .data()
            .lock()
            .map_err(|_| Error::shape("save", "variable map lock poisoned"))?;
        let mut tensors = std::collections::HashMap::new();
        for (name, var) in vars.iter().filter(|(n, _)| keep(n)) {
            tensors.insert(name.clone(), var.as_tensor().to_dtype(dtype)?);
        }
        candle_core::safetensors::save(&tensors, path)?;
        Ok(())
    }
}
