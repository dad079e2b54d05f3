//! `semask-edge info`: what a model is, what the runtime will do with it, and what this build
//! can run it on.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use semask_edge::backend::{self, tract};
use semask_edge::calibration::{Artifact, Precision};
use semask_edge::model::classes::CITYSCAPES_LABEL_IDS;
use semask_edge::model::{OnnxModel, Provenance, Setting};
use semask_edge::named::Named;

use super::ModelArgs;

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Describe the model's form for this precision: int8, its int8 form (model.qop.onnx);
    /// fp16, its fp16 graph (model.fp16.onnx).
    #[arg(long, value_name = "PRECISION", default_value = "fp32", value_parser = super::choice::<Precision>())]
    pub precision: Precision,

    #[command(flatten)]
    pub tensorrt: super::TensorRtArgs,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Report<'a> {
    model: &'a str,
    size_bytes: usize,
    nodes: usize,
    opset: Option<i64>,
    producer: String,
    precision: semask_edge::calibration::Precision,
    /// What the precision means for this file.
    precision_note: String,
    input: &'a semask_edge::model::TensorDecl,
    input_size_hw: Option<(usize, usize)>,
    outputs: &'a [semask_edge::model::TensorDecl],
    logits_output: &'a Setting<String>,
    /// `[1, K, h, w]` as tract infers it.
    logits_shape: Option<Vec<usize>>,
    mean: &'a Setting<[f32; 3]>,
    std: &'a Setting<[f32; 3]>,
    channel_order: &'a Setting<semask_edge::preprocess::ChannelOrder>,
    classes: Option<&'a Setting<semask_edge::model::ClassTable>>,
    metadata_props: &'a std::collections::BTreeMap<String, String>,
    backends: Vec<backend::Availability>,
    /// The TensorRT engine of this model at --precision in the engine cache, or why there is none.
    engine_cache: String,
    /// Why the CPU backend cannot load this model, if it cannot.
    problem: Option<String>,
}

pub fn info(args: InfoArgs, ctx: &super::Context) -> anyhow::Result<ExitCode> {
    let limits = ctx.limits;
    let overrides = args.model.overrides()?;
    let given = OnnxModel::open_or_builtin(args.model.model.as_deref(), &overrides)?;
    // `--precision int8`/`fp16`: describe the form of the model that precision runs on the CPU
    // (or, for fp16, the fp16 graph).
    let engine_cache = engine_cache_entry(&given, &args, ctx);
    let model = match args.precision {
        Precision::Fp32 => given,
        Precision::Int8 if given.precision() == Precision::Int8 => given,
        Precision::Int8 => given.artifact(Artifact::QOperator, &overrides)?,
        Precision::Fp16 => given.artifact(Artifact::Fp16, &overrides)?,
    };
    let mut metadata = model.metadata.clone();

    // Type the graph once to learn the logits' real shape (raw torch exports declare symbolic
    // output shapes) and to find out now whether tract can load the model at all.
    let mut problem = None;
    let input_size = match model.input_size(args.model.input_size, &limits) {
        Ok(size) => Some(size),
        Err(e) => {
            problem = Some(e.to_string());
            None
        }
    };
    let mut logits_shape = None;
    if let Some((h, w)) = input_size {
        match tract::typed_model(&model, [1, 3, h, w], &metadata.logits_output.value) {
            Ok(typed) => {
                let shape = typed.output_fact(0).ok().and_then(|f| f.shape.as_concrete().map(|s| s.to_vec()));
                if let Some(k) = shape.as_ref().and_then(|s| s.get(1))
                    && let Err(e) = metadata.resolve_classes(*k)
                {
                    problem = Some(format!("{}: {e}", model.name));
                }
                logits_shape = shape;
            }
            Err(e) => problem = Some(format!("{}: tract cannot load this model: {e}", model.name)),
        }
    }

    let report = Report {
        model: &model.name,
        size_bytes: model.size_bytes,
        nodes: model.node_count(),
        opset: model.opset(),
        producer: model.producer(),
        precision: model.precision(),
        precision_note: precision_note(&model),
        input: &model.input,
        input_size_hw: input_size,
        outputs: &model.outputs,
        logits_output: &metadata.logits_output,
        logits_shape,
        mean: &metadata.mean,
        std: &metadata.std,
        channel_order: &metadata.channel_order,
        classes: metadata.classes.as_ref(),
        metadata_props: &metadata.all_props,
        backends: backend::availability(),
        engine_cache,
        problem,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_text(&mut out, &report)?;
    }
    if let Some(problem) = &report.problem {
        eprintln!("error: {problem}");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

/// `cached: PATH`, `not built yet: PATH`, or why TensorRT cannot say.
fn engine_cache_entry(model: &OnnxModel, args: &InfoArgs, ctx: &super::Context) -> String {
    let Ok(input_size) = model.input_size(args.model.input_size, &ctx.limits) else {
        return "n/a (no input size)".into();
    };
    let options = backend::BackendOptions {
        precision: args.precision,
        tensorrt: args.tensorrt.options(ctx),
        ..backend::BackendOptions::new(backend::BackendKind::TensorRt, input_size)
    };
    match backend::tensorrt::cache_entry(model, &options) {
        Ok(Ok(path)) => format!("{} engine cached: {}", args.precision, path.display()),
        Ok(Err(path)) => {
            format!("no {} engine yet (built on first run, into {})", args.precision, path.display())
        }
        Err(reason) => format!("n/a ({reason})"),
    }
}

/// How an int8 file computes, from its operators.
fn precision_note(model: &OnnxModel) -> String {
    let count = |ops: &[&str]| {
        model.proto.graph.iter().flat_map(|g| &g.node).filter(|n| ops.contains(&n.op_type.as_str())).count()
    };
    let integer = count(&["MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv"]);
    let dequantize = count(&["DequantizeLinear"]);
    if integer > 0 {
        format!("QOperator form, {integer} integer products (tract runs them on its int8 kernels)")
    } else if dequantize > 0 {
        format!(
            "explicit Q/DQ form, {dequantize} DequantizeLinear (for TensorRT; tract computes it in float)"
        )
    } else {
        "float32 weights and activations".into()
    }
}

fn print_text(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    let label = |p: Provenance| match p {
        Provenance::Default => "(default)",
        Provenance::Metadata => "(model metadata)",
        Provenance::Flag => "(command line)",
    };
    writeln!(out, "model        {}", r.model)?;
    writeln!(
        out,
        "             {:.1} MB, {} nodes, opset {}, producer {}",
        r.size_bytes as f64 / 1e6,
        r.nodes,
        r.opset.map_or("?".into(), |v| v.to_string()),
        if r.producer.is_empty() { "unknown" } else { &r.producer }
    )?;
    writeln!(out, "precision    {}: {}", r.precision, r.precision_note)?;
    writeln!(out, "input        {}", r.input)?;
    if let Some((h, w)) = r.input_size_hw {
        writeln!(out, "             frames are resized to {w}x{h} (WxH)")?;
    }
    for (i, o) in r.outputs.iter().enumerate() {
        let head = if i == 0 { "outputs" } else { "" };
        let role = if o.name == r.logits_output.value {
            let shape = r.logits_shape.as_ref().map_or(String::new(), |s| format!(", inferred shape {s:?}"));
            format!("  <- logits {}{shape}", label(r.logits_output.from))
        } else {
            "  (not computed)".into()
        };
        writeln!(out, "{head:<12} {o}{role}")?;
    }
    writeln!(out, "mean         {:?} {}", r.mean.value, label(r.mean.from))?;
    writeln!(out, "std          {:?} {}", r.std.value, label(r.std.from))?;
    writeln!(out, "channels     {} {}", r.channel_order.value.name(), label(r.channel_order.from))?;
    match r.classes {
        Some(classes) => {
            let table = &classes.value;
            let cityscapes = table.is_cityscapes();
            writeln!(out, "classes      {} {}", table.len(), label(classes.from))?;
            for (i, (name, rgb)) in table.names().iter().zip(table.palette()).enumerate() {
                let id = if cityscapes {
                    format!("  label id {}", CITYSCAPES_LABEL_IDS[i])
                } else {
                    String::new()
                };
                writeln!(out, "  {i:>3}  {name:<16} #{:02x}{:02x}{:02x}{id}", rgb[0], rgb[1], rgb[2])?;
            }
        }
        None => writeln!(out, "classes      unknown until the logits shape is known")?,
    }
    if r.metadata_props.is_empty() {
        writeln!(out, "metadata     none (defaults apply)")?;
    } else {
        for (i, (k, v)) in r.metadata_props.iter().enumerate() {
            let shown: String = if v.chars().count() > 80 {
                format!("{}…", v.chars().take(80).collect::<String>())
            } else {
                v.clone()
            };
            writeln!(out, "{:<12} {k} = {shown}", if i == 0 { "metadata" } else { "" })?;
        }
    }
    writeln!(out, "engines      {}", r.engine_cache)?;
    for (i, b) in r.backends.iter().enumerate() {
        let state = if b.available { "available" } else { "unavailable" };
        writeln!(
            out,
            "{:<12} {:<9} {state:<12} {}",
            if i == 0 { "backends" } else { "" },
            b.kind.name(),
            b.detail
        )?;
    }
    Ok(())
}
