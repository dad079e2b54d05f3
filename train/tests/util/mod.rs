//! Helpers shared by the training crate's integration tests: the workspace fixtures and Python
//! references (shared with the runtime's tests), the binary under test, and a small
//! Cityscapes-layout dataset made from `synth://` frames.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use semask_edge::frame::{LabelMap, Rgb8Image};
use semask_edge::model::classes::CITYSCAPES_LABEL_IDS;
use semask_edge::source::synth::{SynthConfig, SynthScene};

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
