//! Reading and writing images, masks (PNG, overlay, COCO RLE), proposal boxes and results.

pub mod boxes;
pub mod image;
pub mod mask;
pub mod result;
pub mod rle;
