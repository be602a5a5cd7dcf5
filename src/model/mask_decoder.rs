//! SAM-style mask decoder fed by the `[SEG]` embedding, one mask token per granularity.
