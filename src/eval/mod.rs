//! Evaluation: datasets and metrics (no model code here).

pub mod metrics;
pub mod synthetic;
