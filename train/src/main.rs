//! `semask-train`: the command line of the training crate.
//!
//! Exit status: 0 success, 2 error (the message names the file and the fix).

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use burn::tensor::{Tensor, TensorData};
use clap::{Args, Parser, Subcommand};

use semask_train::arrays::{read_npy, write_npz};
use semask_train::model::{ArchConfig, SeMaskFpn, to_vec};
use semask_train::weights::Checkpoint;

#[derive(Debug, Parser)]
#[command(name = "semask-train", version, about = "SeMask-T FPN in burn: import, train, evaluate, export")]
struct Cli {
    /// More log output on stderr: -v info, -vv debug (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the model on a normalised input tensor (.npy); write logits, logits_up and
    /// sem_logits as float32 arrays (.npz).
    Forward(ForwardArgs),
    /// Train on Cityscapes or synthetic scenes (AdamW, poly schedule, CE + 0.4 CE(semantic)).
    Train(cli::TrainArgs),
    /// mIoU, per-class IoU and pixel accuracy of a checkpoint or an ONNX model over a dataset.
    Eval(cli::EvalArgs),
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

fn forward(args: ForwardArgs) -> anyhow::Result<()> {
    let arch = args.arch.resolve()?;
    let device = semask_train::cpu();
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    let result = match cli.command {
        Command::Forward(args) => forward(args),
        Command::Train(args) => cli::train(args),
        Command::Eval(args) => cli::eval(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
