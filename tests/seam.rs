//! The model-family seam: the family is read from config.json, the `Segmenter` trait gives
//! exactly what the UniRES++ model gives directly, and encodings do not cross families.

mod common;

use candle_core::{DType, Device};
use common::TempDir;
use unires::pipeline::{load_segmenter, Encoded, Family};
use unires::{Error, Granularity, Source};

/// EVF-SAM's published `config.json` fields (see the issue facts: hidden_size, out_dim,
/// mm_extractor_scale, sam_scale, torch_dtype).
const EVF_CONFIG: &str = r#"{"hidden_size": 1024, "out_dim": 256, "mm_extractor_scale": "large",
    "sam_scale": "huge", "torch_dtype": "float16"}"#;

#[test]
fn the_family_comes_from_config_json() {
    let tiny = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/tiny/config.json"),
    )
    .unwrap();
    assert_eq!(Family::detect("tiny", &tiny).unwrap(), Family::UniRes);
    assert_eq!(Family::detect("evf", EVF_CONFIG).unwrap(), Family::EvfSam);
    assert_eq!(
        Family::detect("x", r#"{"family": "evf-sam", "version": 1}"#).unwrap(),
        Family::EvfSam
    );
    for bad in [r#"{"family": "lisa"}"#, r#"{"hidden_size": 4}"#, "[1]", "{"] {
        assert!(
            matches!(Family::detect("x", bad), Err(Error::Config { .. })),
            "{bad}"
        );
    }
}

#[test]
fn an_evf_sam_config_goes_to_the_evf_sam_loader() {
    // Only config.json: the EVF-SAM loader takes it and stops at the missing tokenizer model
    // (tests/evf_sam_model.rs loads complete checkpoints).
    let t = TempDir::new("seam-evf");
    std::fs::write(t.0.join("config.json"), EVF_CONFIG).unwrap();
    match load_segmenter(&Source::Dir(t.0.clone()), &Device::Cpu, DType::F32) {
        Err(Error::FileNotFound { path }) => {
            assert!(
                path.ends_with("sentencepiece.bpe.model"),
                "{}",
                path.display()
            )
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a checkpoint without weights loaded"),
    }
}

#[test]
fn the_seam_gives_what_the_model_gives() {
    let dev = Device::Cpu;
    let seg = load_segmenter(&Source::Embedded, &dev, DType::F32).unwrap();
    assert_eq!(seg.family(), Family::UniRes);
    let model = unires::load(&Source::Embedded, &dev, DType::F32).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scenes");
    let image = unires::io::image::load_image(&root.join("tall.png"), &Default::default()).unwrap();
    let (w, h) = image.dimensions();
    let (boxes, _) =
        unires::io::boxes::load_boxes(&root.join("tall.json"), w, h, &Default::default()).unwrap();

    let via_seam = seg.encode(&image, &boxes).unwrap();
    let direct = model.encode(&image, &boxes).unwrap();
    assert_eq!(via_seam.proposals, direct.proposals);
    for (expr, g) in [
        ("the two cars", Granularity::Auto),
        ("the handle of the mug", Granularity::Part),
        ("the blue boat", Granularity::Object),
    ] {
        let a = seg.segment(&via_seam, expr, g).unwrap();
        let b = model.segment(&direct, expr, g).unwrap();
        assert_eq!(a.mask, b.mask, "{expr}");
        assert_eq!(a.score.to_bits(), b.score.to_bits(), "{expr}");
        assert_eq!(a.granularity, b.granularity, "{expr}");
        assert_eq!(a.instances.len(), b.instances.len(), "{expr}");
    }
    // The threshold the trait applies is the model's.
    assert_eq!(
        seg.no_target_threshold(),
        model.config().no_target_threshold
    );
}

#[test]
fn an_encoding_of_another_family_is_refused() {
    let seg = load_segmenter(&Source::Embedded, &Device::Cpu, DType::F32).unwrap();
    let foreign = Encoded::new(Family::EvfSam, 4, 4, Default::default(), 0u8);
    match seg.segment(&foreign, "the car", Granularity::Object) {
        Err(Error::WrongFamily { expected, got }) => {
            assert_eq!((expected, got), ("unires", "evf-sam"))
        }
        other => panic!("{other:?}"),
    }
}
