//! Mask output: PNG (0/255) and overlay PNG (per-instance tints).
