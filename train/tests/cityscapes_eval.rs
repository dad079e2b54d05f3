//! `semask-train eval` computes the mIoU and per-class IoU that the official `cityscapesscripts`
//! evaluation computes from the label-id PNGs that `--save-labels` writes (to 1e-6), on a small
//! Cityscapes-layout dataset with ignored pixels.
//!
//! The fixture model has random weights, so its predictions hardly overlap the truth. The second
//! pass therefore rewrites half of the ground truth (a checkerboard of 8x8 blocks) to the first
//! pass's predictions: the IoUs are then spread between 0 and 1 and the comparison has teeth.

mod util;

use std::path::Path;

use util::{fixture, run_reference, run_train};

fn eval(root: &Path, labels: &Path, report: &Path) -> serde_json::Value {
    let out = util::eval_tiny_on_cityscapes(
        root,
        &["--save-labels", labels.to_str().unwrap(), "--report", report.to_str().unwrap()],
    );
    assert!(out.status.success(), "eval failed:\n{}", util::stderr(&out));
    serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap()
}

fn cityscapes_scripts(root: &Path, labels: &Path, out: &Path) -> serde_json::Value {
    run_reference(
        "cityscapes_eval.py",
        &[root.to_str().unwrap(), "val", labels.to_str().unwrap(), out.to_str().unwrap()],
    );
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

/// Compares mIoU and every class's IoU; returns how many classes have 0 < IoU < 1.
fn assert_same_scores(ours: &serde_json::Value, official: &serde_json::Value) -> usize {
    let (a, b) = (ours["miou"].as_f64().unwrap(), official["miou"].as_f64().unwrap());
    assert!((a - b).abs() <= 1e-6, "mIoU: ours {a}, cityscapesscripts {b}");
    let mut partial = 0;
    for (class, theirs) in official["iou"].as_object().unwrap() {
        let mine = &ours["iou"][class];
        match (mine.as_f64(), theirs.as_f64()) {
            (Some(x), Some(y)) => {
                assert!((x - y).abs() <= 1e-6, "{class}: ours {x}, cityscapesscripts {y}");
                partial += usize::from(x > 0.0 && x < 1.0);
            }
            (None, None) => {}
            _ => panic!("{class}: ours {mine}, cityscapesscripts {theirs}"),
        }
    }
    partial
}

#[test]
fn eval_matches_cityscapesscripts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cityscapes");
    let size = (256, 128);
    let names = util::write_fake_cityscapes(&root, "val", &["aachen", "bremen"], 2, size);

    let first = dir.path().join("pred1");
    let ours = eval(&root, &first, &dir.path().join("ours1.json"));
    let official = cityscapes_scripts(&root, &first, &dir.path().join("official1.json"));
    assert_same_scores(&ours, &official);

    for name in &names {
        let city = name.split('_').next().unwrap();
        let gt_path = root.join("gtFine/val").join(city).join(format!("{name}_gtFine_labelIds.png"));
        let mut gt = image::open(&gt_path).unwrap().into_luma8();
        let predicted = image::open(first.join(format!("{name}.png"))).unwrap().into_luma8();
        for (x, y, value) in gt.enumerate_pixels_mut() {
            if value.0[0] != 1 && (x / 8 + y / 8) % 2 == 0 {
                *value = *predicted.get_pixel(x, y);
            }
        }
        gt.save(&gt_path).unwrap();
    }
    let second = dir.path().join("pred2");
    let ours = eval(&root, &second, &dir.path().join("ours2.json"));
    let official = cityscapes_scripts(&root, &second, &dir.path().join("official2.json"));
    let partial = assert_same_scores(&ours, &official);
    eprintln!("second pass: mIoU {} over {} classes with 0 < IoU < 1", ours["miou"], partial);
    assert!(partial >= 3, "only {partial} classes with 0 < IoU < 1: the comparison is too weak\n{ours}");
    assert!(ours["pixels"].as_u64().unwrap() < (names.len() * size.0 * size.1) as u64, "ego rows counted");
}

/// `eval --onnx` (the runtime's tract path, exact upsampling) and `eval --weights` (burn) agree
/// on the same model: the tiny fixture, on frames at its ONNX input size (224x112).
#[test]
fn eval_of_the_onnx_export_agrees_with_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = |source: &[&str], name: &str| {
        let labels = dir.path().join(name);
        let report = dir.path().join(format!("{name}.json"));
        let mut args = vec!["eval", "--arch", "tiny", "--synth-size", "224x112", "--synth-frames", "3"];
        args.extend_from_slice(source);
        args.extend(["--save-labels", labels.to_str().unwrap(), "--report", report.to_str().unwrap()]);
        let out = run_train(&args);
        assert!(out.status.success(), "eval {source:?} failed:\n{}", util::stderr(&out));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
        (labels, report)
    };
    let weights = fixture("semask-ref/tiny.safetensors");
    let onnx = fixture("semask-ref/tiny.onnx");
    let (burn_labels, burn) = run(&["--weights", weights.to_str().unwrap()], "burn");
    let (onnx_labels, tract) = run(&["--onnx", onnx.to_str().unwrap()], "onnx");
    let (mut same, mut total) = (0usize, 0usize);
    for entry in std::fs::read_dir(&burn_labels).unwrap() {
        let name = entry.unwrap().file_name();
        let a = image::open(burn_labels.join(&name)).unwrap().into_luma8();
        let b = image::open(onnx_labels.join(&name)).unwrap().into_luma8();
        same += a.as_raw().iter().zip(b.as_raw()).filter(|(x, y)| x == y).count();
        total += a.as_raw().len();
    }
    assert_eq!(total, 6 * 224 * 112, "label maps of 6 frames (2 drives x 3)");
    let agreement = same as f64 / total as f64;
    assert!(agreement >= 0.999, "burn and ONNX labels agree on {:.4}% of pixels", 100.0 * agreement);
    let (a, b) = (burn["miou"].as_f64().unwrap(), tract["miou"].as_f64().unwrap());
    assert!((a - b).abs() < 2e-3, "mIoU burn {a}, ONNX {b}");
}
