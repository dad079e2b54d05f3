//! `semask-train export`: a checkpoint (or fresh weights) as a static-shape ONNX file with the
//! runtime's metadata.

use std::path::PathBuf;

use clap::Args;

use semask_edge::calibration::Precision;
use semask_edge::model::ClassTable;
use semask_edge::model::SegmentationMetadata;
use semask_edge::model::metadata::{ExportProvenance, KEY_FP32_SHA256};
use semask_train::model::SeMaskFpn;
use semask_train::onnx::export::{ExportOptions, LOGITS, export};
use semask_train::onnx::graph::write_model;
use semask_train::weights::Checkpoint;

use crate::ArchArgs;

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    arch: ArchArgs,

    /// Weights: .safetensors or PyTorch .pth with the official parameter names.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["random_init", "onnx"])]
    weights: Option<PathBuf>,

    /// Convert an existing fp32 export instead (with --precision fp16): its graph, metadata and
    /// input size are kept, and the fp16 file records the fp32 file's SHA-256.
    #[arg(long, value_name = "FILE.onnx", conflicts_with_all = ["weights", "random_init"], requires = "precision")]
    onnx: Option<PathBuf>,

    /// Export the architecture with freshly initialised weights (for benchmarks).
    #[arg(long, conflicts_with = "weights")]
    random_init: bool,

    /// Network input size WxH (static in the graph; the runtime resizes frames to it).
    #[arg(long, value_name = "WxH", default_value = "1024x512", value_parser = parse_input_size)]
    input_size: (usize, usize),

    /// Also output `logits_up`: the logits bilinearly resized to the input size.
    #[arg(long)]
    with_upsampled: bool,

    /// Also output `sem_logits`: the semantic branch (a training signal; not needed to deploy).
    #[arg(long)]
    with_semantic: bool,

    /// Numeric precision of the graph: fp32, or fp16 (weights and activations in half
    /// precision, LayerNormalization and Softmax in fp32; input and output stay fp32): what
    /// TensorRT 11 needs for fp16 engines (`model.fp16.onnx` beside the fp32 model, or in
    /// calibration/<stem>/).
    #[arg(long, value_name = "fp32|fp16", default_value = "fp32", value_parser = parse_export_precision)]
    precision: Precision,

    /// What the weights were trained on, for the `semask.training_data` metadata [default: read
    /// from the run's config.json next to the checkpoint, else "unknown"].
    #[arg(long, value_name = "TEXT")]
    training_data: Option<String>,

    /// Output ONNX file.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// `--onnx FILE --precision fp16`: the fp16 form of an existing fp32 export.
fn convert(onnx: &std::path::Path, args: &ExportArgs) -> anyhow::Result<()> {
    if args.precision != Precision::Fp16 {
        anyhow::bail!(
            "--onnx {}: converting an export only makes sense with --precision fp16",
            onnx.display()
        );
    }
    let mut inputs = semask_edge::files::InputFiles::default();
    inputs.add(onnx, semask_edge::files::InputRole::Model);
    inputs.check_output(&args.out, "--out")?;
    let fp32 = semask_train::onnx::graph::read_model(onnx)?;
    let mut fp16 = semask_train::onnx::fp16::to_fp16(&fp32)?;
    let sha = semask_edge::model::sha256_hex(&fs_err::read(onnx)?);
    fp16.metadata_props.retain(|e| e.key != KEY_FP32_SHA256);
    fp16.metadata_props
        .push(tract_onnx::pb::StringStringEntryProto { key: KEY_FP32_SHA256.into(), value: sha });
    write_model(&args.out, &fp16)?;
    println!("{}", args.out.display());
    Ok(())
}

/// fp32 or fp16 (int8 forms come from `semask-train quantize`).
fn parse_export_precision(text: &str) -> Result<Precision, String> {
    match text.parse::<Precision>().map_err(|e| e.to_string())? {
        Precision::Int8 => {
            Err("int8 forms are written by `semask-train quantize`; export fp32 or fp16".into())
        }
        other => Ok(other),
    }
}

/// A size WxH as `(height, width)`, both sides at least 32: the four stages need a feature
/// map of at least 1x1 at stride 32.
fn parse_input_size(text: &str) -> Result<(usize, usize), String> {
    match crate::cli::parse_size_hw(text)? {
        (h, w) if h >= 32 && w >= 32 => Ok((h, w)),
        _ => Err(format!("{text:?}: both sides of the network input must be at least 32")),
    }
}

/// The git revision this binary was built from (set by build.rs; "unknown" outside a checkout).
pub const GIT_REVISION: &str = env!("SEMASK_GIT_REVISION");

pub fn run(args: ExportArgs, device: burn::tensor::Device) -> anyhow::Result<()> {
    if let Some(onnx) = &args.onnx {
        return convert(onnx, &args);
    }
    let arch = args.arch.resolve()?;
    let mut inputs = semask_edge::files::InputFiles::default();
    inputs.add_all(args.weights.as_deref(), semask_edge::files::InputRole::Model);
    inputs.check_output(&args.out, "--out")?;
    let mut model = SeMaskFpn::new(&arch, &device);
    let weights_name = match &args.weights {
        Some(path) => {
            model = Checkpoint::read(path)?.load_into(model, &device)?;
            path.display().to_string()
        }
        None => "random initialisation".to_string(),
    };
    let training_data = args.training_data.clone().unwrap_or_else(|| match &args.weights {
        Some(path) => training_data_of(path).unwrap_or_else(|| "unknown".into()),
        None => "none (random weights)".into(),
    });
    let classes = ClassTable::for_count(arch.num_classes);
    let (height, width) = args.input_size;
    let provenance = ExportProvenance {
        arch: serde_json::to_string(&arch)?,
        input_size: semask_edge::frame::Size::from_hw((height, width)),
        weights: weights_name,
        training_data,
        git_revision: GIT_REVISION.to_string(),
        exported_by: format!("semask-train {}", env!("CARGO_PKG_VERSION")),
    };
    let mut metadata = SegmentationMetadata::of_export(classes, LOGITS).to_props();
    metadata.extend(provenance.to_props());
    let options = ExportOptions {
        height,
        width,
        with_upsampled: args.with_upsampled,
        with_semantic: args.with_semantic,
        metadata,
    };
    let mut proto = export(&model, &arch, &options);
    if args.precision == Precision::Fp16 {
        proto = semask_train::onnx::fp16::to_fp16(&proto)?;
    }
    write_model(&args.out, &proto)?;
    let graph = proto.graph.as_ref().expect("export writes a graph");
    log::info!(
        "wrote {}: {} nodes, {} initializers, input [1, 3, {height}, {width}]",
        args.out.display(),
        graph.node.len(),
        graph.initializer.len()
    );
    println!("{}", args.out.display());
    Ok(())
}

/// The data recipe of the run a checkpoint belongs to (`<run>/checkpoints/iter_N.*` next to
/// `<run>/config.json`), as one line.
fn training_data_of(weights: &std::path::Path) -> Option<String> {
    let config = weights.parent()?.parent()?.join("config.json");
    let text = fs_err::read_to_string(&config).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let data = value.get("data").filter(|d| !d.is_null())?;
    let iteration = weights.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Some(format!("{} ({iteration} of {})", serde_json::to_string(data).ok()?, config.display()))
}
