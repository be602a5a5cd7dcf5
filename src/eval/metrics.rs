//! Segmentation metrics (gIoU, cIoU, N-acc, T-acc, mIoU, oIoU, Pr@X) with the official definitions.
