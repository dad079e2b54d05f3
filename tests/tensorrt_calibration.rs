//! What TensorRT's int8 calibrator is fed, checked without TensorRT: the calibration frames of
//! `calibration/<model>/tensors/` come out of [`CalibrationBatches`] bit-identical to the
//! runtime's own pre-processing of the same frames, and frames made for another pre-processing
//! are refused.

mod util;

use semask_edge::calibration::{CalibrationBatches, CalibrationError};
use semask_edge::frame::Frame;
use semask_edge::model::OnnxModel;
use semask_edge::preprocess::Preprocessor;
use semask_edge::source::{Captured, SourceOptions};

#[test]
fn calibration_batches_equal_the_runtime_preprocessing_bit_for_bit() {
    let tensors = util::workspace_root().join("calibration/semask-tiny-synth/tensors");
    let model = OnnxModel::builtin(&Default::default()).unwrap();
    let (h, w) = model.input_size(None, &Default::default()).unwrap();
    let spec = model.metadata.preproc_spec(h, w);
    let mut batches = CalibrationBatches::open(&tensors, &spec).unwrap();
    assert_eq!(batches.len(), 16);

    // The manifest names its source: `synth://?... (every K frames)`. Replay it.
    let source_text = batches.manifest().source.clone();
    let (uri, every) = source_text.split_once(" (every ").unwrap();
    let every: usize = every.trim_end_matches(" frames)").parse().unwrap();
    let mut source = semask_edge::source::open(Some(uri), &SourceOptions::default()).unwrap();
    let mut preprocessor = Preprocessor::new(spec);
    let (mut frame, mut expected, mut batch) =
        (Frame::default(), vec![0f32; 3 * h * w], vec![0f32; 3 * h * w]);
    let mut seen = 0usize;
    let mut compared = 0usize;
    while source.next(&mut frame).unwrap() == Captured::Frame {
        seen += 1;
        if !(seen - 1).is_multiple_of(every) {
            continue;
        }
        preprocessor.run(&frame.image, &mut expected);
        assert!(batches.next_into(&mut batch).unwrap(), "fewer batches than frames");
        let same = expected.iter().zip(&batch).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "batch {compared} differs from the pre-processed frame {}", seen - 1);
        compared += 1;
        if compared == batches.len() {
            break;
        }
    }
    assert_eq!(compared, 16);
    assert!(!batches.next_into(&mut batch).unwrap(), "the batches end with the manifest");
}

#[test]
fn frames_made_for_another_preprocessing_are_refused() {
    let tensors = util::workspace_root().join("calibration/semask-tiny-synth/tensors");
    let model = OnnxModel::builtin(&Default::default()).unwrap();
    let spec = model.metadata.preproc_spec(256, 512);
    for (what, changed) in [
        ("size", semask_edge::preprocess::PreprocSpec { input_width: 1024, ..spec }),
        ("mean", semask_edge::preprocess::PreprocSpec { mean: [0.0, 0.0, 0.0], ..spec }),
        ("std", semask_edge::preprocess::PreprocSpec { std: [1.0, 1.0, 1.0], ..spec }),
        (
            "order",
            semask_edge::preprocess::PreprocSpec {
                channel_order: semask_edge::preprocess::ChannelOrder::Bgr,
                ..spec
            },
        ),
    ] {
        let e = CalibrationBatches::open(&tensors, &changed).unwrap_err();
        assert!(matches!(e, CalibrationError::Tensors { .. }), "{what}: {e}");
        assert!(e.to_string().contains("semask-train quantize"), "{e}");
    }
    // A truncated frame file is an error naming it, not a short batch.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("tensors");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(&tensors).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    let first = copy.join("000000.f32");
    let bytes = std::fs::read(&first).unwrap();
    std::fs::write(&first, &bytes[..bytes.len() - 4]).unwrap();
    let mut batches = CalibrationBatches::open(&copy, &spec).unwrap();
    let mut batch = vec![0f32; 3 * 256 * 512];
    let e = batches.next_into(&mut batch).unwrap_err().to_string();
    assert!(e.contains("000000.f32"), "{e}");
}
