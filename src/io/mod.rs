//! Reading and writing: images, masks (PNG, overlay, COCO RLE), proposal boxes, weights.

pub mod assemble;
pub mod boxes;
pub mod checkpoint;
pub mod hub;
pub mod image;
pub mod inputs;
pub mod mask;
pub mod rename;
pub mod rle;
pub mod validate;
pub mod weights;
