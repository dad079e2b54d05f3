//! `semask-train`: the command line of the training crate.
//!
//! Exit status: 0 success, 2 error (the message names the file and the fix).

mod cli;
mod cli_export;
mod cli_quantize;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use burn::tensor::{Tensor, TensorData};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use semask_train::arrays::{read_npy, write_npz};
use semask_train::device::{self, ComputeDevice, DeviceList, DeviceName};
use semask_train::model::{ArchConfig, SeMaskFpn, to_vec};
use semask_train::weights::Checkpoint;

const FORWARD_EXAMPLES: &str = "Examples:
  # compare with the official PyTorch outputs of the same input
  semask-train forward --arch semask-t --weights semask_tiny_fpn_cityscapes.pth \\
      --input x.npy --out y.npz";

const TRAIN_EXAMPLES: &str = "Examples:
  # the official Cityscapes recipe (80k iterations, batch 8, crops 768x768), from ImageNet Swin-T
  semask-train train --dataset cityscapes --data-root ~/cityscapes \\
      --init swin_tiny_patch4_window7_224.pth --out runs/cityscapes
  # a small model on synthetic scenes (no download), evaluated every 250 iterations
  semask-train train --arch tiny --out runs/synth --iterations 3000 --batch 4 --crop 256x128 \\
      --warmup 150 --eval-every 250 --checkpoint-every 500
  # continue after Ctrl-C or a crash (from the latest checkpoint), or extend a finished run
  semask-train train --resume runs/synth [--iterations 6000]

A run directory holds config.json, log.csv (loss, lr, accuracy, val mIoU per iteration),
checkpoints/iter_N.{safetensors,optim,json} and latest.json. Checkpoints use the official
parameter names: they load in the official code and in `eval`/`forward`.";

const EVAL_EXAMPLES: &str = "Examples:
  semask-train eval --weights runs/synth/checkpoints/iter_3000.safetensors --arch tiny
  # Cityscapes val, with label-id PNGs for cityscapesscripts and a JSON report
  semask-train eval --weights semask_tiny_fpn_cityscapes.pth --dataset cityscapes \\
      --data-root ~/cityscapes --save-labels pred/ --report val.json
  # an ONNX export, through the runtime (exact upsampling)
  semask-train eval --onnx model.onnx --dataset cityscapes --data-root ~/cityscapes";

const EXPORT_EXAMPLES: &str = "Examples:
  # a trained checkpoint at the Cityscapes network size
  semask-train export --arch semask-t --weights runs/city/checkpoints/iter_80000.safetensors \\
      --input-size 1024x512 --out semask-t.onnx
  # the full-size architecture with fresh weights, for benchmarks
  semask-train export --arch semask-t --random-init --out semask-t-random.onnx
  # with the upsampled and semantic logits too (to compare against PyTorch)
  semask-train export --arch tiny --weights tiny.safetensors --input-size 224x224 \\
      --with-upsampled --with-semantic --out tiny.onnx

The graph has one input `input` [1, 3, H, W] (RGB normalised with the ImageNet mean/std) and
the output `logits` [1, K, H/4, W/4]; `semask-edge run --model FILE` reads its metadata
(classes, palette, mean, std) without flags.";

const QUANTIZE_EXAMPLES: &str = "Examples:
  # calibrate on 64 synthetic frames, report the accuracy on held-out synthetic drives
  semask-train quantize --model semask-t.onnx --out calibration/semask-t/
  # on frames of a recorded drive, for a Jetson with TensorRT 8.5.2 (JetPack 5.1)
  semask-train quantize --model semask-t.onnx --calib drive.mp4 --every 10 --count 200 \\
      --trt-version 8502 --out calibration/semask-t/
  # percentile ranges; report on Cityscapes val
  semask-train quantize --model semask-t.onnx --method percentile --percentile 99.99 \\
      --dataset cityscapes --data-root ~/cityscapes --out calibration/semask-t/

Writes model.qdq.onnx, model.qop.onnx, calib.cache, tensors/ and report.json into --out.
`semask-edge run --model semask-t.onnx --precision int8` then runs model.qop.onnx from
calibration/semask-t/.";

#[derive(Debug, Parser)]
#[command(name = "semask-train", version, about = "SeMask-T FPN in burn: import, train, evaluate, export")]
struct Cli {
    /// More log output on stderr: -v info, -vv debug (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Where the model computes: cpu (burn's flex backend), gpu or gpu:N (burn's wgpu backend:
    /// Vulkan, Metal, DX12; `semask-train devices` lists the adapters), cuda:N (builds with the
    /// `cuda` feature). `train` takes a list for data-parallel training: gpu:0,gpu:1.
    #[arg(long, value_name = "DEVICE", default_value = "cpu", global = true)]
    device: DeviceList,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the model on a normalised input tensor (.npy); write logits, logits_up and
    /// sem_logits as float32 arrays (.npz).
    #[command(after_help = FORWARD_EXAMPLES)]
    Forward(ForwardArgs),
    /// Train on Cityscapes or synthetic scenes (AdamW, poly schedule, CE + 0.4 CE(semantic)).
    #[command(after_help = TRAIN_EXAMPLES)]
    Train(cli::TrainArgs),
    /// mIoU, per-class IoU and pixel accuracy of a checkpoint or an ONNX model over a dataset.
    #[command(after_help = EVAL_EXAMPLES)]
    Eval(cli::EvalArgs),
    /// Write the model as a static-shape ONNX file (opset 17) with the runtime's metadata.
    #[command(after_help = EXPORT_EXAMPLES)]
    Export(cli_export::ExportArgs),
    /// Int8 artifacts of an fp32 export: Q/DQ ONNX (TensorRT), QOperator ONNX (tract int8),
    /// TensorRT calibration cache, calibration tensors, and their accuracy against fp32.
    #[command(after_help = QUANTIZE_EXAMPLES)]
    Quantize(cli_quantize::QuantizeArgs),
    /// The devices `--device` can name: the CPU and every GPU adapter (gpu:N), best first.
    Devices,
}

/// Which architecture: a preset or a JSON file.
#[derive(Debug, Clone, Args)]
pub struct ArchArgs {
    /// Architecture preset: semask-t (Cityscapes SeMask-T FPN) or tiny (the fixtures').
    #[arg(long, value_name = "NAME", default_value = "semask-t", conflicts_with = "arch_config")]
    pub arch: String,

    /// Architecture JSON file: {"embed_dim", "depths", "num_heads", "window_size",
    /// "num_classes", "decoder_channels", "num_sem_blocks"}.
    #[arg(long, value_name = "FILE")]
    pub arch_config: Option<PathBuf>,
}

impl ArchArgs {
    pub fn resolve(&self) -> anyhow::Result<ArchConfig> {
        Ok(match &self.arch_config {
            Some(path) => ArchConfig::from_file(path)?,
            None => ArchConfig::preset(&self.arch)?,
        })
    }
}

#[derive(Debug, Args)]
struct ForwardArgs {
    #[command(flatten)]
    arch: ArchArgs,

    /// Weights: .safetensors or PyTorch .pth with the official parameter names.
    #[arg(long, value_name = "FILE")]
    weights: PathBuf,

    /// Normalised input, float32 [1, 3, H, W] (.npy).
    #[arg(long, value_name = "X.npy")]
    input: PathBuf,

    /// Output arrays (.npz): logits, logits_up, sem_logits.
    #[arg(long, value_name = "Y.npz")]
    out: PathBuf,
}

fn forward(args: ForwardArgs, device: burn::tensor::Device) -> anyhow::Result<()> {
    let arch = args.arch.resolve()?;
    let checkpoint = Checkpoint::read(&args.weights)?;
    let model = checkpoint.load_into(SeMaskFpn::new(&arch, &device), &device)?;
    let (shape, values) =
        read_npy(&args.input).with_context(|| format!("cannot read --input {}", args.input.display()))?;
    let [b, c, h, w]: [usize; 4] =
        shape.clone().try_into().ok().filter(|s: &[usize; 4]| s[1] == 3).ok_or_else(|| {
            anyhow::anyhow!("--input {} is {shape:?}; expected [B, 3, H, W]", args.input.display())
        })?;
    let x = Tensor::<4>::from_data(TensorData::new(values, [b, c, h, w]), &device);
    let out = model.forward(x);
    let logits_up = SeMaskFpn::logits_up(&out.logits, h, w);
    let (ls, lv) = to_vec(&out.logits);
    let (us, uv) = to_vec(&logits_up);
    let (ss, sv) = to_vec(&out.sem_logits);
    write_npz(&args.out, &[("logits", &ls, &lv), ("logits_up", &us, &uv), ("sem_logits", &ss, &sv)])?;
    log::info!("wrote {}: logits {ls:?}, logits_up {us:?}, sem_logits {ss:?}", args.out.display());
    Ok(())
}

/// Opens the devices of `--device` and says which they are.
fn open_devices(list: &DeviceList) -> anyhow::Result<Vec<ComputeDevice>> {
    let devices = device::open(list)?;
    for d in &devices {
        if d.name == DeviceName::Cpu {
            log::info!("computing on {}", d.info);
        } else {
            eprintln!("computing on {}", d.info);
        }
    }
    Ok(devices)
}

/// The one device of a command that does not split its work.
fn one_device(list: &DeviceList) -> anyhow::Result<ComputeDevice> {
    list.single()?;
    Ok(open_devices(list)?.remove(0))
}

fn list_devices() -> anyhow::Result<()> {
    println!("{}", device::cpu().info);
    let adapters = device::adapters();
    for adapter in &adapters {
        println!("{}", adapter.info);
    }
    if adapters.is_empty() {
        if cfg!(feature = "gpu") {
            println!(
                "no GPU adapter (Vulkan, Metal, DX12): install the GPU's Vulkan driver (Debian: \
                 mesa-vulkan-drivers, also for the software lavapipe device), check with `vulkaninfo --summary`"
            );
        } else {
            println!("no GPUs: this semask-train was built without the gpu feature");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let data_flags_given: Vec<&str> = matches
        .subcommand_matches("train")
        .map(|m| {
            cli::DATA_FLAGS
                .into_iter()
                .filter(|id| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
                .collect()
        })
        .unwrap_or_default();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    let result = match cli.command {
        Command::Forward(args) => one_device(&cli.device).and_then(|d| forward(args, d.device)),
        Command::Train(args) => {
            open_devices(&cli.device).and_then(|devices| cli::train(args, &data_flags_given, &devices))
        }
        Command::Eval(args) => one_device(&cli.device).and_then(|device| cli::eval(args, device)),
        Command::Export(args) => one_device(&cli.device).and_then(|d| cli_export::run(args, d.device)),
        // On the CPU the calibration runs in tract (any ONNX graph); elsewhere with burn.
        Command::Quantize(args) => one_device(&cli.device)
            .and_then(|d| cli_quantize::run(args, (d.name != DeviceName::Cpu).then_some(d))),
        Command::Devices => list_devices(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
