//! Custom operations. Each CPU path is always compiled and is the reference; CUDA and Metal
//! paths sit behind the `cuda` / `metal` features and are tested against it.

pub mod attention;
pub mod dwconv;
pub mod roi_align;
pub mod upsample;
