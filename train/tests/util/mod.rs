//! Helpers shared by the training crate's integration tests: the workspace fixtures and Python
//! references (shared with the runtime's tests), the binary under test, and a small
//! Cityscapes-layout dataset made from `synth://` frames.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use semask_edge::frame::{LabelMap, Rgb8Image};
use semask_edge::model::classes::CITYSCAPES_LABEL_IDS;
use semask_edge::source::synth::{SynthConfig, SynthScene};

pub mod overfit;
pub mod parity;
pub mod step;

#[path = "../../../tests/util/reference.rs"]
mod reference;
#[allow(unused_imports)] // not every test binary uses every helper
pub use reference::*;

/// Runs `semask-train` with `args`.
pub fn run_train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_semask-train")).args(args).output().expect("cannot start semask-train")
}

/// `semask-train eval` of the tiny fixture weights on the Cityscapes-layout folder `root`,
/// with `extra` flags.
pub fn eval_tiny_on_cityscapes(root: &Path, extra: &[&str]) -> Output {
    let weights = fixture("semask-ref/tiny.safetensors");
    let mut args = vec!["eval", "--arch", "tiny", "--weights", weights.to_str().unwrap()];
    args.extend(["--dataset", "cityscapes", "--data-root", root.to_str().unwrap()]);
    args.extend_from_slice(extra);
    run_train(&args)
}

/// A short training run of the tiny config on small synthetic crops.
pub fn train_args<'a>(run_flag: &'a str, run: &'a str, iterations: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--arch",
        "tiny",
        run_flag,
        run,
        "--iterations",
        iterations,
        "--batch",
        "2",
        "--crop",
        "128x64",
        "--synth-size",
        "256x128",
        "--synth-frames",
        "4",
        "--train-seeds",
        "0..2",
        "--warmup",
        "2",
        "--checkpoint-every",
        "2",
        "--eval-every",
        "0",
        "--workers",
        "1",
    ]
}

/// The values of `column` in a run directory's `log.csv`, one per logged iteration.
pub fn log_column(run: &Path, column: &str) -> Vec<f64> {
    let path = run.join("log.csv");
    let log = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut rows = log.lines();
    let header = rows.next().unwrap_or_else(|| panic!("{} is empty", path.display()));
    let index =
        header.split(',').position(|c| c == column).unwrap_or_else(|| panic!("no {column} in {header}"));
    rows.map(|row| row.split(',').nth(index).unwrap().parse().unwrap()).collect()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a failed run whose error names every one of `needles`, without a panic.
pub fn assert_clear_error(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected a failure, got success:\n{err}");
    assert!(!err.contains("panicked"), "panicked instead of a clear error:\n{err}");
    for needle in needles {
        assert!(err.contains(needle), "error does not mention {needle:?}:\n{err}");
    }
}

/// Writes `leftImg8bit/<split>/<city>/<city>_000000_0000NN_leftImg8bit.png` and the matching
/// `gtFine/..._gtFine_labelIds.png` for `per_city` synthetic frames in each of `cities`; returns
/// the frame names. The bottom rows are the ego vehicle (label id 1, not evaluated), as in
/// Cityscapes.
pub fn write_fake_cityscapes(
    root: &Path,
    split: &str,
    cities: &[&str],
    per_city: usize,
    size: (usize, usize),
) -> Vec<String> {
    let mut names = Vec::new();
    let (mut image, mut labels) = (Rgb8Image::default(), LabelMap::default());
    for (c, city) in cities.iter().enumerate() {
        let images = root.join("leftImg8bit").join(split).join(city);
        let gt = root.join("gtFine").join(split).join(city);
        std::fs::create_dir_all(&images).unwrap();
        std::fs::create_dir_all(&gt).unwrap();
        let mut scene = SynthScene::new(SynthConfig {
            width: size.0,
            height: size.1,
            seed: 50 + c as u64,
            ..Default::default()
        });
        for i in 0..per_city {
            scene.render(i as u64 * 20, &mut image, &mut labels);
            let name = format!("{city}_000000_{:06}", i * 20 + 19);
            image::RgbImage::from_raw(size.0 as u32, size.1 as u32, image.data.clone())
                .unwrap()
                .save(images.join(format!("{name}_leftImg8bit.png")))
                .unwrap();
            let ego_rows = size.1 / 16;
            let ids: Vec<u8> = labels
                .data
                .iter()
                .enumerate()
                .map(|(p, &t)| {
                    if p / size.0 >= size.1 - ego_rows {
                        1
                    } else {
                        CITYSCAPES_LABEL_IDS.get(t as usize).copied().unwrap_or(0)
                    }
                })
                .collect();
            image::GrayImage::from_raw(size.0 as u32, size.1 as u32, ids)
                .unwrap()
                .save(gt.join(format!("{name}_gtFine_labelIds.png")))
                .unwrap();
            names.push(name);
        }
    }
    names
}

/// `model` with dropout and drop-path off (batch statistics stay on): a training step that
/// depends only on the weights and the batch, for comparing devices.
pub fn without_dropout(model: semask_train::model::SeMaskFpn) -> semask_train::model::SeMaskFpn {
    use burn::module::{Flag, Module, ModuleMapper, Param};
    struct Off(Vec<String>);
    impl ModuleMapper for Off {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.push(name.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.pop();
        }
        fn map_flag(&mut self, flag: Param<Flag>) -> Param<Flag> {
            if self.0.iter().any(|name| name.contains("drop")) { flag.with_value(false) } else { flag }
        }
    }
    model.map(&mut Off(Vec::new()))
}

/// A batch of `size` synthetic driving frames at `width`x`height` (normalised, train ids).
pub fn synth_batch(size: usize, width: usize, height: usize) -> semask_train::data::loader::Batch {
    use semask_train::data::Dataset;
    let data = semask_train::data::Synth::new(
        SynthConfig { width, height, ..Default::default() },
        vec![5],
        size,
        20,
    );
    let spec = semask_edge::preprocess::PreprocSpec::imagenet(width, height);
    let mut sample = semask_train::data::Sample::default();
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    let mut input = vec![0.0; spec.input_len()];
    for i in 0..size {
        data.get(i, &mut sample).unwrap();
        semask_edge::preprocess::Preprocessor::new(spec).run(&sample.image, &mut input);
        images.extend_from_slice(&input);
        labels.extend_from_slice(&sample.labels.data);
    }
    semask_train::data::loader::Batch { iteration: 0, size, height, width, images, labels }
}

/// Each parameter's value by official name (the checkpoint's float tensors).
pub fn parameters(model: &semask_train::model::SeMaskFpn) -> std::collections::BTreeMap<String, Vec<f32>> {
    use semask_train::weights::{Checkpoint, RawData};
    Checkpoint::from_model(model)
        .tensors
        .into_iter()
        .filter_map(|(name, t)| match t.data {
            RawData::F32(values) if !name.contains(".running_") => Some((name, values)),
            _ => None,
        })
        .collect()
}

/// The calibration pass's two engines on the built-in model (SeMask tiny at 512x256) and one
/// synthetic frame: tract, and burn on `device` evaluating the graph node by node. Returns the
/// largest difference over every node output, relative to the output's largest value (at
/// least 1), and the tensor where it is.
pub fn compare_calibration_taps(device: &burn::tensor::Device) -> (f32, String) {
    use semask_train::quantize::calibrate::{Tap, TensorTap, activation_names};
    use semask_train::quantize::device_tap::DeviceTap;
    let proto = semask_train::onnx::graph::read_model(
        &workspace_root().join("calibration/semask-tiny-synth/model.onnx"),
    )
    .unwrap();
    let names = activation_names(proto.graph.as_ref().unwrap());
    let input = synth_batch(1, 512, 256).images;
    let collect = |tap: &dyn Tap| {
        let mut values: Vec<Option<Vec<f32>>> = vec![None; names.len()];
        tap.run(&input, &mut |i, v| values[i] = Some(v.to_vec())).unwrap();
        values
    };
    let reference = collect(&TensorTap::new(&proto, &names).unwrap());
    let ours = collect(&DeviceTap::new(&proto, &names, device).unwrap());
    let mut worst = (0.0f32, String::new());
    for ((name, r), o) in names.iter().zip(&reference).zip(&ours) {
        let (Some(r), Some(o)) = (r, o) else { panic!("{name}: observed by one engine only") };
        assert_eq!(r.len(), o.len(), "{name}: sizes");
        let scale = r.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let diff = r.iter().zip(o).fold(0.0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        if diff > worst.0 {
            worst = (diff, name.clone());
        }
    }
    worst
}
