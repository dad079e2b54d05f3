//! The fp16 form of an exported graph: weights and activations in half precision, except
//! `LayerNormalization` and `Softmax`, which compute in fp32 (their inputs cast up, their outputs
//! cast back down): half-precision sums of squares and exponentials cost SeMask accuracy. The
//! graph's input and output stay fp32 (a `Cast` at each end), so every runtime feeds and reads it
//! as it does the fp32 graph.
//!
//! TensorRT 11 builds fp16 engines only from such a graph (its networks are strongly typed);
//! earlier versions may use it too, or the fp32 graph with their fp16 flag.

use std::collections::{HashMap, HashSet};

use half::f16;
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

use super::graph::{attr_int, f32_values};

/// Operators that compute in fp32 inside the fp16 graph.
pub const KEEP_FP32: [&str; 2] = ["LayerNormalization", "Softmax"];

/// Operators whose float outputs take the type of their float inputs: everything the exporter
/// writes ([`super::export::OPERATORS`]) and these. Anything else is refused rather than typed
/// wrongly.
const OTHER_FLOAT_OPS: [&str; 5] = ["Sub", "Sigmoid", "Gemm", "Identity", "Flatten"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Ty {
    F32,
    F16,
}

/// Why a model has no fp16 form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fp16Error {
    #[error("the model has no graph")]
    NoGraph,
    #[error("fp16 export does not know operator {op} (node {node})")]
    UnknownOperator { op: String, node: String },
    #[error("initializer {0} has no float data")]
    NoFloatData(String),
}

/// The fp16 form of `model` (see the module documentation).
pub fn to_fp16(model: &pb::ModelProto) -> Result<pb::ModelProto, Fp16Error> {
    let mut out = model.clone();
    let graph = out.graph.as_mut().ok_or(Fp16Error::NoGraph)?;
    let float = DataType::Float as i32;
    let want = |op: &str| if KEEP_FP32.contains(&op) { Ty::F32 } else { Ty::F16 };
    for node in &graph.node {
        let op = node.op_type.as_str();
        if !super::export::OPERATORS.contains(&op) && !OTHER_FLOAT_OPS.contains(&op) {
            return Err(Fp16Error::UnknownOperator { op: node.op_type.clone(), node: node.name.clone() });
        }
    }

    // Float initializers: the types their readers want.
    let float_inits: HashSet<String> =
        graph.initializer.iter().filter(|t| t.data_type == float).map(|t| t.name.clone()).collect();
    let mut wanted: HashMap<String, HashSet<Ty>> = HashMap::new();
    for node in &graph.node {
        for input in node.input.iter().filter(|i| float_inits.contains(*i)) {
            wanted.entry(input.clone()).or_default().insert(want(&node.op_type));
        }
    }
    // Convert in place when only fp16 readers; add an fp16 copy when both kinds read it.
    let mut half_name: HashMap<String, String> = HashMap::new();
    let mut copies = Vec::new();
    for tensor in graph.initializer.iter_mut().filter(|t| t.data_type == float) {
        let Some(types) = wanted.get(&tensor.name) else { continue };
        if !types.contains(&Ty::F16) {
            continue;
        }
        let values = f32_values(tensor).ok_or_else(|| Fp16Error::NoFloatData(tensor.name.clone()))?;
        let halves: Vec<u8> = values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect();
        if types.contains(&Ty::F32) {
            let name = format!("{}/fp16", tensor.name);
            copies.push(pb::TensorProto {
                name: name.clone(),
                dims: tensor.dims.clone(),
                data_type: DataType::Float16 as i32,
                raw_data: halves,
                ..Default::default()
            });
            half_name.insert(tensor.name.clone(), name);
        } else {
            tensor.data_type = DataType::Float16 as i32;
            tensor.float_data.clear();
            tensor.raw_data = halves;
            half_name.insert(tensor.name.clone(), tensor.name.clone());
        }
    }
    graph.initializer.extend(copies);

    // Activations: walk the (topologically ordered) nodes, casting where a reader wants the other
    // type. Each cast is made once per tensor.
    let mut ty: HashMap<String, Ty> = graph.input.iter().map(|i| (i.name.clone(), Ty::F32)).collect();
    let mut casts: HashMap<(String, Ty), String> = HashMap::new();
    let mut nodes = Vec::with_capacity(graph.node.len() * 2);
    for mut node in std::mem::take(&mut graph.node) {
        let target = want(&node.op_type);
        for input in node.input.iter_mut().filter(|i| !i.is_empty()) {
            if float_inits.contains(input.as_str()) {
                if target == Ty::F16 {
                    *input = half_name[input.as_str()].clone();
                }
                continue;
            }
            let Some(&have) = ty.get(input.as_str()) else { continue }; // int64 shape tensors
            if have != target {
                let key = (input.clone(), target);
                let cast = casts.entry(key).or_insert_with(|| {
                    let name = format!("{input}/to_{}", if target == Ty::F16 { "fp16" } else { "fp32" });
                    nodes.push(cast_node(input, &name, target));
                    name
                });
                *input = cast.clone();
            }
        }
        for output in &node.output {
            ty.insert(output.clone(), target);
        }
        nodes.push(node);
    }
    // The outputs stay fp32: rename what produces them and cast back under the original name.
    for output in &graph.output {
        if ty.get(&output.name) == Some(&Ty::F16) {
            let inner = format!("{}/fp16", output.name);
            for node in &mut nodes {
                for o in node.output.iter_mut().filter(|o| **o == output.name) {
                    *o = inner.clone();
                }
                for i in node.input.iter_mut().filter(|i| **i == output.name) {
                    *i = inner.clone();
                }
            }
            nodes.push(cast_node(&inner, &output.name, Ty::F32));
        }
    }
    graph.node = nodes;
    // Shapes are unchanged but intermediate types are not: let consumers infer them again.
    graph.value_info.clear();
    Ok(out)
}

fn cast_node(input: &str, output: &str, to: Ty) -> pb::NodeProto {
    let to = match to {
        Ty::F32 => DataType::Float,
        Ty::F16 => DataType::Float16,
    };
    pb::NodeProto {
        name: output.to_string(),
        op_type: "Cast".into(),
        input: vec![input.to_string()],
        output: vec![output.to_string()],
        attribute: vec![attr_int("to", to as i64)],
        ..Default::default()
    }
}
