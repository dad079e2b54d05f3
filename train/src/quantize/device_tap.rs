//! The calibration pass on a burn device (`semask-train --device gpu quantize`): the fp32 ONNX
//! graph evaluated node by node with burn tensors, every node output read back for the
//! statistics, as [`super::calibrate::TensorTap`] does in tract on the CPU.
//!
//! It runs the operators `semask-train export` writes ([`OPERATORS`]; static shapes, opset 17;
//! Pad with zeros, Resize bilinear with half-pixel centres). Any other graph (the raw
//! `torch.onnx.export` of the official code, for one) is refused with the operator named: it
//! calibrates in tract with `--device cpu`. Tensors of rank up to [`RANK`] are held as burn
//! tensors of that rank with leading axes of 1, which keeps ONNX's broadcasting (trailing axes
//! aligned) and lets one code path serve every rank.

use std::collections::HashMap;

use burn::tensor::activation::{relu, softmax};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use tract_onnx::pb;

use super::calibrate::Tap;
use crate::model::decoder::resize;
use crate::onnx::export::OPERATORS;
use crate::onnx::graph::{f32_values, i64_values};

/// The rank every tensor is held at.
pub const RANK: usize = 6;

/// A float tensor and its ONNX shape (`shape.len() <= RANK`).
#[derive(Clone)]
struct Value {
    tensor: Tensor<RANK>,
    shape: Vec<usize>,
}

impl Value {
    fn new(tensor: Tensor<RANK>, shape: Vec<usize>) -> Value {
        Value { tensor, shape }
    }

    /// `shape` with leading 1s to [`RANK`].
    fn padded(shape: &[usize]) -> [usize; RANK] {
        let mut dims = [1; RANK];
        dims[RANK - shape.len()..].copy_from_slice(shape);
        dims
    }

    fn from_values(values: Vec<f32>, shape: Vec<usize>, device: &Device) -> Value {
        let tensor = Tensor::from_data(TensorData::new(values, Value::padded(&shape)), device);
        Value { tensor, shape }
    }

    /// Every index of every axis (the leading ones included): what slicing narrows.
    fn full_ranges(&self) -> [std::ops::Range<usize>; RANK] {
        let dims = Value::padded(&self.shape);
        std::array::from_fn(|i| 0..dims[i])
    }

    fn reshape(self, shape: Vec<usize>) -> Value {
        Value { tensor: self.tensor.reshape(Value::padded(&shape)), shape }
    }

    /// The burn axis of ONNX axis `axis` (negative from the end).
    fn axis(&self, axis: i64) -> anyhow::Result<usize> {
        let rank = self.shape.len() as i64;
        let a = if axis < 0 { axis + rank } else { axis };
        anyhow::ensure!((0..rank).contains(&a), "axis {axis} of a rank-{rank} tensor");
        Ok(RANK - self.shape.len() + a as usize)
    }

    fn to_vec(&self) -> anyhow::Result<Vec<f32>> {
        self.tensor
            .clone()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("cannot read a tensor back from the device: {e:?}"))
    }
}

/// ONNX's broadcast shape of two shapes.
fn broadcast(a: &[usize], b: &[usize]) -> anyhow::Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let at = |s: &[usize], i: usize| if i + s.len() >= rank { s[i + s.len() - rank] } else { 1 };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            (x, y) => anyhow::bail!("shapes {a:?} and {b:?} do not broadcast ({x} vs {y})"),
        })
        .collect()
}

/// A node's attributes.
struct Attributes<'a>(&'a pb::NodeProto);

impl Attributes<'_> {
    fn get(&self, name: &str) -> Option<&pb::AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }
    fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map_or(default, |a| a.i)
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map_or(default, |a| a.f)
    }
    fn string(&self, name: &str) -> String {
        self.get(name).map_or(String::new(), |a| String::from_utf8_lossy(&a.s).into_owned())
    }
}

/// The graph ready to run on one device: weights uploaded once.
pub struct DeviceTap {
    device: Device,
    nodes: Vec<pb::NodeProto>,
    input_name: String,
    input_shape: Vec<usize>,
    floats: HashMap<String, Value>,
    ints: HashMap<String, Vec<i64>>,
    names: Vec<String>,
    /// Position in `names` of each observed tensor.
    wanted: HashMap<String, usize>,
}

impl DeviceTap {
    /// `names`: the node outputs to observe, in order (as [`super::calibrate::activation_names`]).
    pub fn new(proto: &pb::ModelProto, names: &[String], device: &Device) -> anyhow::Result<DeviceTap> {
        let graph = proto.graph.as_ref().ok_or_else(|| anyhow::anyhow!("the model has no graph"))?;
        if let Some(node) = graph.node.iter().find(|n| !OPERATORS.contains(&n.op_type.as_str())) {
            anyhow::bail!(
                "the graph has a {} node ({}), which the calibration on a GPU does not run (it runs \
                 the operators `semask-train export` writes): calibrate with --device cpu",
                node.op_type,
                node.name
            );
        }
        let mut floats = HashMap::new();
        let mut ints = HashMap::new();
        for init in &graph.initializer {
            let shape: Vec<usize> = init.dims.iter().map(|&d| d as usize).collect();
            anyhow::ensure!(
                shape.len() <= RANK,
                "initializer {} has rank {} > {RANK}",
                init.name,
                shape.len()
            );
            if let Some(values) = f32_values(init) {
                floats.insert(init.name.clone(), Value::from_values(values, shape, device));
            } else if let Some(values) = i64_values(init) {
                ints.insert(init.name.clone(), values);
            }
        }
        let input = graph
            .input
            .iter()
            .find(|i| !floats.contains_key(&i.name) && !ints.contains_key(&i.name))
            .ok_or_else(|| anyhow::anyhow!("the graph has no input"))?;
        let input_shape = static_shape(input).ok_or_else(|| {
            anyhow::anyhow!("the model input has no static shape; export it with a fixed --input-size")
        })?;
        Ok(DeviceTap {
            device: device.clone(),
            nodes: graph.node.clone(),
            input_name: input.name.clone(),
            input_shape,
            floats,
            ints,
            names: names.to_vec(),
            wanted: names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect(),
        })
    }

    /// Runs the graph on `input`; `visit(i, values)` for each observed tensor `names[i]`.
    fn run_graph(&self, input: &[f32], visit: &mut dyn FnMut(usize, &[f32])) -> anyhow::Result<()> {
        let wanted = &self.wanted;
        let mut values: HashMap<String, Value> = HashMap::new();
        let input = Value::from_values(input.to_vec(), self.input_shape.clone(), &self.device);
        if let Some(&i) = wanted.get(self.input_name.as_str()) {
            visit(i, &input.to_vec()?);
        }
        values.insert(self.input_name.clone(), input);
        for node in &self.nodes {
            let outputs = self
                .eval(node, &values)
                .map_err(|e| anyhow::anyhow!("{} node {}: {e:#}", node.op_type, node.name))?;
            for (name, value) in node.output.iter().zip(outputs) {
                if let Some(&i) = wanted.get(name.as_str()) {
                    visit(i, &value.to_vec()?);
                }
                values.insert(name.clone(), value);
            }
        }
        Ok(())
    }

    fn float(&self, values: &HashMap<String, Value>, name: &str) -> anyhow::Result<Value> {
        values
            .get(name)
            .or_else(|| self.floats.get(name))
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no float tensor {name:?}"))
    }

    fn int(&self, name: &str) -> anyhow::Result<&[i64]> {
        self.ints
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| anyhow::anyhow!("{name:?} is not a constant int64 tensor"))
    }

    fn eval(&self, node: &pb::NodeProto, values: &HashMap<String, Value>) -> anyhow::Result<Vec<Value>> {
        let attrs = Attributes(node);
        let input = |i: usize| -> anyhow::Result<Value> {
            let name = node.input.get(i).ok_or_else(|| anyhow::anyhow!("input {i} missing"))?;
            self.float(values, name)
        };
        let one = |v: Value| Ok(vec![v]);
        match node.op_type.as_str() {
            op @ ("Add" | "Mul" | "Div") => {
                let (a, b) = (input(0)?, input(1)?);
                let shape = broadcast(&a.shape, &b.shape)?;
                let tensor = match op {
                    "Add" => a.tensor.add(b.tensor),
                    "Mul" => a.tensor.mul(b.tensor),
                    _ => a.tensor.div(b.tensor),
                };
                one(Value::new(tensor, shape))
            }
            "Erf" => {
                let x = input(0)?;
                one(Value::new(x.tensor.erf(), x.shape))
            }
            "Relu" => {
                let x = input(0)?;
                one(Value::new(relu(x.tensor), x.shape))
            }
            "Softmax" => {
                let x = input(0)?;
                let axis = x.axis(attrs.int("axis", -1))?;
                one(Value::new(softmax(x.tensor, axis), x.shape))
            }
            "MatMul" => {
                let (a, b) = (input(0)?, input(1)?);
                anyhow::ensure!(a.shape.len() >= 2 && b.shape.len() >= 2, "MatMul of vectors");
                let (m, k) = (a.shape[a.shape.len() - 2], a.shape[a.shape.len() - 1]);
                let (k2, n) = (b.shape[b.shape.len() - 2], b.shape[b.shape.len() - 1]);
                anyhow::ensure!(k == k2, "MatMul of {:?} by {:?}", a.shape, b.shape);
                let mut shape = broadcast(&a.shape[..a.shape.len() - 2], &b.shape[..b.shape.len() - 2])?;
                // Both operands expanded to the common batch axes.
                let expand = |v: Value, rows: usize, cols: usize| {
                    let mut dims = shape.clone();
                    dims.extend([rows, cols]);
                    v.tensor.expand(Value::padded(&dims))
                };
                let product = expand(a, m, k).matmul(expand(b, k, n));
                shape.extend([m, n]);
                one(Value::new(product, shape))
            }
            "Reshape" => {
                let x = input(0)?;
                let spec = self.int(&node.input[1])?;
                let total: usize = x.shape.iter().product();
                let mut shape: Vec<usize> = spec
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| if d == 0 { x.shape[i] } else { d.max(0) as usize })
                    .collect();
                if let Some(free) = spec.iter().position(|&d| d == -1) {
                    let known: usize =
                        shape.iter().enumerate().filter(|(i, _)| *i != free).map(|(_, d)| d).product();
                    shape[free] = total / known.max(1);
                }
                anyhow::ensure!(
                    shape.len() <= RANK && shape.iter().product::<usize>() == total,
                    "reshape {:?} to {spec:?}",
                    x.shape
                );
                one(x.reshape(shape))
            }
            "Transpose" => {
                let x = input(0)?;
                let rank = x.shape.len();
                let perm = attrs.ints("perm").unwrap_or_else(|| (0..rank as i64).rev().collect());
                anyhow::ensure!(perm.len() == rank, "perm {perm:?} of a rank-{rank} tensor");
                let lead = RANK - rank;
                let mut axes: [usize; RANK] = std::array::from_fn(|i| i);
                for (i, &p) in perm.iter().enumerate() {
                    axes[lead + i] = lead + p as usize;
                }
                let shape = perm.iter().map(|&p| x.shape[p as usize]).collect();
                one(Value::new(x.tensor.permute(axes), shape))
            }
            "Slice" => {
                let x = input(0)?;
                let starts = self.int(&node.input[1])?;
                let ends = self.int(&node.input[2])?;
                let axes: Vec<i64> = match node.input.get(3).filter(|n| !n.is_empty()) {
                    Some(name) => self.int(name)?.to_vec(),
                    None => (0..starts.len() as i64).collect(),
                };
                if let Some(steps) = node.input.get(4).filter(|n| !n.is_empty()) {
                    anyhow::ensure!(self.int(steps)?.iter().all(|&s| s == 1), "steps other than 1");
                }
                let mut ranges = x.full_ranges();
                let lead = RANK - x.shape.len();
                let mut shape = x.shape.clone();
                for ((&start, &end), &axis) in starts.iter().zip(ends).zip(&axes) {
                    let a = x.axis(axis)?;
                    let dim = x.shape[a - lead] as i64;
                    let clamp = |v: i64| (if v < 0 { v + dim } else { v }).clamp(0, dim) as usize;
                    let (s, e) = (clamp(start), clamp(end));
                    anyhow::ensure!(s < e, "empty slice {start}..{end} of axis {axis}");
                    ranges[a] = s..e;
                    shape[a - lead] = e - s;
                }
                one(Value::new(x.tensor.slice(ranges), shape))
            }
            "Split" => {
                let x = input(0)?;
                let a = x.axis(attrs.int("axis", 0))?;
                let lead = RANK - x.shape.len();
                let dim = x.shape[a - lead];
                let sizes: Vec<usize> = match node.input.get(1).filter(|n| !n.is_empty()) {
                    Some(name) => self.int(name)?.iter().map(|&s| s as usize).collect(),
                    None => vec![dim / node.output.len(); node.output.len()],
                };
                anyhow::ensure!(sizes.iter().sum::<usize>() == dim, "split {sizes:?} of {dim}");
                let mut start = 0;
                Ok(sizes
                    .iter()
                    .map(|&size| {
                        let mut ranges = x.full_ranges();
                        ranges[a] = start..start + size;
                        start += size;
                        let mut shape = x.shape.clone();
                        shape[a - lead] = size;
                        Value::new(x.tensor.clone().slice(ranges), shape)
                    })
                    .collect())
            }
            "Concat" => {
                let parts: Vec<Value> = (0..node.input.len()).map(input).collect::<anyhow::Result<_>>()?;
                let a = parts[0].axis(attrs.int("axis", 0))?;
                let lead = RANK - parts[0].shape.len();
                let mut shape = parts[0].shape.clone();
                shape[a - lead] = parts.iter().map(|p| p.shape[a - lead]).sum();
                one(Value::new(Tensor::cat(parts.into_iter().map(|p| p.tensor).collect(), a), shape))
            }
            "Pad" => {
                let x = input(0)?;
                anyhow::ensure!(matches!(attrs.string("mode").as_str(), "" | "constant"), "pad mode");
                if let Some(value) = node.input.get(2).filter(|n| !n.is_empty()) {
                    let v = self.float(values, value)?.to_vec()?;
                    anyhow::ensure!(v.iter().all(|&v| v == 0.0), "padding value other than 0");
                }
                let pads = self.int(&node.input[1])?;
                let rank = x.shape.len();
                anyhow::ensure!(pads.len() == 2 * rank && pads.iter().all(|&p| p >= 0), "pads {pads:?}");
                let shape: Vec<usize> = x
                    .shape
                    .iter()
                    .enumerate()
                    .map(|(i, d)| d + (pads[i] + pads[rank + i]) as usize)
                    .collect();
                let lead = RANK - rank;
                let ranges: [std::ops::Range<usize>; RANK] = std::array::from_fn(|i| {
                    if i < lead {
                        0..1
                    } else {
                        let begin = pads[i - lead] as usize;
                        begin..begin + x.shape[i - lead]
                    }
                });
                let zeros = Tensor::<RANK>::zeros(Value::padded(&shape), &self.device);
                one(Value::new(zeros.slice_assign(ranges, x.tensor), shape))
            }
            "LayerNormalization" => {
                let (x, scale, bias) = (input(0)?, input(1)?, input(2)?);
                let a = x.axis(attrs.int("axis", -1))?;
                anyhow::ensure!(a == RANK - 1, "LayerNormalization over axes other than the last");
                let eps = attrs.float("epsilon", 1e-5) as f64;
                let mean = x.tensor.clone().mean_dim(a);
                let centred = x.tensor.sub(mean);
                let var = centred.clone().powi_scalar(2).mean_dim(a);
                let normed = centred.div(var.add_scalar(eps).sqrt());
                one(Value::new(normed.mul(scale.tensor).add(bias.tensor), x.shape))
            }
            "Conv" => {
                let (x, w) = (input(0)?, input(1)?);
                let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
                    Some(_) => Some(input(2)?),
                    None => None,
                };
                anyhow::ensure!(x.shape.len() == 4 && w.shape.len() == 4, "Conv other than 2-D");
                let pair = |name: &str, default: usize| -> anyhow::Result<[usize; 2]> {
                    match attrs.ints(name) {
                        Some(v) if v.len() >= 2 => Ok([v[0] as usize, v[1] as usize]),
                        Some(v) => anyhow::bail!("{name} {v:?}"),
                        None => Ok([default; 2]),
                    }
                };
                let pads = attrs.ints("pads").unwrap_or(vec![0; 4]);
                anyhow::ensure!(
                    pads.len() == 4 && pads[0] == pads[2] && pads[1] == pads[3],
                    "asymmetric pads {pads:?}"
                );
                let options = ConvOptions::new(
                    pair("strides", 1)?,
                    [pads[0] as usize, pads[1] as usize],
                    pair("dilations", 1)?,
                    attrs.int("group", 1) as usize,
                );
                let x4: Tensor<4> = x.tensor.reshape(<[usize; 4]>::try_from(x.shape.as_slice())?);
                let w4: Tensor<4> = w.tensor.reshape(<[usize; 4]>::try_from(w.shape.as_slice())?);
                let b1 = bias.map(|b| b.tensor.reshape([b.shape.iter().product::<usize>()]));
                let y = conv2d(x4, w4, b1, options);
                let shape = y.dims().to_vec();
                one(Value::new(y.reshape(Value::padded(&shape)), shape))
            }
            "Resize" => {
                let x = input(0)?;
                anyhow::ensure!(
                    attrs.string("mode") == "linear"
                        && matches!(
                            attrs.string("coordinate_transformation_mode").as_str(),
                            "pytorch_half_pixel" | "half_pixel"
                        ),
                    "Resize other than bilinear with half-pixel centres"
                );
                let sizes = self.int(node.input.get(3).map(String::as_str).unwrap_or(""))?;
                anyhow::ensure!(x.shape.len() == 4 && sizes.len() == 4, "Resize other than NCHW by sizes");
                anyhow::ensure!(
                    sizes[0] as usize == x.shape[0] && sizes[1] as usize == x.shape[1],
                    "Resize of N or C"
                );
                let x4: Tensor<4> = x.tensor.reshape(<[usize; 4]>::try_from(x.shape.as_slice())?);
                let y = resize(x4, [sizes[2] as usize, sizes[3] as usize]);
                let shape = y.dims().to_vec();
                one(Value::new(y.reshape(Value::padded(&shape)), shape))
            }
            other => anyhow::bail!("unsupported operator {other}"),
        }
    }
}

impl Tap for DeviceTap {
    fn names(&self) -> &[String] {
        &self.names
    }

    fn run(&self, input: &[f32], visit: &mut dyn FnMut(usize, &[f32])) -> anyhow::Result<()> {
        self.run_graph(input, visit)
    }
}

/// A value info's dimensions, when all are fixed.
fn static_shape(info: &pb::ValueInfoProto) -> Option<Vec<usize>> {
    let Some(pb::type_proto::Value::TensorType(t)) = info.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    t.shape
        .as_ref()?
        .dim
        .iter()
        .map(|d| match d.value {
            Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => Some(v as usize),
            _ => None,
        })
        .collect()
}
