//! `semask-train export` writes what the official model computes: the tiny and tiny2 fixture
//! weights exported at the fixtures' input sizes give the fixtures' logits, upsampled logits and
//! semantic logits within 1e-4 in onnxruntime (independent reference) and in the runtime's tract
//! backend; the graph passes `onnx.checker`, has static shapes (no Shape / ScatterND / Where /
//! Gather arithmetic), and carries the metadata the runtime reads without flags.

mod util;

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;
use semask_edge::model::{OnnxModel, Provenance};
use semask_edge::pipeline::{Segmenter, SegmenterOptions};
use semask_train::arrays::{read_npy, write_npy};
use tract_onnx::pb;
use util::{fixture, run_reference, run_train, stderr};

fn export(case: &str, size: &str, out: &Path) {
    let weights = fixture(&format!("semask-ref/{case}.safetensors"));
    let output = run_train(&[
        "export",
        "--arch",
        "tiny",
        "--weights",
        weights.to_str().unwrap(),
        "--input-size",
        size,
        "--with-upsampled",
        "--with-semantic",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
}

fn max_diff(ours: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(ours.len(), reference.len());
    ours.iter().zip(reference).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

fn check(case: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (input_shape, input) = read_npy(&fixture(&format!("semask-ref/{case}_input.npy"))).unwrap();
    let size = format!("{}x{}", input_shape[3], input_shape[2]);
    let model_path = dir.path().join(format!("{case}.onnx"));
    export(case, &size, &model_path);

    // The graph: static, no shape arithmetic, LayerNormalization as one op.
    let proto = pb::ModelProto::decode(&std::fs::read(&model_path).unwrap()[..]).unwrap();
    let graph = proto.graph.as_ref().unwrap();
    let mut ops = BTreeMap::<&str, usize>::new();
    for node in &graph.node {
        *ops.entry(node.op_type.as_str()).or_default() += 1;
    }
    for banned in ["Shape", "ScatterND", "Where", "Gather", "ConstantOfShape", "Expand"] {
        assert!(!ops.contains_key(banned), "{case}: the export contains {banned} nodes: {ops:?}");
    }
    assert_eq!(ops.get("LayerNormalization"), Some(&28), "{case}: {ops:?}");
    // Only the operators the exporter declares (what the GPU calibration pass and the fp16
    // conversion handle).
    for op in ops.keys() {
        assert!(semask_train::onnx::export::OPERATORS.contains(op), "{case}: undeclared operator {op}");
    }

    // onnxruntime, after onnx.checker.
    let ort_dir = dir.path().join("ort");
    let report = run_reference(
        "onnx_run.py",
        &[
            model_path.to_str().unwrap(),
            fixture(&format!("semask-ref/{case}_input.npy")).to_str().unwrap(),
            ort_dir.to_str().unwrap(),
        ],
    );
    let report: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(report["checker"], "ok");
    assert_eq!(report["opset"], 17);
    for (output, reference) in [("logits", "logits"), ("logits_up", "logits_up"), ("sem_logits", "semantic")]
    {
        let (shape, ours) = read_npy(&ort_dir.join(format!("{output}.npy"))).unwrap();
        let (ref_shape, expected) =
            read_npy(&fixture(&format!("semask-ref/{case}_{reference}.npy"))).unwrap();
        assert_eq!(shape, ref_shape, "{case} {output}");
        let worst = max_diff(&ours, &expected);
        eprintln!("{case} {output}: onnxruntime max |diff| {worst:.2e}");
        assert!(worst <= 1e-4, "{case} {output}: onnxruntime max |export - PyTorch| = {worst:e}");
    }

    // The runtime (tract), reading the metadata without flags.
    let model = OnnxModel::open(&model_path, &Default::default()).unwrap();
    assert_eq!(model.metadata.mean.from, Provenance::Metadata);
    assert_eq!(model.metadata.std.from, Provenance::Metadata);
    assert_eq!(model.metadata.logits_output.value, "logits");
    let mut segmenter = Segmenter::new(&model, &SegmenterOptions::default()).unwrap();
    assert_eq!(segmenter.classes().names()[13], "car");
    let classes = model.metadata.classes.as_ref().expect("classes in the metadata");
    assert_eq!(classes.from, Provenance::Metadata);
    let logits = segmenter.logits_for_input(&input).unwrap().to_vec();
    let (_, expected) = read_npy(&fixture(&format!("semask-ref/{case}_logits.npy"))).unwrap();
    let worst = max_diff(&logits, &expected);
    eprintln!("{case} logits: tract max |diff| {worst:.2e}");
    assert!(worst <= 1e-4, "{case}: tract max |export - PyTorch| = {worst:e}");
    let props: BTreeMap<&str, &str> =
        proto.metadata_props.iter().map(|p| (p.key.as_str(), p.value.as_str())).collect();
    assert_eq!(props["semask.input_size"], size);
    for key in ["semask.arch", "semask.training_data", "semask.git_revision", "semask.weights"] {
        assert!(props.get(key).is_some_and(|v| !v.is_empty()), "{key} missing: {props:?}");
    }
}

#[test]
fn tiny_export_matches_pytorch_in_onnxruntime_and_tract() {
    check("tiny");
}

#[test]
fn tiny2_export_matches_pytorch_in_onnxruntime_and_tract() {
    check("tiny2");
}

/// `--random-init` exports any architecture without weights; sizes that are not multiples of
/// the windows or of 32 give static padding, not shape arithmetic, and still run.
#[test]
fn random_init_export_at_an_odd_size_runs_in_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("odd.onnx");
    let output = run_train(&[
        "export",
        "--arch",
        "tiny",
        "--random-init",
        "--input-size",
        "150x100",
        "--out",
        model_path.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let input = dir.path().join("x.npy");
    write_npy(&input, &[1, 3, 100, 150], &vec![0.5; 3 * 100 * 150]).unwrap();
    let report = run_reference(
        "onnx_run.py",
        &[model_path.to_str().unwrap(), input.to_str().unwrap(), dir.path().join("o").to_str().unwrap()],
    );
    assert!(report.contains("\"checker\": \"ok\""), "{report}");
    let (shape, logits) = read_npy(&dir.path().join("o/logits.npy")).unwrap();
    assert_eq!(shape, [1, 19, 25, 38]);
    assert!(logits.iter().all(|v| v.is_finite()));
    let model = OnnxModel::open(&model_path, &Default::default()).unwrap();
    let mut segmenter = Segmenter::new(&model, &SegmenterOptions::default()).unwrap();
    let x = vec![0.5f32; 3 * 100 * 150];
    let ours = segmenter.logits_for_input(&x).unwrap().to_vec();
    assert!(max_diff(&ours, &logits) <= 1e-4);
}

/// `--precision fp16`: half-precision weights and activations with LayerNormalization and
/// Softmax in fp32, fp32 at both ends. onnx.checker accepts it (with shape inference, which
/// checks every type), and onnxruntime and the runtime (tract) compute the fixture's logits
/// within half precision's error, with the same labels almost everywhere.
#[test]
fn fp16_export_is_a_valid_half_precision_graph_close_to_fp32() {
    let dir = tempfile::tempdir().unwrap();
    let case = "tiny2";
    let (input_shape, input) = read_npy(&fixture(&format!("semask-ref/{case}_input.npy"))).unwrap();
    let size = format!("{}x{}", input_shape[3], input_shape[2]);
    let model_path = dir.path().join("tiny2.fp16.onnx");
    let weights = fixture(&format!("semask-ref/{case}.safetensors"));
    let output = run_train(&[
        "export",
        "--arch",
        "tiny",
        "--weights",
        weights.to_str().unwrap(),
        "--input-size",
        &size,
        "--precision",
        "fp16",
        "--out",
        model_path.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));

    let proto = pb::ModelProto::decode(&std::fs::read(&model_path).unwrap()[..]).unwrap();
    let graph = proto.graph.as_ref().unwrap();
    let (half, float) =
        (pb::tensor_proto::DataType::Float16 as i32, pb::tensor_proto::DataType::Float as i32);
    let halves = graph.initializer.iter().filter(|t| t.data_type == half).count();
    let floats: Vec<&str> =
        graph.initializer.iter().filter(|t| t.data_type == float).map(|t| t.name.as_str()).collect();
    assert!(halves > 100, "{halves} fp16 initializers");
    // The fp32 initializers left are LayerNorm's scales and biases.
    let ln_inputs: std::collections::HashSet<&str> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "LayerNormalization")
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    assert!(floats.iter().all(|f| ln_inputs.contains(f)), "fp32 weights outside LayerNorm: {floats:?}");

    let (_, expected) = read_npy(&fixture(&format!("semask-ref/{case}_logits.npy"))).unwrap();
    let argmax_agreement = |logits: &[f32]| {
        let classes = 19;
        let pixels = logits.len() / classes;
        let argmax = |v: &[f32], p: usize| {
            (0..classes).max_by(|&a, &b| v[a * pixels + p].total_cmp(&v[b * pixels + p])).unwrap()
        };
        (0..pixels).filter(|&p| argmax(logits, p) == argmax(&expected, p)).count() as f64 / pixels as f64
    };
    let ort_dir = dir.path().join("ort");
    let report = run_reference(
        "onnx_run.py",
        &[
            model_path.to_str().unwrap(),
            fixture(&format!("semask-ref/{case}_input.npy")).to_str().unwrap(),
            ort_dir.to_str().unwrap(),
        ],
    );
    assert!(report.contains("\"checker\": \"ok\""), "{report}");
    let (_, ort) = read_npy(&ort_dir.join("logits.npy")).unwrap();
    let model = OnnxModel::open(&model_path, &Default::default()).unwrap();
    assert_eq!(model.precision(), semask_edge::calibration::Precision::Fp16);
    let mut segmenter = Segmenter::new(&model, &SegmenterOptions::default()).unwrap();
    let tract = segmenter.logits_for_input(&input).unwrap().to_vec();
    let scale = expected.iter().map(|v| v.abs()).fold(0.0, f32::max);
    for (who, logits) in [("onnxruntime", &ort), ("tract", &tract)] {
        let worst = max_diff(logits, &expected);
        let agree = argmax_agreement(logits);
        eprintln!(
            "fp16 {who}: max |diff| {worst:.3e} (logits up to {scale:.2}), argmax agreement {agree:.4}"
        );
        assert!(worst <= 0.02 * scale.max(1.0), "{who}: max |fp16 - fp32| = {worst}");
        assert!(agree >= 0.99, "{who}: labels agree on {agree}");
    }
}
