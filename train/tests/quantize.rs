//! `semask-train quantize` on the built-in model (SeMask tiny trained on synth://, shipped in
//! calibration/semask-tiny-synth/): every artifact is written and runs where it is meant to,
//! the int8 forms agree with fp32 on held-out synthetic drives, and the TensorRT cache carries
//! the calibrated scales under the requested version.

mod util;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use prost::Message;
use semask_edge::calibration::{CalibrationCache, TensorManifest};
use semask_train::arrays::read_npy;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use util::{run_reference, run_train, stderr, workspace_root};

fn builtin_fp32() -> std::path::PathBuf {
    workspace_root().join("calibration/semask-tiny-synth/model.onnx")
}

fn decode(path: &Path) -> pb::ModelProto {
    pb::ModelProto::decode(&std::fs::read(path).unwrap()[..]).unwrap()
}

fn ops(model: &pb::ModelProto) -> BTreeMap<String, usize> {
    let mut ops = BTreeMap::new();
    for node in &model.graph.as_ref().unwrap().node {
        *ops.entry(node.op_type.clone()).or_default() += 1;
    }
    ops
}

/// f32 scalar initializers by name.
fn scalars(model: &pb::ModelProto) -> HashMap<String, f32> {
    model
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .filter(|t| t.dims.is_empty() && t.data_type == pb::tensor_proto::DataType::Float as i32)
        .map(|t| (t.name.clone(), f32::from_le_bytes(t.raw_data[..4].try_into().unwrap())))
        .collect()
}

#[test]
fn quantize_writes_artifacts_that_agree_with_fp32() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("calib");
    let result = run_train(&[
        "quantize",
        "--model",
        builtin_fp32().to_str().unwrap(),
        "--count",
        "8",
        "--synth-frames",
        "12",
        "--trt-version",
        "8502",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(result.status.success(), "{}", stderr(&result));

    // Accuracy against fp32 on held-out drives (seeds 1000..1002, measured through the runtime).
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["calibration"]["frames"], 8);
    assert_eq!(report["accuracy"]["images"], 24);
    for form in ["qdq", "qop"] {
        let a = &report["accuracy"][form];
        let agreement = a["agreement_with_fp32"].as_f64().unwrap();
        let drop = a["miou_drop_points"].as_f64().unwrap();
        eprintln!("{form}: agreement {:.2} %, mIoU drop {drop:.2} points", agreement * 100.0);
        assert!(
            agreement >= 0.98,
            "{form}: int8 labels agree with fp32 on {:.2} % of pixels",
            agreement * 100.0
        );
        assert!(drop <= 1.0, "{form}: mIoU drops {drop:.2} points");
    }

    // The forms: Q/DQ keeps float products behind DequantizeLinear; QOperator has integer ones;
    // Softmax, LayerNorm and GELU stay float in both.
    let fp32 = decode(&builtin_fp32());
    let (qdq, qop) = (decode(&out.join("model.qdq.onnx")), decode(&out.join("model.qop.onnx")));
    let (fp32_ops, qdq_ops, qop_ops) = (ops(&fp32), ops(&qdq), ops(&qop));
    let integer = qop_ops.get("MatMulInteger").unwrap_or(&0) + qop_ops.get("ConvInteger").unwrap_or(&0);
    assert_eq!(qop_ops["ConvInteger"], fp32_ops["Conv"]);
    assert!(integer >= 60, "{qop_ops:?}");
    assert_eq!(qdq_ops["MatMul"], fp32_ops["MatMul"]);
    for (op, count) in &fp32_ops {
        if !["MatMul", "Conv", "Add", "Mul"].contains(&op.as_str()) {
            assert_eq!(qop_ops.get(op), Some(count), "{op} changed in the QOperator graph");
        }
    }
    // Softmax never gets Q/DQ around it (tract 0.23.9 folds DQ -> Softmax -> Q into a wrong
    // lookup table), and Softmax, LayerNorm and GELU compute on float inputs. (Their outputs
    // may be quantized as the input of the next product: that is the product's input.)
    // Both forms name the fp32 model they come from, and the runtime accepts them for it.
    let fp32_sha = semask_edge::model::sha256_hex(&std::fs::read(builtin_fp32()).unwrap());
    for model in [&qdq, &qop] {
        let hash = model.metadata_props.iter().find(|e| e.key == "semask.fp32_sha256").map(|e| &e.value);
        assert_eq!(hash, Some(&fp32_sha));
    }
    for model in [&qdq, &qop] {
        let graph = model.graph.as_ref().unwrap();
        let producer: HashMap<&str, &str> = graph
            .node
            .iter()
            .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n.op_type.as_str())))
            .collect();
        for node in &graph.node {
            let from = |i: usize| producer.get(node.input[i].as_str()).copied().unwrap_or("graph input");
            if node.op_type == "QuantizeLinear" {
                assert_ne!(from(0), "Softmax", "{} quantizes a Softmax output", node.name);
            }
            if ["Softmax", "LayerNormalization", "Erf"].contains(&node.op_type.as_str()) {
                assert_ne!(from(0), "DequantizeLinear", "{} computes on int8 values", node.name);
            }
        }
    }

    // The cache: requested version, one scale per float tensor, equal to the scales the Q/DQ
    // graph uses for the same tensors.
    let cache = CalibrationCache::read(&out.join("calib.cache")).unwrap();
    assert_eq!(cache.trt_version, 8502);
    assert_eq!(cache.algorithm, "EntropyCalibration2");
    let outputs = fp32.graph.as_ref().unwrap().node.iter().map(|n| n.output.len()).sum::<usize>();
    assert_eq!(cache.scales.len(), outputs + 1, "input + every node output");
    assert_eq!(cache.scales[0].0, "input");
    let qdq_scales = scalars(&qdq);
    let mut compared = 0;
    for (name, scale) in &cache.scales {
        assert!(*scale > 0.0 && scale.is_finite(), "{name}: {scale}");
        if let Some(s) = qdq_scales.get(&format!("{name}_scale")) {
            assert_eq!(s.to_bits(), scale.to_bits(), "{name}: cache {scale} vs Q/DQ {s}");
            compared += 1;
        }
    }
    assert!(compared >= 40, "only {compared} cache scales found in the Q/DQ graph");

    // The calibration tensors, for a device to recalibrate.
    let tensors = out.join("tensors");
    let manifest = TensorManifest::read(&tensors).unwrap();
    assert_eq!((manifest.files.len(), manifest.shape.clone()), (8, vec![1, 3, 256, 512]));
    let t0 = manifest.tensor(&tensors, 0).unwrap();
    assert!(t0.iter().all(|v| v.is_finite()) && t0.iter().any(|v| *v != t0[0]));

    // tract runs the QOperator products on int8 kernels: every integer product becomes a matrix
    // product reading int8 (the convolutions through im2col), and no float product with
    // constant weights is left.
    let optimized =
        tract_onnx::onnx().model_for_path(out.join("model.qop.onnx")).unwrap().into_optimized().unwrap();
    let (mut int8_products, mut float_weight_products) = (0, 0);
    for node in optimized.nodes() {
        let types: Vec<DatumType> =
            node.inputs.iter().map(|i| optimized.outlet_fact(*i).unwrap().datum_type).collect();
        if node.op().name() == "OptMatMul" {
            if types.contains(&DatumType::I8) {
                int8_products += 1;
            } else if types.len() == 1 {
                float_weight_products += 1;
            }
        }
    }
    assert_eq!(int8_products, integer, "int8 matrix products in tract's optimised graph");
    assert_eq!(float_weight_products, 0);

    // onnxruntime runs both forms; their labels agree with fp32 on a calibration frame.
    let input = tensors.join("x.npy");
    semask_train::arrays::write_npy(&input, &[1, 3, 256, 512], &t0).unwrap();
    let mut logits = Vec::new();
    for (name, model) in
        [("fp32", builtin_fp32()), ("qdq", out.join("model.qdq.onnx")), ("qop", out.join("model.qop.onnx"))]
    {
        let o = dir.path().join(name);
        run_reference(
            "onnx_run.py",
            &[model.to_str().unwrap(), input.to_str().unwrap(), o.to_str().unwrap()],
        );
        logits.push(read_npy(&o.join("logits.npy")).unwrap());
    }
    let labels = |(shape, v): &(Vec<usize>, Vec<f32>)| -> Vec<usize> {
        let (k, n) = (shape[1], shape[2] * shape[3]);
        (0..n).map(|p| (0..k).max_by(|&a, &b| v[a * n + p].total_cmp(&v[b * n + p])).unwrap()).collect()
    };
    let reference = labels(&logits[0]);
    for (name, l) in ["qdq", "qop"].iter().zip(&logits[1..]) {
        let ours = labels(l);
        let agree =
            ours.iter().zip(&reference).filter(|(a, b)| a == b).count() as f64 / reference.len() as f64;
        eprintln!("onnxruntime {name}: {:.2} % of logit-grid labels agree with fp32", agree * 100.0);
        assert!(agree >= 0.97, "onnxruntime {name}: {:.2} %", agree * 100.0);
    }
}

#[test]
fn quantize_refuses_bad_input_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let model = builtin_fp32();
    util::assert_clear_error(
        &run_train(&["quantize", "--model", "missing.onnx", "--out", out.to_str().unwrap()]),
        &["missing.onnx"],
    );
    util::assert_clear_error(
        &run_train(&[
            "quantize",
            "--model",
            model.to_str().unwrap(),
            "--calib",
            "nowhere/",
            "--out",
            out.to_str().unwrap(),
        ]),
        &["nowhere"],
    );
    util::assert_clear_error(
        &run_train(&[
            "quantize",
            "--model",
            model.to_str().unwrap(),
            "--count",
            "0",
            "--out",
            out.to_str().unwrap(),
        ]),
        &["--count 0"],
    );
    assert!(!out.join("model.qop.onnx").exists(), "nothing is written for a failed run");
    // The artifacts may not overwrite the model they are made from.
    let folder = dir.path().join("m");
    std::fs::create_dir(&folder).unwrap();
    let inside = folder.join("model.qop.onnx");
    std::fs::copy(&model, &inside).unwrap();
    util::assert_clear_error(
        &run_train(&["quantize", "--model", inside.to_str().unwrap(), "--out", folder.to_str().unwrap()]),
        &["--out", "model.qop.onnx", "input"],
    );
    assert_eq!(std::fs::read(&inside).unwrap(), std::fs::read(&model).unwrap());
}

/// `--device gpu` calibrates with burn evaluating the exported graph node by node; here that
/// evaluator runs on the CPU (flex) against tract over every node output of the built-in model
/// (on a GPU: gpu.rs).
#[test]
fn calibration_on_a_burn_device_sees_what_tract_sees() {
    let (worst, name) = util::compare_calibration_taps(&semask_train::cpu());
    eprintln!("burn (flex) vs tract: worst node output difference {worst:.2e} ({name})");
    assert!(worst <= 1e-4, "{name} differs by {worst:e} of its largest value");
}
