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
    let weights = fixture("semask-ref/tiny.safetensors");
    let args = [
        "eval",
        "--arch",
        "tiny",
        "--weights",
        weights.to_str().unwrap(),
        "--dataset",
        "cityscapes",
        "--data-root",
        root.to_str().unwrap(),
        "--save-labels",
        labels.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ];
    let out = run_train(&args);
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
