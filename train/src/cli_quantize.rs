//! `semask-train quantize`: int8 artifacts of an fp32 export, calibrated on frames from any
//! runtime input, with their accuracy against fp32 measured on held-out data.

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use prost::Message;
use semask_train::device::ComputeDevice;

use semask_edge::calibration::{
    CACHE_FILE, MANIFEST_FILE, QDQ_MODEL, QOP_MODEL, REPORT_FILE, TENSORS_DIR, TensorManifest,
};
use semask_edge::files::{InputFiles, InputRole, write_atomically};
use semask_edge::frame::Frame;
use semask_edge::model::OnnxModel;
use semask_edge::model::metadata::{KEY_FP32_SHA256, KEY_QUANTIZATION};
use semask_edge::pipeline::{Segmenter, SegmenterOptions};
use semask_edge::preprocess::Preprocessor;
use semask_edge::source::Captured;
use semask_train::eval;
use semask_train::onnx::graph::{read_model, write_model};
use semask_train::quantize::{self, Method};

use crate::cli::{DataArgs, parse_seeds};

/// `--method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// KL-divergence threshold search over a 2048-bin histogram (TensorRT's EntropyCalibration2).
    Entropy,
    /// A percentile of |x| (--percentile).
    Percentile,
    /// The largest |x| seen.
    Minmax,
}

#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// The fp32 ONNX model (a `semask-train export`, static input size).
    #[arg(long, value_name = "FILE")]
    model: PathBuf,

    /// Calibration frames: any runtime input (image folder, .mp4, .mjpeg, synth://...)
    /// [default: synth:// drives at the model's input size, seeds 100 and up].
    #[arg(long, value_name = "URI")]
    calib: Option<String>,

    /// Number of calibration frames.
    #[arg(long, value_name = "N", default_value_t = 64)]
    count: usize,

    /// Take every K-th frame of the calibration input (neighbouring video frames are nearly
    /// the same) [default: 15 for the default synth:// input, else 1].
    #[arg(long, value_name = "K")]
    every: Option<usize>,

    /// How activation ranges are chosen.
    #[arg(long, value_enum, default_value = "entropy")]
    method: MethodArg,

    /// Percentile for --method percentile.
    #[arg(long, value_name = "P", default_value_t = 99.99)]
    percentile: f64,

    /// TensorRT version of the target, as TensorRT writes it in the cache header: 8502 (8.5.2,
    /// JetPack 5.1), 8602 (8.6.2, JetPack 6.0), 100300 (10.3, JetPack 6.1/6.2). TensorRT
    /// ignores a cache whose version differs from its own.
    #[arg(long, value_name = "VERSION", default_value_t = 100300)]
    trt_version: u32,

    /// Held-out data for the accuracy report (default: synth:// drives 1000..1002).
    #[command(flatten)]
    data: DataArgs,

    /// Cityscapes split for the report.
    #[arg(long, default_value = "val")]
    split: String,

    /// Synthetic drives for the report (seeds A..B).
    #[arg(long, value_name = "A..B", default_value = "1000..1002", value_parser = parse_seeds)]
    eval_seeds: Range<u64>,

    /// Skip the accuracy report (report.json then holds the calibration only).
    #[arg(long)]
    no_eval: bool,

    /// Output folder (conventionally calibration/<model name>/).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// `device`: where the calibration pass runs; `None` for tract on the CPU (`--device cpu`).
pub fn run(args: QuantizeArgs, device: Option<ComputeDevice>) -> anyhow::Result<()> {
    // None of the artifacts may overwrite the model they are made from (`--out` its folder).
    let mut inputs = InputFiles::default();
    inputs.add(&args.model, InputRole::Model);
    for name in [QDQ_MODEL, QOP_MODEL, CACHE_FILE, REPORT_FILE] {
        inputs.check_output(&args.out.join(name), "--out")?;
    }
    let proto = read_model(&args.model)?;
    let model = OnnxModel::open(&args.model, &Default::default())?;
    let segmenter = Segmenter::new(&model, &SegmenterOptions::default())?;
    let spec = *segmenter.preproc_spec();
    let method = match args.method {
        MethodArg::Entropy => Method::Entropy,
        MethodArg::Percentile if args.percentile > 0.0 && args.percentile <= 100.0 => {
            Method::Percentile(args.percentile)
        }
        MethodArg::Percentile => {
            anyhow::bail!("--percentile {}: give a value in (0, 100], e.g. 99.99", args.percentile)
        }
        MethodArg::Minmax => Method::MinMax,
    };
    if args.count == 0 {
        anyhow::bail!("--count 0: calibration needs at least one frame");
    }
    let every = args.every.unwrap_or(if args.calib.is_none() { 15 } else { 1 }).max(1);
    let calib = args.calib.clone().unwrap_or_else(|| {
        format!(
            "synth://?seed=100&frames={}&size={}x{}",
            args.count * every,
            spec.input_width,
            spec.input_height
        )
    });

    // Calibration inputs, pre-processed exactly as the runtime will.
    let mut source = semask_edge::source::open(Some(&calib), &Default::default())?;
    let mut preprocessor = Preprocessor::new(spec);
    let mut frame = Frame::default();
    let (mut inputs, mut bad, mut seen) = (Vec::new(), 0usize, 0usize);
    while inputs.len() < args.count {
        match source.next(&mut frame) {
            Ok(Captured::Frame) => {
                seen += 1;
                if (seen - 1) % every == 0 {
                    let mut input = vec![0f32; spec.input_len()];
                    preprocessor.run(&frame.image, &mut input);
                    inputs.push(input);
                }
            }
            Ok(Captured::Timeout) => continue,
            Ok(Captured::EndOfStream) => break,
            Err(e) if e.is_bad_frame() => {
                log::warn!("calibration input: {e} (skipped)");
                bad += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if inputs.is_empty() {
        anyhow::bail!("--calib {calib}: no frame could be read");
    }
    if inputs.len() < args.count {
        log::warn!(
            "--calib {calib}: only {} frames (asked for {}); calibrating on those",
            inputs.len(),
            args.count
        );
    }
    log::info!("calibrating on {} frames of {calib} (every {every}; {bad} unreadable)", inputs.len());

    let passes = if method == Method::MinMax { 1 } else { 2 };
    let progress = semask_edge::progress::bar(Some((inputs.len() * passes) as u64), "frames", true);
    progress.set_message(format!("calibration ({})", method.name()));
    let quantized = quantize::quantize(
        &proto,
        &inputs,
        method,
        args.trt_version,
        device.as_ref().map(|d| &d.device),
        &|| progress.inc(1),
    )?;
    progress.finish_and_clear();

    // The artifacts.
    fs_err::create_dir_all(args.out.join(TENSORS_DIR))?;
    // The artifacts name the fp32 model they were made from, so that the runtime can refuse
    // to run them for another model (`--precision int8` finds them by folder name).
    let fp32_sha256 = semask_edge::model::sha256_hex(&fs_err::read(&args.model)?);
    let metadata_note = |mut m: tract_onnx::pb::ModelProto, form: &str| {
        m.metadata_props.push(tract_onnx::pb::StringStringEntryProto {
            key: KEY_QUANTIZATION.into(),
            value: format!(
                "int8 {form}; {} calibration on {} frames of {calib}",
                method.name(),
                inputs.len()
            ),
        });
        m.metadata_props.retain(|e| e.key != KEY_FP32_SHA256);
        m.metadata_props.push(tract_onnx::pb::StringStringEntryProto {
            key: KEY_FP32_SHA256.into(),
            value: fp32_sha256.clone(),
        });
        m
    };
    let qdq_path = args.out.join(QDQ_MODEL);
    let qop_path = args.out.join(QOP_MODEL);
    write_model(&qdq_path, &metadata_note(quantized.qdq.clone(), "Q/DQ (TensorRT explicit quantization)"))?;
    write_model(&qop_path, &metadata_note(quantized.qop.clone(), "QOperator (MatMulInteger/ConvInteger)"))?;
    write_atomically(&args.out.join(CACHE_FILE), quantized.cache.to_text().as_bytes())
        .with_context(|| format!("cannot write {}", args.out.join(CACHE_FILE).display()))?;
    let files = write_tensors(&args.out.join(TENSORS_DIR), &inputs)?;
    let manifest = TensorManifest {
        input: model.input.name.clone(),
        shape: vec![1, 3, spec.input_height, spec.input_width],
        dtype: "float32".into(),
        mean: spec.mean,
        std: spec.std,
        channel_order: spec.channel_order.to_string(),
        source: format!("{calib} (every {every} frames)"),
        files,
    };
    write_atomically(
        &args.out.join(TENSORS_DIR).join(MANIFEST_FILE),
        (serde_json::to_string_pretty(&manifest)? + "\n").as_bytes(),
    )?;

    let mut report = serde_json::json!({
        "model": args.model.display().to_string(),
        "method": method.name(),
        "calibration": {"source": calib, "every": every, "frames": inputs.len(), "unreadable": bad},
        "trt_version": args.trt_version,
        "quantized_products": quantized.census(),
        "kept_float": "LayerNormalization, Softmax, GELU (Erf), residual Add, attention products of two activations",
        "files": {"qdq": QDQ_MODEL, "qop": QOP_MODEL, "cache": CACHE_FILE, "tensors": format!("{TENSORS_DIR}/{MANIFEST_FILE}")},
        "model_bytes": {
            "fp32": fs_err::metadata(&args.model)?.len(),
            "qdq": quantized.qdq.encoded_len(),
            "qop": quantized.qop.encoded_len(),
        },
    });
    if !args.no_eval {
        report["accuracy"] = accuracy_report(&args, &[&args.model, &qdq_path, &qop_path])?;
    }
    let report_path = args.out.join(REPORT_FILE);
    write_atomically(&report_path, (serde_json::to_string_pretty(&report)? + "\n").as_bytes())?;
    println!("{}", serde_json::to_string_pretty(&report["accuracy"])?);
    println!("wrote {}", args.out.display());
    Ok(())
}

/// `tensors/000000.f32`...: raw little-endian f32, NCHW.
fn write_tensors(dir: &Path, inputs: &[Vec<f32>]) -> anyhow::Result<Vec<String>> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let name = format!("{i:06}.f32");
            let bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
            write_atomically(&dir.join(&name), &bytes)
                .with_context(|| format!("cannot write {}", dir.join(&name).display()))?;
            Ok(name)
        })
        .collect()
}

/// mIoU and pixel accuracy of fp32, Q/DQ and QOperator on the held-out data, and how often the
/// int8 labels agree with the fp32 ones.
fn accuracy_report(args: &QuantizeArgs, paths: &[&Path; 3]) -> anyhow::Result<serde_json::Value> {
    let dataset = args.data.open(&args.split, &args.eval_seeds)?;
    let progress = semask_edge::progress::bar(Some((dataset.len() * 3) as u64), "images", true);
    let mut results = Vec::new();
    for (name, path) in ["fp32", "qdq", "qop"].iter().zip(paths) {
        progress.set_message(format!("evaluating {name}"));
        let mut labels = Vec::with_capacity(dataset.len());
        let metrics = eval::evaluate(&mut eval::onnx_labeller(path)?, dataset.as_ref(), |_, frame| {
            labels.push(frame.labels.data.clone());
            progress.inc(1);
            Ok(())
        })?;
        results.push((*name, metrics, labels));
    }
    progress.finish_and_clear();
    let (_, fp32, fp32_labels) = &results[0];
    let mut out = serde_json::json!({"dataset": dataset.describe(), "images": dataset.len()});
    for (name, metrics, labels) in &results {
        let mut entry = serde_json::json!({
            "miou": metrics.miou,
            "pixel_accuracy": metrics.pixel_accuracy,
        });
        if *name != "fp32" {
            entry["agreement_with_fp32"] = quantize::agreement(labels, fp32_labels).into();
            entry["miou_drop_points"] = (100.0 * (fp32.miou - metrics.miou)).into();
        }
        out[*name] = entry;
    }
    Ok(out)
}
