//! A small builder for ONNX graphs on the prost types that tract exposes (`tract_onnx::pb`):
//! nodes with unique names, initializers, attributes, value infos, and the model wrapper.
//! The exporter and the quantizer write every graph through it.

use std::collections::HashMap;

use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

/// The opset our graphs use (opset 17: `LayerNormalization` as one op, `Split` sizes as an
/// input). TensorRT 8.6+, onnxruntime and tract all read it.
pub const OPSET: i64 = 17;
/// IR version 8 goes with opset 17.
pub const IR_VERSION: i64 = 8;

/// Nodes and initializers of a graph under construction.
#[derive(Debug, Default)]
pub struct Graph {
    pub nodes: Vec<pb::NodeProto>,
    pub initializers: Vec<pb::TensorProto>,
    used: HashMap<String, usize>,
}

impl Graph {
    /// `base`, or `base_N` when `base` is taken: node and tensor names stay unique and readable
    /// (the calibration cache and TensorRT's logs show them).
    pub fn unique(&mut self, base: &str) -> String {
        let count = self.used.entry(base.to_string()).or_insert(0);
        *count += 1;
        if *count == 1 { base.to_string() } else { format!("{base}_{}", *count - 1) }
    }

    /// Adds node `op` named `name` (made unique) with one output of the same name.
    pub fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attributes: Vec<pb::AttributeProto>,
    ) -> String {
        self.node_n(op, name, inputs, 1, attributes).remove(0)
    }

    /// Adds node `op` with `outputs` outputs (`name`, `name:1`, ...).
    pub fn node_n(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        outputs: usize,
        attributes: Vec<pb::AttributeProto>,
    ) -> Vec<String> {
        let name = self.unique(name);
        let output: Vec<String> =
            (0..outputs).map(|i| if i == 0 { name.clone() } else { format!("{name}:{i}") }).collect();
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: output.clone(),
            name,
            op_type: op.into(),
            attribute: attributes,
            ..Default::default()
        });
        output
    }

    /// Adds a float initializer; returns its (unique) name.
    pub fn f32(&mut self, name: &str, dims: &[usize], values: Vec<f32>) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), values.len(), "{name}");
        let name = self.unique(name);
        self.initializers.push(tensor_f32(&name, dims, &values));
        name
    }

    /// Adds an int64 initializer (shapes, pads, axes); returns its name.
    pub fn i64(&mut self, name: &str, values: &[i64]) -> String {
        let name = self.unique(name);
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: vec![values.len() as i64],
            data_type: DataType::Int64 as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// Adds an initializer (renamed `name_N` if its name is taken); returns its name.
    pub fn initializer(&mut self, mut tensor: pb::TensorProto) -> String {
        let name = self.unique(&tensor.name);
        tensor.name.clone_from(&name);
        self.initializers.push(tensor);
        name
    }

    /// The graph with these inputs and outputs.
    pub fn finish(
        self,
        name: &str,
        inputs: Vec<pb::ValueInfoProto>,
        outputs: Vec<pb::ValueInfoProto>,
    ) -> pb::GraphProto {
        pb::GraphProto {
            name: name.into(),
            node: self.nodes,
            initializer: self.initializers,
            input: inputs,
            output: outputs,
            ..Default::default()
        }
    }
}

/// A float tensor proto (raw little-endian data).
pub fn tensor_f32(name: &str, dims: &[usize], values: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// An int8 tensor proto.
pub fn tensor_i8(name: &str, dims: &[usize], values: &[i8]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Int8 as i32,
        raw_data: values.iter().map(|&v| v as u8).collect(),
        ..Default::default()
    }
}

/// The float values of an initializer (raw data or `float_data`), or `None` for other types.
pub fn f32_values(tensor: &pb::TensorProto) -> Option<Vec<f32>> {
    if tensor.data_type != DataType::Float as i32 {
        return None;
    }
    if !tensor.raw_data.is_empty() {
        return Some(
            tensor.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        );
    }
    Some(tensor.float_data.clone())
}

/// The values of an int64 initializer (raw data or `int64_data`), or `None` for other types.
pub fn i64_values(tensor: &pb::TensorProto) -> Option<Vec<i64>> {
    if tensor.data_type != DataType::Int64 as i32 {
        return None;
    }
    if !tensor.raw_data.is_empty() {
        return Some(
            tensor
                .raw_data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
        );
    }
    Some(tensor.int64_data.clone())
}

/// A float tensor's value info with a static shape.
pub fn value_info_f32(name: &str, dims: &[usize]) -> pb::ValueInfoProto {
    value_info(name, DataType::Float, dims)
}

pub fn value_info(name: &str, elem: DataType, dims: &[usize]) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| pb::tensor_shape_proto::Dimension {
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(d as i64)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A model around `graph` with opset 17 (and `extra_opsets`, e.g. `com.microsoft`) and the
/// metadata entries.
pub fn model(graph: pb::GraphProto, metadata: &[(String, String)]) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "semask-train".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        metadata_props: metadata
            .iter()
            .map(|(k, v)| pb::StringStringEntryProto { key: k.clone(), value: v.clone() })
            .collect(),
        ..Default::default()
    }
}

pub fn attr_int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, values: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

pub fn attr_float(name: &str, value: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        f: value,
        ..Default::default()
    }
}

pub fn attr_string(name: &str, value: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::String as i32,
        s: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// Encodes `model` and writes it whole or not at all (creating the folder).
pub fn write_model(path: &std::path::Path, model: &pb::ModelProto) -> anyhow::Result<()> {
    use prost::Message;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs_err::create_dir_all(dir)?;
    }
    semask_edge::files::write_atomically(path, &model.encode_to_vec())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// Reads an ONNX model file.
pub fn read_model(path: &std::path::Path) -> anyhow::Result<pb::ModelProto> {
    use prost::Message;
    let bytes = fs_err::read(path)?;
    pb::ModelProto::decode(&bytes[..])
        .map_err(|e| anyhow::anyhow!("{} is not a readable ONNX model ({e}); re-export it", path.display()))
}
