//! Model graphs: the blocks shared across families (CLIP ViT, ConvNeXt, LLaMA, the SAM mask
//! decoder and ViT image encoder, BEiT-3, small layers in [`nn`], seeded initialisation in
//! [`init`]), and one folder per family ([`unires`], [`evf_sam`]) whose file names follow the
//! paper's components and whose struct fields follow the checkpoint keys.

pub mod beit3;
pub mod evf_sam;
pub mod hires;
pub mod init;
pub mod llm;
pub mod mask_decoder;
pub mod nn;
pub mod sam_image_encoder;
pub mod unires;
pub mod vision;
