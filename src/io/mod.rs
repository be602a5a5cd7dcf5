//! Reading and writing: images, masks (PNG, overlay, COCO RLE), proposal boxes, weights.

pub mod boxes;
pub mod image;
pub mod mask;
pub mod rle;
pub mod weights;
