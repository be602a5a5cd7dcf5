//! A procedurally generated multi-granularity referring segmentation benchmark.
