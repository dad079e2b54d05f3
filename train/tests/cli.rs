//! The `semask-train` command line: resuming a run, and bad input (wrong architecture for the
//! weights, corrupt checkpoints, datasets with missing label files, a run directory in use)
//! ending in one clear error with nothing half-written.

mod util;

use std::path::Path;

use util::{assert_clear_error, fixture, run_train, train_args};

fn log_iterations(run: &Path) -> Vec<usize> {
    util::log_column(run, "iteration").into_iter().map(|i| i as usize).collect()
}

#[test]
fn resume_continues_from_the_latest_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let out = run_train(&train_args("--out", run_s, "4"));
    assert!(out.status.success(), "{}", util::stderr(&out));
    assert_eq!(log_iterations(&run), [1, 2, 3, 4]);
    for it in [2, 4] {
        for ext in ["safetensors", "optim", "json"] {
            assert!(run.join(format!("checkpoints/iter_{it}.{ext}")).is_file(), "iter_{it}.{ext}");
        }
    }
    // A crash after iteration 4's checkpoint leaves rows the resumed run will write again.
    let latest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("latest.json")).unwrap()).unwrap();
    assert_eq!(latest["iteration"], 4);
    std::fs::write(run.join("latest.json"), r#"{"checkpoint": "iter_2", "iteration": 2}"#).unwrap();

    let out = run_train(&["train", "--resume", run_s, "--iterations", "6"]);
    assert!(out.status.success(), "{}", util::stderr(&out));
    assert_eq!(
        log_iterations(&run),
        [1, 2, 3, 4, 5, 6],
        "rows after the checkpoint are replaced, not repeated"
    );
    let latest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("latest.json")).unwrap()).unwrap();
    assert_eq!(latest["iteration"], 6);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoints/iter_6.json")).unwrap()).unwrap();
    assert_eq!(state["config"]["iterations"], 6);
    // The resumed run trained on the data it was started with (it once fell back to the
    // default 768x768 crops, 16 times the pixels), and refuses to change it.
    let original = &train_args("--out", run_s, "4");
    let crop = &original[original.iter().position(|a| *a == "--crop").unwrap() + 1];
    let (w, h) = crop.split_once('x').unwrap(); // flags say WxH; the recipe keeps (height, width)
    assert_eq!(
        state["config"]["data"]["crop"],
        serde_json::json!([h.parse::<u64>().unwrap(), w.parse::<u64>().unwrap()])
    );
    assert_clear_error(
        &run_train(&["train", "--resume", run_s, "--iterations", "8", "--crop", "64x64"]),
        &["--crop", "keeps the data it was started with", "config.json"],
    );

    // The finished run's weights load for evaluation.
    let out = run_train(&[
        "eval",
        "--arch",
        "tiny",
        "--weights",
        run.join("checkpoints/iter_6.safetensors").to_str().unwrap(),
        "--synth-size",
        "256x128",
        "--synth-frames",
        "2",
        "--seeds",
        "1000..1001",
    ]);
    assert!(out.status.success(), "{}", util::stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("mIoU"));

    // A second run into the same directory would mix two runs.
    assert_clear_error(&run_train(&train_args("--out", run_s, "2")), &["already holds a run", "--resume"]);
    // Nothing to extend.
    assert_clear_error(
        &run_train(&["train", "--resume", run_s, "--iterations", "6"]),
        &["already at iteration 6"],
    );
}

#[test]
fn resume_without_a_checkpoint_says_so() {
    let dir = tempfile::tempdir().unwrap();
    assert_clear_error(
        &run_train(&["train", "--resume", dir.path().to_str().unwrap()]),
        &[dir.path().to_str().unwrap(), "no checkpoint to resume from"],
    );
}

fn forward(weights: &Path, arch: &str, out: &Path) -> std::process::Output {
    run_train(&[
        "forward",
        "--arch",
        arch,
        "--weights",
        weights.to_str().unwrap(),
        "--input",
        fixture("semask-ref/tiny_input.npy").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

#[test]
fn weights_for_another_architecture_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("y.npz");
    let out = forward(&fixture("semask-ref/tiny.safetensors"), "semask-t", &out_path);
    assert_clear_error(
        &out,
        &["tiny.safetensors", "does not fit this architecture", "missing", "another shape", "--arch"],
    );
    assert!(
        !out_path.exists() && std::fs::read_dir(dir.path()).unwrap().count() == 0,
        "something was written"
    );
}

#[test]
fn corrupt_checkpoints_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("y.npz");
    let cases = [
        (
            "truncated.safetensors",
            std::fs::read(fixture("semask-ref/tiny.safetensors")).unwrap()[..4000].to_vec(),
        ),
        ("truncated.pth", std::fs::read(fixture("semask-ref/tiny.pth")).unwrap()[..4000].to_vec()),
        ("text.pth", b"not a checkpoint\n".to_vec()),
        ("empty.safetensors", Vec::new()),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        assert_clear_error(&forward(&path, "tiny", &out_path), &[name, "cannot read checkpoint"]);
        assert!(!out_path.exists(), "{name}: output written");
    }
    assert_clear_error(&forward(&dir.path().join("absent.pth"), "tiny", &out_path), &["absent.pth"]);
}

#[test]
fn dataset_with_missing_label_files_is_refused_before_any_output() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cityscapes");
    let names = util::write_fake_cityscapes(&root, "val", &["aachen"], 2, (128, 64));
    let missing = root.join("gtFine/val/aachen").join(format!("{}_gtFine_labelIds.png", names[1]));
    std::fs::remove_file(&missing).unwrap();
    let (labels, report) = (dir.path().join("labels"), dir.path().join("report.json"));
    let out = util::eval_tiny_on_cityscapes(
        &root,
        &["--save-labels", labels.to_str().unwrap(), "--report", report.to_str().unwrap()],
    );
    assert_clear_error(&out, &["1 images have no label file", &names[1], "gtFine"]);
    assert!(!labels.exists() && !report.exists(), "outputs written for a refused dataset");

    // No gtFine at all, and no leftImg8bit at all.
    std::fs::remove_dir_all(root.join("gtFine")).unwrap();
    let out = util::eval_tiny_on_cityscapes(&root, &[]);
    assert_clear_error(&out, &["2 images have no label file"]);
    let out = run_train(&[
        "train",
        "--arch",
        "tiny",
        "--out",
        dir.path().join("run").to_str().unwrap(),
        "--dataset",
        "cityscapes",
        "--data-root",
        dir.path().to_str().unwrap(),
    ]);
    assert_clear_error(&out, &["leftImg8bit/train"]);
}

fn max_abs_diff(a: &semask_train::weights::RawTensor, b: &semask_train::weights::RawTensor) -> f32 {
    use semask_train::weights::RawData;
    match (&a.data, &b.data) {
        (RawData::F32(x), RawData::F32(y)) => x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max),
        _ => panic!("not f32"),
    }
}

#[test]
fn init_from_an_official_checkpoint_or_a_swin_backbone_then_trains() {
    use semask_train::weights::Checkpoint;
    let dir = tempfile::tempdir().unwrap();
    let official = Checkpoint::read(&fixture("semask-ref/tiny.safetensors")).unwrap();
    let one_step = |init: &Path, run: &Path| {
        let mut args = train_args("--out", run.to_str().unwrap(), "1");
        // No warm-up, so that the one step has the full learning rate.
        let warmup = args.iter().position(|a| *a == "--warmup").unwrap();
        args[warmup + 1] = "0";
        args.extend(["--init", init.to_str().unwrap(), "--lr", "1e-4", "-v"]);
        let out = run_train(&args);
        assert!(out.status.success(), "{}", util::stderr(&out));
        (Checkpoint::read(&run.join("checkpoints/iter_1.safetensors")).unwrap(), util::stderr(&out))
    };

    // A full SeMask checkpoint: every tensor starts from it, and one step moves them a little.
    let (trained, _) = one_step(&fixture("semask-ref/tiny.safetensors"), &dir.path().join("full"));
    let name = "decode_head.conv_seg.weight";
    let moved = max_abs_diff(&trained.tensors[name], &official.tensors[name]);
    assert!(moved > 1e-6 && moved < 1e-3, "{name} moved by {moved} in one step");

    // An ImageNet Swin classifier with the official Swin names (no backbone. prefix, a head).
    let mut swin = Checkpoint { path: dir.path().join("swin.safetensors"), tensors: Default::default() };
    for (key, tensor) in &official.tensors {
        if let Some(rest) = key.strip_prefix("backbone.")
            && (rest.starts_with("patch_embed.")
                || (rest.starts_with("layers.") && !rest.contains("semantic")))
        {
            swin.tensors.insert(rest.to_string(), tensor.clone());
        }
    }
    let head = official.tensors["decode_head.conv_seg.weight"].clone();
    swin.tensors.insert("head.weight".into(), head);
    swin.write_safetensors(&swin.path, Default::default()).unwrap();
    let (trained, log) = one_step(&swin.path, &dir.path().join("swin"));
    assert!(log.contains("backbone tensors loaded"), "{log}");
    let name = "backbone.patch_embed.proj.weight";
    let moved = max_abs_diff(&trained.tensors[name], &official.tensors[name]);
    assert!(moved > 1e-6 && moved < 1e-3, "{name}: {moved} from the Swin weights after one step");
}

#[test]
fn devices_this_build_lacks_are_explained() {
    let weights = fixture("semask-ref/tiny.safetensors");
    let eval = |device: &str| {
        run_train(&["--device", device, "eval", "--arch", "tiny", "--weights", weights.to_str().unwrap()])
    };
    #[cfg(not(feature = "cuda"))]
    assert_clear_error(&eval("cuda:1"), &["built without CUDA", "--features cuda"]);
    #[cfg(not(feature = "gpu"))]
    assert_clear_error(&eval("gpu:1"), &["built without the gpu feature", "--device cpu"]);
    assert_clear_error(&eval("tpu"), &["unknown device \"tpu\"", "cpu, gpu, gpu:N"]);
}
