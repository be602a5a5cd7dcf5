//! CLIP ViT vision tower, HF `CLIPVisionModel` semantics, with LLaVA feature selection.
