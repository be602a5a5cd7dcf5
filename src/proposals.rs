//! Built-in proposal generator (interim: whole image).

use image::RgbImage;

use crate::error::Result;
use crate::types::{BoxXyxy, ProposalSource, Proposals};

/// Class-agnostic region proposals.
#[derive(Debug, Clone, Default)]
pub struct SelectiveSearch;

impl ProposalSource for SelectiveSearch {
    fn propose(&self, image: &RgbImage) -> Result<Proposals> {
        let (w, h) = image.dimensions();
        Ok(Proposals::new(
            vec![BoxXyxy::new(0.0, 0.0, w as f32, h as f32)],
            vec![],
        ))
    }
}
