//! Image loading with typed errors and size limits.
