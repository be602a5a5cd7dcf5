//! Region tokens: ROI-Align-pooled object/part features, granularity embedding and box encoding.
