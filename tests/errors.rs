//! Bad input gets one clear line naming the file and the problem, a non-zero exit status, no
//! panic, and no output that looks complete when it is not. Also: metadata in the model is
//! honoured, and dynamic input sizes need --input-size.

mod util;

use std::path::{Path, PathBuf};

use prost::Message;
use tract_onnx::pb;
use util::onnx::{dim, identity_model, sym};
use util::{assert_one_line_error, files_in, fixture, run_cli, s, stderr, stdout};

#[test]
fn missing_model_file() {
    let out = run_cli(&["run", "--model", "no/such/model.onnx", "--labels", "/tmp/unused"]);
    assert_one_line_error(&out, 2, &["no/such/model.onnx", "No such file"]);
}

#[test]
fn file_that_is_not_onnx() {
    let png = fixture("images/street_224x448.png");
    let out = run_cli(&["info", "--model", s(&png)]);
    assert_one_line_error(&out, 2, &["street_224x448.png", "not a readable ONNX model"]);
}

#[test]
fn truncated_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.onnx");
    let bytes = std::fs::read(fixture("semask-ref/tiny.ortopt.onnx")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let labels = dir.path().join("labels");
    let out = run_cli(&["run", "--model", s(&truncated), "--labels", s(&labels)]);
    assert_one_line_error(&out, 2, &["truncated.onnx", "not a readable ONNX model"]);
    assert!(files_in(&labels).is_empty());
}

#[test]
fn empty_onnx_file() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    let out = run_cli(&["info", "--model", s(&empty)]);
    assert_one_line_error(&out, 2, &["empty.onnx", "empty"]);
}

#[test]
fn onnx_whose_input_is_not_an_rgb_image() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("gray.onnx");
    identity_model(&model, vec![dim(1), dim(1), dim(8), dim(8)]);
    let out = run_cli(&["run", "--model", s(&model)]);
    assert_one_line_error(&out, 2, &["gray.onnx", "[1, 1, 8, 8]", "[1, 3, H, W]"]);
}

#[test]
fn dynamic_input_needs_input_size_then_runs() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("dynamic.onnx");
    identity_model(&model, vec![sym("N"), dim(3), sym("H"), sym("W")]);
    let out = run_cli(&["run", "--model", s(&model)]);
    assert_one_line_error(&out, 2, &["dynamic.onnx", "--input-size"]);

    // With a size it runs: the "logits" are the normalised image itself, 3 channels, so the
    // label of a pure red pixel is channel 0.
    let image = dir.path().join("red.png");
    image::RgbImage::from_pixel(16, 8, image::Rgb([255, 0, 0])).save(&image).unwrap();
    let labels = dir.path().join("labels");
    let out = run_cli(&[
        "run",
        "--model",
        s(&model),
        "--input-size",
        "8x4",
        "--input",
        s(&image),
        "--labels",
        s(&labels),
        "--classes",
        s(&write(dir.path(), "c.txt", "r\ng\nb\n")),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let l = image::open(labels.join("red.png")).unwrap().into_luma8();
    assert_eq!((l.width(), l.height()), (16, 8));
    assert!(l.iter().all(|&v| v == 0));
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn unreadable_image_is_reported_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "broken.png", "this is not a png");
    let labels = dir.path().join("labels");
    let out = run_cli(&["run", "--input", s(&bad), "--labels", s(&labels)]);
    assert_one_line_error(&out, 1, &["broken.png", "not a PNG or JPEG"]);
    assert!(stdout(&out).contains("1 frames in, 0 written, 1 failed"), "{}", stdout(&out));
    assert!(files_in(&labels).is_empty(), "{:?}", files_in(&labels));
}

#[test]
fn broken_frame_in_a_directory_is_skipped_and_the_rest_written() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::copy(fixture("images/street_224x448.png"), frames.join("f1.png")).unwrap();
    let good = std::fs::read(fixture("images/street_112x224.jpg")).unwrap();
    std::fs::write(frames.join("f2.jpg"), &good[..good.len() / 3]).unwrap(); // truncated JPEG
    std::fs::copy(fixture("images/street_112x224.jpg"), frames.join("f3.jpg")).unwrap();
    let (labels, overlay) = (dir.path().join("labels"), dir.path().join("overlay"));
    let out = run_cli(&[
        "run",
        "--input",
        s(&frames),
        "--labels",
        s(&labels),
        "--overlay",
        s(&overlay),
        "--mixed-sizes",
    ]);
    assert_one_line_error(&out, 1, &["f2.jpg", "frame 2"]);
    let text = stdout(&out);
    assert!(text.contains("3 frames in, 2 written, 1 failed"), "{text}");
    assert!(text.contains("[1/3] f1 ") && text.contains("[3/3] f3 "), "{text}");
    assert_eq!(files_in(&labels), vec!["f1.png", "f3.png"]);
    assert_eq!(files_in(&overlay), vec!["f1.png", "f3.png"]);
}

#[test]
fn empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "notes.txt", "no images here");
    let out = run_cli(&["run", "--input", s(dir.path())]);
    assert_one_line_error(&out, 2, &[s(dir.path()), "no PNG or JPEG images"]);
}

#[test]
fn missing_input() {
    let out = run_cli(&["run", "--input", "nowhere/frames"]);
    assert_one_line_error(&out, 2, &["nowhere/frames", "does not exist"]);
}

#[test]
fn unknown_flag_values() {
    for (args, needle) in [
        (vec!["run", "--upsample", "bogus"], "--upsample"),
        (vec!["run", "--label-ids", "ade"], "--label-ids"),
        (vec!["run", "--backend", "metal"], "--backend"),
        (vec!["run", "--alpha", "2"], "--alpha"),
        (vec!["run", "--mean", "1,2"], "--mean"),
        (vec!["run", "--input-size", "big"], "--input-size"),
        (vec!["run", "--precision", "int4"], "--precision"),
    ] {
        let out = run_cli(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"));
        let first = err.lines().next().unwrap_or("");
        assert!(first.starts_with("error: invalid value") && first.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn int8_without_an_int8_artifact_says_how_to_make_one() {
    let model = fixture("semask-ref/tiny.onnx");
    let out = run_cli(&["run", "--model", s(&model), "--precision", "int8", "--frames", "1"]);
    assert_one_line_error(
        &out,
        2,
        &["--precision int8", "model.qop.onnx", "semask-train quantize", "--precision fp32"],
    );
}

#[test]
fn fp16_without_tensorrt_says_what_runs_fp16() {
    for args in [vec!["run", "--precision", "fp16"], vec!["run", "--backend", "cpu", "--precision", "fp16"]] {
        let out = run_cli(&args);
        assert_one_line_error(&out, 2, &["fp16", "TensorRT"]);
    }
}

#[test]
fn backend_not_in_this_build() {
    let out = run_cli(&["run", "--backend", "tensorrt"]);
    assert_one_line_error(&out, 2, &["tensorrt", "not available", "--backend cpu"]);
}

#[test]
fn cityscapes_ids_need_cityscapes_classes() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..19).map(|i| format!("c{i}")).collect();
    let classes = write(dir.path(), "classes.json", &serde_json::to_string(&names).unwrap());
    let out = run_cli(&[
        "run",
        "--classes",
        s(&classes),
        "--label-ids",
        "cityscapes",
        "--labels",
        s(&dir.path().join("l")),
    ]);
    assert_one_line_error(&out, 2, &["--label-ids cityscapes", "--label-ids train"]);
}

#[test]
fn class_file_with_the_wrong_count() {
    let dir = tempfile::tempdir().unwrap();
    let classes = write(dir.path(), "classes.txt", "road\nsky\n");
    let out = run_cli(&["run", "--classes", s(&classes)]);
    assert_one_line_error(&out, 2, &["--classes", "2 classes", "19 channels"]);
}

#[test]
fn unwritable_output_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "occupied", "a file, not a directory");
    let out = run_cli(&["run", "--labels", s(&file.join("labels"))]);
    assert_one_line_error(&out, 2, &["occupied", "cannot create output directory"]);
}

#[test]
fn metadata_props_of_the_model_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("semask-ref/tiny2.ortopt.onnx")).unwrap();
    let mut proto = pb::ModelProto::decode(&bytes[..]).unwrap();
    let names: Vec<String> = (0..19).map(|i| format!("thing{i}")).collect();
    let palette: Vec<[u8; 3]> = (0..19).map(|i| [i as u8, 100, 200]).collect();
    for (k, v) in [
        ("semask.classes", serde_json::to_string(&names).unwrap()),
        ("semask.palette", serde_json::to_string(&palette).unwrap()),
        ("semask.mean", "[100, 110, 120]".to_string()),
        ("semask.std", "[50, 60, 70]".to_string()),
        ("semask.logits", "logits".to_string()),
        ("semask.arch", "tiny".to_string()),
    ] {
        proto.metadata_props.push(pb::StringStringEntryProto { key: k.into(), value: v });
    }
    let model = dir.path().join("with-metadata.onnx");
    std::fs::write(&model, proto.encode_to_vec()).unwrap();

    let info = run_cli(&["info", "--json", "--model", s(&model)]);
    assert!(info.status.success(), "{}", stderr(&info));
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["classes"]["value"]["names"][3], "thing3");
    assert_eq!(v["classes"]["from"], "metadata");
    assert_eq!(v["mean"]["value"], serde_json::json!([100.0, 110.0, 120.0]));
    assert_eq!(v["std"]["from"], "metadata");
    assert_eq!(v["metadata_props"]["semask.arch"], "tiny");

    // Colours come from the model's palette: every pixel of the colour map is one of them.
    let color = dir.path().join("color");
    let out = run_cli(&["run", "--model", s(&model), "--frames", "1", "--color", s(&color)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let img = image::open(color.join("000000.png")).unwrap().into_rgb8();
    assert!(img.pixels().all(|p| p.0[1] == 100 && p.0[2] == 200 && p.0[0] < 19));

    // A bad value names the key.
    proto.metadata_props.retain(|e| e.key != "semask.std");
    proto
        .metadata_props
        .push(pb::StringStringEntryProto { key: "semask.std".into(), value: "[1, 2]".into() });
    std::fs::write(&model, proto.encode_to_vec()).unwrap();
    let out = run_cli(&["info", "--model", s(&model)]);
    assert_one_line_error(&out, 2, &["with-metadata.onnx", "semask.std", "3 numbers"]);
}

#[test]
fn auto_falls_back_to_the_cpu_and_says_why_each_rung_was_skipped() {
    // x86-cuda's ladder is tensorrt, cuda, cpu; neither GPU rung can load on this machine.
    let out = run_cli(&["-v", "--target", "x86-cuda", "run", "--frames", "1", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let skipped: Vec<&str> = err.lines().filter(|l| l.contains("backend auto: skipping")).collect();
    assert_eq!(skipped.len(), 2, "{err}");
    assert!(skipped[0].contains("skipping tensorrt: ") && skipped[1].contains("skipping cuda: "), "{err}");
    assert!(err.contains("on tract 0.23.9 cpu"), "{err}");
    // x86-cuda prefers fp16, which the CPU cannot run: it gives way to fp32, and says so.
    assert!(
        err.contains("at fp16 (the device profile's precision)") && err.contains("running fp32"),
        "{err}"
    );

    // Asked for on the command line, fp16 is met or an error.
    let out = run_cli(&["--target", "x86-cuda", "run", "--frames", "1", "-q", "--precision", "fp16"]);
    assert_one_line_error(&out, 2, &["fp16", "TensorRT"]);

    // The cpu profile (what a machine without NVIDIA driver detects) tries nothing else.
    let out = run_cli(&["-v", "--target", "cpu", "run", "--frames", "1", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("backend auto: skipping"), "{}", stderr(&out));
}
