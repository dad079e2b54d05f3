//! The runtime computes what the official SeMask-FPN computes: for the `tiny` and `tiny2`
//! fixtures (tests/fixtures/semask-ref/README.md), in both ONNX forms users produce (the raw
//! `torch.onnx.export` graph and the onnxruntime-folded one), the logits match PyTorch's to
//! 1e-4 and the `exact` label maps match the argmax of PyTorch's upsampled logits.

mod util;

use semask_edge::frame::LabelMap;
use semask_edge::model::OnnxModel;
use semask_edge::pipeline::{Segmenter, SegmenterOptions};
use semask_edge::postprocess::{Postprocessor, Upsample};
use util::{agreement, fixture, read_npy_f32};

fn check(case: &str, form: &str) {
    let model_path = fixture(&format!("semask-ref/{case}{form}.onnx"));
    let model = OnnxModel::open(&model_path, &Default::default()).unwrap();
    let mut segmenter = Segmenter::new(&model, &SegmenterOptions::default()).unwrap();

    let (input_shape, input) = read_npy_f32(&fixture(&format!("semask-ref/{case}_input.npy")));
    let (logits_shape, expected) = read_npy_f32(&fixture(&format!("semask-ref/{case}_logits.npy")));
    assert_eq!(segmenter.backend().input_shape().to_vec(), input_shape);
    assert_eq!(segmenter.backend().logits_shape().to_vec(), logits_shape);

    let logits = segmenter.logits_for_input(&input).unwrap().to_vec();
    let (worst, at) = logits
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold((0.0f32, 0), |(w, i), (j, d)| if d > w { (d, j) } else { (w, i) });
    assert!(
        worst <= 1e-4,
        "{case}{form}: max |logits - PyTorch| = {worst:e} at flat index {at} (ours {}, PyTorch {})",
        logits[at],
        expected[at]
    );

    // PyTorch's logits upsampled to the input size, and their argmax over classes.
    let (up_shape, up) = read_npy_f32(&fixture(&format!("semask-ref/{case}_logits_up.npy")));
    let (k, height, width) = (up_shape[1], up_shape[2], up_shape[3]);
    let expected_labels: Vec<u8> = (0..height * width)
        .map(|p| {
            (0..k).fold(
                0,
                |best, c| if up[c * height * width + p] > up[best * height * width + p] { c } else { best },
            ) as u8
        })
        .collect();
    let shape: [usize; 4] = logits_shape.try_into().unwrap();
    let mut post = Postprocessor::new(Upsample::Exact, shape, segmenter.classes().clone(), 0.5);
    let mut labels = LabelMap::new(width, height);
    post.labels(&logits, &mut labels);
    let agree = agreement(&labels.data, &expected_labels);
    assert!(
        agree >= 0.9999,
        "{case}{form}: exact labels agree with PyTorch on {:.4}% of pixels",
        agree * 100.0
    );
    eprintln!("{case}{form}: max |diff| {worst:.2e}, exact-label agreement {:.4}%", agree * 100.0);
}

#[test]
fn tiny_raw_export_matches_pytorch() {
    check("tiny", "");
}

#[test]
fn tiny_folded_export_matches_pytorch() {
    check("tiny", ".ortopt");
}

#[test]
fn tiny2_raw_export_matches_pytorch() {
    check("tiny2", "");
}

#[test]
fn tiny2_folded_export_matches_pytorch() {
    check("tiny2", ".ortopt");
}
