//! `semask-edge build-engine`: builds (or finds in the cache) the TensorRT engine of a model at a
//! precision, ahead of time, and optionally copies it with its sidecar to `--out`, for
//! `run -m FILE.engine` or for another machine with the same GPU and TensorRT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use semask_edge::backend::tensorrt::engine_cache::sidecar_path;
use semask_edge::backend::{self, BackendKind};
use semask_edge::calibration::Precision;
use semask_edge::files::{InputFiles, InputRole, write_atomically};
use semask_edge::model::OnnxModel;

use super::{ModelArgs, TensorRtArgs};

pub const LONG_ABOUT: &str = "\
Build the TensorRT engine of a model at a precision now, rather than on its first run (a build
takes minutes on a Jetson). The engine goes to the engine cache, where `run` and `bench` find
it; --out also writes it (with FILE.json, its sidecar: what it was built from and the model's
classes, mean and std) for `run -m FILE.engine` or for another machine with the same GPU and
TensorRT version.

Examples:
  semask-edge build-engine -m semask-t.onnx --precision int8
  semask-edge build-engine -m semask-t.onnx --precision fp16 --trt-opt-level 5 --out semask-t.fp16.engine
  semask-edge run -m semask-t.fp16.engine -i v4l2:///dev/video0 -o live.mp4";

#[derive(Debug, Args)]
pub struct BuildEngineArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Precision: fp32; fp16; int8 (the model's Q/DQ form, or with --trt-int8 calibrated its
    /// calibration cache) [default: the device profile's].
    #[arg(long, value_name = "PRECISION", value_parser = super::choice::<Precision>())]
    pub precision: Option<Precision>,

    #[command(flatten)]
    pub tensorrt: TensorRtArgs,

    /// Also write the engine to FILE (and its sidecar to FILE.json).
    #[arg(long, value_name = "FILE.engine")]
    pub out: Option<PathBuf>,
}

pub fn build_engine(args: BuildEngineArgs, ctx: &super::Context) -> anyhow::Result<ExitCode> {
    if let Err(reason) = backend::tensorrt::probe() {
        anyhow::bail!("build-engine needs TensorRT, which is unavailable here: {reason}");
    }
    let overrides = args.model.overrides()?;
    let model = OnnxModel::open_or_builtin(args.model.model.as_deref(), &overrides)?;
    if let Some(out) = &args.out {
        let mut inputs = InputFiles::default();
        inputs.add_all(model.path(), InputRole::Model);
        inputs.check_outputs(&[("--out", out), ("--out", &sidecar_path(out))], &[])?;
    }
    let requested = args.model.input_size.or(ctx.profile.input_size.filter(|_| model.has_dynamic_input()));
    let input_size = model.input_size(requested, &ctx.limits)?;
    let (precision, precision_policy) = super::precision_choice(args.precision, ctx);
    let options = backend::BackendOptions {
        precision,
        precision_policy,
        tensorrt: args.tensorrt.options(ctx),
        ..backend::BackendOptions::new(BackendKind::TensorRt, input_size)
    };
    let trt = backend::create(&model, &options)?;
    let engine = trt
        .properties()
        .into_iter()
        .find(|(k, _)| *k == "engine")
        .map(|(_, v)| PathBuf::from(v))
        .context("the TensorRT backend did not say where its engine is")?;
    println!("{}: {}", trt.describe(), engine.display());
    if let Some(out) = &args.out {
        for (from, to) in [(engine.clone(), out.clone()), (sidecar_path(&engine), sidecar_path(out))] {
            let bytes = fs_err::read(&from)?;
            write_atomically(&to, &bytes).with_context(|| format!("cannot write {}", to.display()))?;
        }
        println!("written to {} (and {})", out.display(), sidecar_path(out).display());
    }
    Ok(ExitCode::SUCCESS)
}
