//! # unires — multi-granularity referring expression segmentation in Rust
//!
//! Given an image, a phrase and a granularity, `unires` returns the mask of a *part*
//! ("the handle of the mug"), one *object* ("the mug on the left"), *several objects*
//! ("all the mugs"), or says that nothing matches. The model follows UniRES++
//! (Wang et al., arXiv 2504.01954): a CLIP ViT on a low-resolution image, a ConvNeXt on a
//! high-resolution image, object/part proposals pooled by ROI Align into region tokens, a
//! LLaMA-family LLM, and a SAM-style mask decoder driven by the `[SEG]` token.
//!
//! ## Example
//! ```no_run
//! use candle_core::{DType, Device};
//! use unires::{Granularity, ProposalSource, Source};
//! # fn main() -> unires::Result<()> {
//! let model = unires::load(&Source::Embedded, &Device::Cpu, DType::F32)?;
//! let image = unires::io::image::load_image("scene.png".as_ref(), &Default::default())?;
//! let boxes = unires::proposals::SelectiveSearch::default().propose(&image)?; // or your detector
//! let encoded = model.encode(&image, &boxes)?; // once per image
//! let seg = model.segment(&encoded, "the handle of the mug", Granularity::Auto)?; // per phrase
//! println!("{} {:.2} {} px", seg.granularity, seg.score, seg.mask.area());
//! unires::io::mask::save_mask_png(&seg.mask, "mask.png")?;
//! # Ok(()) }
//! ```
//!
//! ## Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | `cli` | yes | the `unires` command-line program |
//! | `cuda` | no | candle's CUDA backend and the CUDA kernels in `kernels/cuda` (needs `nvcc`) |
//! | `metal` | no | the Metal kernels in `kernels/metal` (macOS only) |

//!
//! ## Layers
//! Imports point one way, down this list (see `docs/architecture.md`; a test checks it):
//! [`error`], [`rng`], [`types`], [`config`] → [`io`], [`weights`], [`ops`], [`proposals`] →
//! [`model`] → [`pipeline`] → [`synthetic`] → [`eval`], [`train`] → `serve` (feature `serve`)
//! → the `unires` binary.

pub mod config;
pub mod error;
pub mod eval;
pub mod io;
pub mod model;
pub mod ops;
pub mod pipeline;
pub mod proposals;
pub mod rng;
#[cfg(feature = "serve")]
pub mod serve;
pub mod synthetic;
pub mod train;
pub mod types;
pub mod weights;

pub use config::{Quantization, UniResConfig};
pub use error::{Error, Result};
pub use model::unires::load::load;
pub use model::unires::UniRes;
pub use pipeline::unires::EncodedImage;
pub use pipeline::{load_segmenter, Encoded, Family, Segmenter};
pub use types::{
    BoxXyxy, FixedProposals, Granularity, Instance, Mask, ProposalSource, Proposals, RegionKind,
    RegionWeight, Segmentation,
};
pub use weights::Source;
