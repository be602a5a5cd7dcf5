//! # unires — multi-granularity referring expression segmentation in Rust
//!
//! Given an image, a phrase and a granularity, `unires` returns the mask of a *part*
//! ("the handle of the mug"), one *object* ("the mug on the left"), *several objects*
//! ("all the mugs"), or says that nothing matches. The model follows UniRES++
//! (Wang et al., arXiv 2504.01954): a CLIP ViT on a low-resolution image, a ConvNeXt on a
//! high-resolution image, object/part proposals pooled by ROI Align into region tokens, a
//! LLaMA-family LLM, and a SAM-style mask decoder driven by the `[SEG]` token.
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | `cli` | yes | the `unires` command-line program |
//! | `cuda` | no | candle's CUDA backend and the CUDA kernels in `kernels/cuda` (needs `nvcc`) |
//! | `metal` | no | the Metal kernels in `kernels/metal` (macOS only) |

pub mod config;
pub mod error;
pub mod eval;
pub mod io;
pub mod model;
pub mod ops;
pub mod preprocess;
pub mod proposals;
pub mod types;

pub use config::UniResConfig;
pub use error::{Error, Result};
pub use types::{
    BoxXyxy, FixedProposals, Granularity, Instance, Mask, ProposalSource, Proposals, Segmentation,
};
