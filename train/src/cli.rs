//! `semask-train train` and `semask-train eval`.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::Args;

use semask_edge::files::write_atomically;
use semask_edge::frame::Size;
use semask_edge::named::Named;
use semask_edge::preprocess::PreprocSpec;
use semask_edge::sink::Sink;
use semask_edge::sink::images::{LabelIds, PngDirSink, PngKind};
use semask_edge::source::synth::SynthConfig;
use semask_train::data::augment::AugmentConfig;
use semask_train::data::{Cityscapes, DataRecipe, Dataset, DatasetKind, Synth};
use semask_train::device::{ComputeDevice, DeviceName};
use semask_train::eval::{self, Labeller};
use semask_train::model::SeMaskFpn;
use semask_train::training::{self, RunDir, TrainConfig};
use semask_train::weights::Checkpoint;

use crate::ArchArgs;

#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Dataset.
    #[arg(long, value_name = "KIND", default_value = "synth", value_parser = choice::<DatasetKind>())]
    pub dataset: DatasetKind,

    /// Cityscapes root (holding leftImg8bit/ and gtFine/).
    #[arg(long, value_name = "DIR", required_if_eq("dataset", "cityscapes"))]
    pub data_root: Option<PathBuf>,

    /// Synthetic frame size WxH.
    #[arg(long, value_name = "WxH", default_value = "512x256", value_parser = parse_wxh)]
    pub synth_size: (usize, usize),

    /// Frames per synthetic drive (taken every 15 frames of the drive).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub synth_frames: usize,
}

/// clap's parser for one of the libraries' closed choices ([`Named`]): its names are the possible
/// values, listed in `--help` with each one's help line (as in `semask-edge`'s CLI).
pub fn choice<T: Named + Send + Sync>() -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser;
    let values = T::ALL.iter().map(|v| clap::builder::PossibleValue::new(v.name()).help(v.help()));
    clap::builder::PossibleValuesParser::new(values).try_map(|name| semask_edge::named::parse::<T>(&name))
}

/// `512x256` → `(512, 256)`: a size (WxH, [`Size`], like every size), as `(width, height)`.
fn parse_wxh(text: &str) -> Result<(usize, usize), String> {
    text.parse::<Size>().map(|s| (s.width, s.height)).map_err(|e| e.to_string())
}

/// `256x128` → `(128, 256)`: a size (WxH, [`Size`]), as the `(height, width)` of a tensor.
pub fn parse_size_hw(text: &str) -> Result<(usize, usize), String> {
    text.parse::<Size>().map(Size::hw).map_err(|e| e.to_string())
}

pub fn parse_seeds(text: &str) -> Result<Range<u64>, String> {
    let (a, b) = text.split_once("..").ok_or_else(|| format!("{text:?} is not a range A..B"))?;
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) if a < b => Ok(a..b),
        _ => Err(format!("{text:?} is not a non-empty range A..B")),
    }
}

impl DataArgs {
    /// The dataset of a split: Cityscapes `split`, or synth drives `seeds`.
    pub fn open(&self, split: &str, seeds: &Range<u64>) -> anyhow::Result<Arc<dyn Dataset>> {
        open_dataset(
            self.dataset,
            self.data_root.as_deref(),
            self.synth_size,
            self.synth_frames,
            split,
            seeds,
        )
    }
}

fn open_dataset(
    kind: DatasetKind,
    root: Option<&std::path::Path>,
    (w, h): (usize, usize),
    synth_frames: usize,
    split: &str,
    seeds: &Range<u64>,
) -> anyhow::Result<Arc<dyn Dataset>> {
    Ok(match kind {
        DatasetKind::Cityscapes => {
            let root = root.ok_or_else(|| anyhow::anyhow!("--dataset cityscapes needs --data-root DIR"))?;
            Arc::new(Cityscapes::open(root, split)?)
        }
        DatasetKind::Synth => {
            let config = SynthConfig { width: w, height: h, ..Default::default() };
            Arc::new(Synth::new(config, seeds.clone().collect(), synth_frames, 15))
        }
    })
}

/// The flags of `train` that define its data; a resumed run keeps the ones it was started with.
pub const DATA_FLAGS: [&str; 9] = [
    "dataset",
    "data_root",
    "synth_size",
    "synth_frames",
    "train_seeds",
    "val_seeds",
    "crop",
    "scale",
    "no_photometric",
];

impl TrainArgs {
    /// The data recipe these flags give.
    fn data_recipe(&self) -> DataRecipe {
        DataRecipe {
            dataset: self.data.dataset,
            data_root: self.data.data_root.clone(),
            synth_size: self.data.synth_size,
            synth_frames: self.data.synth_frames,
            train_seeds: self.train_seeds.clone(),
            val_seeds: self.val_seeds.clone(),
            crop: self.crop,
            scale: self.scale.unwrap_or(match self.data.dataset {
                DatasetKind::Cityscapes => (2048, 1024),
                DatasetKind::Synth => self.data.synth_size,
            }),
            photometric: !self.no_photometric,
        }
    }
}

/// The normalisation of SeMask's configs (also what the runtime assumes without metadata), at
/// each image's own size.
fn imagenet_spec() -> PreprocSpec {
    PreprocSpec::imagenet(0, 0)
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    arch: ArchArgs,

    #[command(flatten)]
    data: DataArgs,

    /// Run directory: checkpoints/, log.csv, config.json, latest.json.
    #[arg(long, value_name = "DIR", required_unless_present = "resume", conflicts_with = "resume")]
    out: Option<PathBuf>,

    /// Synthetic drives used for training (seeds A..B).
    #[arg(long, value_name = "A..B", default_value = "0..8", value_parser = parse_seeds)]
    train_seeds: Range<u64>,

    /// Held-out synthetic drives for evaluation (seeds A..B, disjoint from the training ones).
    #[arg(long, value_name = "A..B", default_value = "1000..1002", value_parser = parse_seeds)]
    val_seeds: Range<u64>,

    /// Total iterations [default: 80000; with --resume, the run's own total unless given,
    /// e.g. to extend a finished run].
    #[arg(long, value_name = "N")]
    iterations: Option<usize>,

    #[arg(long, default_value_t = 8)]
    batch: usize,

    #[arg(long, default_value_t = 1e-3)]
    lr: f64,

    #[arg(long, default_value_t = 0.05)]
    weight_decay: f64,

    /// Linear warm-up iterations (from lr x 1e-5).
    #[arg(long, default_value_t = 1500)]
    warmup: usize,

    /// Gradient clipping by global norm (off by default, as the official config).
    #[arg(long, value_name = "NORM")]
    grad_clip: Option<f64>,

    /// Training crop WxH.
    #[arg(long, value_name = "WxH", default_value = "768x768", value_parser = parse_size_hw)]
    crop: (usize, usize),

    /// Base scale WxH (long x short edge) before the random 0.5-2.0 ratio (default: 2048x1024
    /// for Cityscapes, the synthetic frame size for synth).
    #[arg(long, value_name = "WxH", value_parser = parse_wxh)]
    scale: Option<(usize, usize)>,

    /// Turn off the photometric distortion.
    #[arg(long)]
    no_photometric: bool,

    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Data worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,

    #[arg(long, value_name = "N", default_value_t = 8000)]
    checkpoint_every: usize,

    /// Evaluate on the held-out data every N iterations (0: never).
    #[arg(long, value_name = "N", default_value_t = 8000)]
    eval_every: usize,

    /// Start from weights: an official SeMask checkpoint (all names), or an ImageNet Swin
    /// backbone (official Swin names, e.g. swin_tiny_patch4_window7_224.pth), mapped onto
    /// backbone.* with the SeMask layers left fresh.
    #[arg(long, value_name = "FILE", conflicts_with = "resume")]
    init: Option<PathBuf>,

    /// Continue the run in this directory from its latest checkpoint.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
}

/// `semask-train train`. `data_flags_given`: which of [`DATA_FLAGS`] were on the command line
/// (a resumed run refuses to change its data).
pub fn train(args: TrainArgs, data_flags_given: &[&str], devices: &[ComputeDevice]) -> anyhow::Result<()> {
    let autodiff: Vec<burn::tensor::Device> = devices.iter().map(|d| d.device.clone().autodiff()).collect();
    let device = autodiff.first().ok_or_else(|| anyhow::anyhow!("--device names no device"))?.clone();
    let (mut config, start, model, optim) = match &args.resume {
        Some(dir) => {
            let (weights, optim_path, state) = training::latest_checkpoint(dir)?;
            let model = Checkpoint::read(&weights)?
                .load_into(SeMaskFpn::new(&state.config.arch, &device), &device)?;
            let (model, without_id) = training::restore_param_ids(model, &state.param_ids);
            if without_id > 0 {
                log::warn!(
                    "{without_id} parameters have no saved optimizer id (checkpoint written by an older \
                     semask-train): their AdamW moments restart from zero"
                );
            }
            let optim = training::optimizer(&state.config).load(&optim_path).map_err(|e| {
                anyhow::anyhow!("cannot read optimizer state {}: {e:?}", optim_path.display())
            })?;
            log::info!("resuming {} at iteration {}", dir.display(), state.iteration);
            let mut config = state.config;
            match (&config.data, data_flags_given.first()) {
                (Some(_), Some(flag)) => anyhow::bail!(
                    "--{}: a resumed run keeps the data it was started with ({}); drop the flag, or \
                     start a new run with --init {}",
                    flag.replace('_', "-"),
                    dir.join("config.json").display(),
                    weights.display()
                ),
                (Some(_), None) => {}
                (None, _) => {
                    log::warn!(
                        "{} records no data recipe (written by an older semask-train): using the \
                         data flags of this command line",
                        dir.display()
                    );
                    config.data = Some(args.data_recipe());
                }
            }
            (config, state.iteration, model, optim)
        }
        None => {
            let out = args.out.as_ref().expect("clap requires --out or --resume");
            if out.join("latest.json").exists() || out.join("log.csv").exists() {
                anyhow::bail!(
                    "--out {} already holds a run: continue it with --resume {}, or choose another --out",
                    out.display(),
                    out.display()
                );
            }
            let arch = args.arch.resolve()?;
            let config = TrainConfig {
                iterations: args.iterations.unwrap_or(80_000),
                batch: args.batch,
                lr: args.lr,
                weight_decay: args.weight_decay,
                warmup_iterations: args.warmup,
                grad_clip: args.grad_clip,
                seed: args.seed,
                checkpoint_every: args.checkpoint_every,
                eval_every: args.eval_every,
                workers: args.workers,
                data: Some(args.data_recipe()),
                ..TrainConfig::official(arch.clone())
            };
            let mut model = SeMaskFpn::new(&arch, &device);
            if let Some(init) = &args.init {
                model = init_from(model, init, &device)?;
            }
            let optim = training::optimizer(&config);
            (config, 0, model, optim)
        }
    };
    if let (Some(_), Some(total)) = (&args.resume, args.iterations) {
        if total <= start {
            anyhow::bail!("--iterations {total}: the run is already at iteration {start}");
        }
        // The poly schedule follows the new total from here on.
        config.iterations = total;
    }
    if config.batch < devices.len() {
        anyhow::bail!(
            "--batch {} is smaller than the {} devices of --device: each device needs at least one image",
            config.batch,
            devices.len()
        );
    }
    // The run records where it computes; a resumed run, where it resumed.
    config.devices = devices.iter().map(|d| d.info.clone()).collect();
    let data = config.data.clone().expect("set above for new and resumed runs");
    let augment = AugmentConfig {
        scale: (data.scale.0.max(data.scale.1), data.scale.0.min(data.scale.1)),
        ratio_range: (0.5, 2.0),
        crop: data.crop,
        cat_max_ratio: 0.75,
        flip_prob: 0.5,
        photometric: data.photometric,
        spec: imagenet_spec(),
    };
    let open = |split, seeds| {
        open_dataset(
            data.dataset,
            data.data_root.as_deref(),
            data.synth_size,
            data.synth_frames,
            split,
            seeds,
        )
    };
    let train_data = open("train", &data.train_seeds)?;
    let val_data = if config.eval_every > 0 { Some(open("val", &data.val_seeds)?) } else { None };
    log::info!("training on {}", train_data.describe());
    static STOP: AtomicBool = AtomicBool::new(false);
    if let Err(e) = ctrlc::set_handler(|| STOP.store(true, std::sync::atomic::Ordering::SeqCst)) {
        log::warn!("Ctrl-C will not save a checkpoint: {e}");
    }
    let run = RunDir(args.resume.clone().or(args.out.clone()).expect("clap requires --out or --resume"));
    training::train(
        model,
        optim,
        &config,
        &augment,
        train_data,
        val_data.as_deref(),
        &run,
        start,
        &autodiff,
        &STOP,
    )?;
    println!("run saved in {}", run.0.display());
    Ok(())
}

/// `--init`: a full SeMask checkpoint (strict), else an ImageNet Swin backbone.
fn init_from(
    model: SeMaskFpn,
    path: &std::path::Path,
    device: &burn::tensor::Device,
) -> anyhow::Result<SeMaskFpn> {
    let checkpoint = Checkpoint::read(path)?;
    if checkpoint.tensors.keys().any(|k| k.starts_with("backbone.")) {
        return Ok(checkpoint.load_into(model, device)?);
    }
    // Official Swin classification checkpoints: patch_embed.*, layers.*, norm.*, head.*; the
    // backbone's per-stage norms and the SeMask layers have no counterpart.
    let (model, loaded) = checkpoint.load_matching(model, device, |name| {
        (name.starts_with("patch_embed.") || name.starts_with("layers.")).then(|| format!("backbone.{name}"))
    });
    if loaded == 0 {
        anyhow::bail!(
            "--init {}: no tensor matches the backbone (expected official Swin names: patch_embed.*, layers.*)",
            path.display()
        );
    }
    log::info!(
        "--init {}: {loaded} backbone tensors loaded; SeMask layers and the decoder start fresh",
        path.display()
    );
    Ok(model)
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    arch: ArchArgs,

    #[command(flatten)]
    data: DataArgs,

    /// Checkpoint to evaluate (.safetensors or .pth).
    #[arg(long, value_name = "FILE", required_unless_present = "onnx", conflicts_with = "onnx")]
    weights: Option<PathBuf>,

    /// Evaluate an ONNX model through the runtime instead (exact upsampling).
    #[arg(long, value_name = "FILE")]
    onnx: Option<PathBuf>,

    /// Cityscapes split.
    #[arg(long, default_value = "val")]
    split: String,

    /// Synthetic drives to evaluate on (seeds A..B).
    #[arg(long, value_name = "A..B", default_value = "1000..1002", value_parser = parse_seeds)]
    seeds: Range<u64>,

    /// Write Cityscapes label-id PNGs (<name>.png) for cityscapesscripts into DIR.
    #[arg(long, value_name = "DIR")]
    save_labels: Option<PathBuf>,

    /// Write the metrics as JSON.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
}

pub fn eval(args: EvalArgs, compute: ComputeDevice) -> anyhow::Result<()> {
    let device = compute.device;
    let dataset = args.data.open(&args.split, &args.seeds)?;
    let mut labeller: Box<dyn Labeller + '_> = match (&args.weights, &args.onnx) {
        (Some(weights), _) => {
            let arch = args.arch.resolve()?;
            let model = Checkpoint::read(weights)?.load_into(SeMaskFpn::new(&arch, &device), &device)?;
            Box::new(training::ModelLabeller::new(model, &imagenet_spec(), &device))
        }
        (None, Some(onnx)) => {
            if compute.name != DeviceName::Cpu {
                anyhow::bail!(
                    "--onnx runs in the runtime (tract, on the CPU): drop --device, or evaluate the \
                     checkpoint with --weights on the GPU"
                );
            }
            Box::new(eval::onnx_labeller(onnx)?)
        }
        (None, None) => unreachable!("clap requires --weights or --onnx"),
    };
    let classes = labeller.classes().clone();
    // The runtime's label writer: the same PNGs `semask-edge run --label-ids cityscapes` writes.
    let mut label_writer = match &args.save_labels {
        Some(dir) => Some(PngDirSink::new(dir, PngKind::Labels(LabelIds::Cityscapes), &classes)?),
        None => None,
    };
    let progress = semask_edge::progress::bar(Some(dataset.len() as u64), "images", true);
    let metrics = eval::evaluate(labeller.as_mut(), dataset.as_ref(), |_, frame| {
        if let Some(writer) = &mut label_writer {
            writer.write(frame)?;
        }
        progress.inc(1);
        Ok(())
    })?;
    progress.finish_and_clear();
    println!("{} images, {} labelled pixels", dataset.len(), metrics.pixels);
    println!("{:<16} {:>8}", "class", "IoU");
    for (name, iou) in classes.names().iter().zip(&metrics.iou) {
        println!("{name:<16} {:>8}", iou.map_or("-".into(), |v| format!("{:.4}", v)));
    }
    println!("mIoU {:.6}  pixel accuracy {:.6}", metrics.miou, metrics.pixel_accuracy);
    if let Some(path) = &args.report {
        let report = serde_json::json!({
            "dataset": dataset.describe(),
            "images": dataset.len(),
            "miou": metrics.miou,
            "pixel_accuracy": metrics.pixel_accuracy,
            "pixels": metrics.pixels,
            "iou": classes.names().iter().zip(&metrics.iou).map(|(n, v)| (n.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
        });
        let text = serde_json::to_string_pretty(&report)? + "\n";
        write_atomically(path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
