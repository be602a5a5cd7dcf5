//! Reading and writing images, masks (PNG, overlay, COCO RLE) and proposal boxes.

pub mod boxes;
pub mod image;
pub mod mask;
pub mod rle;
