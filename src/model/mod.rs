//! The UniRES++ graph, one file per paper component.

pub mod hires;
pub mod llm;
pub mod mask_decoder;
pub mod nn;
pub mod prompt;
pub mod region;
pub mod unires;
pub mod vision;
