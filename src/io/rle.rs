//! COCO run-length encoding in pycocotools' compressed string form, and polygon rasterisation.
