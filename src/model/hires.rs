//! ConvNeXt high-resolution encoder (multi-stage feature maps at strides 4/8/16/32), HF `ConvNextModel` semantics.
