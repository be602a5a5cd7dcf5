//! Reading and writing images, masks (PNG, overlay, COCO RLE), proposal boxes and results,
//! and the bounded reads every caller-given file goes through ([`read`]).

pub mod boxes;
pub mod config_file;
pub mod image;
pub mod mask;
pub mod read;
pub mod result;
pub mod rle;
