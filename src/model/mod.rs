//! Model graphs: the blocks shared across families (CLIP ViT, ConvNeXt, LLaMA, the SAM mask
//! decoder, SAM's ViT image encoder, small layers in [`nn`], seeded initialisation in
//! [`init`]), and one folder per family ([`unires`]) whose file names follow the paper's
//! components and whose struct fields follow the checkpoint keys.

pub mod hires;
pub mod init;
pub mod llm;
pub mod mask_decoder;
pub mod nn;
pub mod sam_image_encoder;
pub mod unires;
pub mod vision;
