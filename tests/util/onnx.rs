//! Small ONNX models built in the tests (prost messages of `tract_onnx::pb`).
#![allow(dead_code)]

use std::path::Path;

use prost::Message;
use tract_onnx::pb;

pub fn dim(n: i64) -> pb::tensor_shape_proto::Dimension {
    pb::tensor_shape_proto::Dimension {
        value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(n)),
        ..Default::default()
    }
}

pub fn sym(name: &str) -> pb::tensor_shape_proto::Dimension {
    pb::tensor_shape_proto::Dimension {
        value: Some(pb::tensor_shape_proto::dimension::Value::DimParam(name.into())),
        ..Default::default()
    }
}

pub fn value_info(name: &str, dims: Vec<pb::tensor_shape_proto::Dimension>) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim: dims }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A model of `nodes` from `input` (float, `dims`) to the output `logits`, with `initializers`.
pub fn model(
    nodes: Vec<pb::NodeProto>,
    dims: Vec<pb::tensor_shape_proto::Dimension>,
    initializers: Vec<pb::TensorProto>,
) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(pb::GraphProto {
            name: "test".into(),
            node: nodes,
            input: vec![value_info("input", dims)],
            output: vec![value_info("logits", vec![])],
            initializer: initializers,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

/// A one-node model `logits = Identity(input)` with the given input dimensions, written to `path`.
pub fn identity_model(path: &Path, dims: Vec<pb::tensor_shape_proto::Dimension>) {
    std::fs::write(path, model(vec![node("Identity", &["input"], "logits")], dims, vec![]).encode_to_vec())
        .unwrap();
}

/// An int64 constant tensor.
pub fn int64_tensor(name: &str, values: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: pb::tensor_proto::DataType::Int64 as i32,
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

/// Adds (or replaces) `metadata_props` entries.
pub fn set_props(model: &mut pb::ModelProto, props: &[(&str, &str)]) {
    for (k, v) in props {
        model.metadata_props.retain(|e| e.key != *k);
        model.metadata_props.push(pb::StringStringEntryProto { key: k.to_string(), value: v.to_string() });
    }
}
