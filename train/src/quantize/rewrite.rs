//! The two int8 forms of an fp32 graph.
//!
//! Only products with a constant weight are quantized: `MatMul` whose second input is an
//! initializer `[in, out]`, `Conv` with an initializer kernel, `Gemm` (alpha = beta = 1) with an
//! initializer `B`. Their activation input gets a per-tensor symmetric int8 scale from
//! calibration, their weights a symmetric per-output-channel scale. Everything else stays float:
//! LayerNorm, Softmax, GELU, residual adds, and the attention products of two activations
//! (`q k^T`, `attn v`), whose Softmax input/output would need per-tensor scales over values
//! spanning many orders of magnitude (and tract 0.23.9 mis-folds DQ -> Softmax -> Q).
//!
//! - [`to_qdq`]: `QuantizeLinear -> DequantizeLinear` on each quantized activation, int8
//!   weights behind `DequantizeLinear(axis)`: explicit quantization, what TensorRT 8.5+ builds
//!   int8 engines from (and what onnxruntime and tract run as float "fake quantization").
//! - [`to_qop`]: `QuantizeLinear -> MatMulInteger / ConvInteger -> Cast -> Mul(scale)`: integer
//!   products that tract runs on its int8 kernels (and onnxruntime on its own), the float
//!   rescale `s_x * s_w[c]` per output channel, the bias added in float after it.

use std::collections::{BTreeMap, HashMap};

use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

use crate::onnx::graph::{Graph, attr_int, f32_values, tensor_f32, tensor_i8};

/// Kind of quantized product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Product {
    MatMul,
    Conv,
    Gemm { trans_b: bool },
}

/// One node whose activation input and weights become int8.
#[derive(Debug, Clone)]
pub struct Target {
    /// Index of the node in the graph.
    pub node: usize,
    pub product: Product,
    /// Activation input (input 0).
    pub activation: String,
    /// Weight initializer (input 1).
    pub weight: String,
}

/// The quantizable products of `graph` (see the module documentation).
pub fn targets(graph: &pb::GraphProto) -> Vec<Target> {
    let initializers: HashMap<&str, &pb::TensorProto> =
        graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let float_init = |name: &str, rank: usize| {
        initializers.get(name).is_some_and(|t| t.data_type == DataType::Float as i32 && t.dims.len() == rank)
    };
    let attr = |node: &pb::NodeProto, name: &str| node.attribute.iter().find(|a| a.name == name).cloned();
    graph
        .node
        .iter()
        .enumerate()
        .filter_map(|(i, node)| {
            let (a, w) = (node.input.first()?, node.input.get(1)?);
            if initializers.contains_key(a.as_str()) {
                return None;
            }
            let product = match node.op_type.as_str() {
                "MatMul" if float_init(w, 2) => Product::MatMul,
                "Conv" if float_init(w, 4) && attr(node, "group").is_none_or(|g| g.i == 1) => Product::Conv,
                "Gemm"
                    if float_init(w, 2)
                        && attr(node, "alpha").is_none_or(|a| a.f == 1.0)
                        && attr(node, "beta").is_none_or(|b| b.f == 1.0)
                        && attr(node, "transA").is_none_or(|t| t.i == 0) =>
                {
                    Product::Gemm { trans_b: attr(node, "transB").is_some_and(|t| t.i == 1) }
                }
                _ => return None,
            };
            Some(Target { node: i, product, activation: a.clone(), weight: w.clone() })
        })
        .collect()
}

/// Weights quantized per output channel: int8 values in the original layout and one scale per
/// output channel.
pub struct QuantizedWeight {
    pub dims: Vec<usize>,
    pub values: Vec<i8>,
    pub scales: Vec<f32>,
    /// Axis of the output channels in `dims`.
    pub axis: usize,
}

/// Symmetric per-channel quantization of `w` (`dims`), channels along `axis`.
pub fn quantize_weight(dims: &[usize], w: &[f32], axis: usize) -> QuantizedWeight {
    let channels = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let channel_of = |i: usize| (i / inner) % channels;
    let mut amax = vec![0f32; channels];
    for (i, v) in w.iter().enumerate() {
        let c = channel_of(i);
        amax[c] = amax[c].max(v.abs());
    }
    // An all-zero channel (e.g. a SeMask gamma still at 0) gets scale 1: any scale is exact.
    let scales: Vec<f32> = amax.iter().map(|&a| if a > 0.0 { a / 127.0 } else { 1.0 }).collect();
    let values = w
        .iter()
        .enumerate()
        .map(|(i, v)| (v / scales[channel_of(i)]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    QuantizedWeight { dims: dims.to_vec(), values, scales, axis }
}

/// The activation scale for `amax` (int8, symmetric). A tensor that was zero on every frame
/// gets scale 1.
pub fn activation_scale(amax: f32) -> f32 {
    if amax > 0.0 { amax / 127.0 } else { 1.0 }
}

/// Output-channel axis of a target's weights.
fn weight_axis(product: Product) -> usize {
    match product {
        Product::MatMul => 1,
        Product::Conv => 0,
        Product::Gemm { trans_b } => usize::from(!trans_b),
    }
}

fn weight_of<'a>(graph: &'a pb::GraphProto, name: &str) -> (&'a pb::TensorProto, Vec<usize>, Vec<f32>) {
    let t = graph.initializer.iter().find(|t| t.name == name).expect("targets() checked the initializer");
    let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    (t, dims, f32_values(t).expect("float initializer"))
}

/// Scalar initializers of a quantized activation: scale (f32) and zero point (int8 0).
fn scale_and_zero(g: &mut Graph, base: &str, scale: f32) -> (String, String) {
    let s = g.initializer(tensor_f32(&format!("{base}_scale"), &[], &[scale]));
    let z = g.initializer(tensor_i8(&format!("{base}_zero_point"), &[], &[0]));
    (s, z)
}

/// A builder for nodes added to `graph`: the names `graph` uses stay reserved.
fn builder_for(graph: &pb::GraphProto) -> Graph {
    let mut g = Graph::default();
    for t in &graph.initializer {
        g.unique(&t.name);
    }
    for n in &graph.node {
        g.unique(&n.name);
        for o in &n.output {
            g.unique(o);
        }
    }
    g
}

/// The graph with explicit Q/DQ around each target (see the module documentation).
/// `amax` holds the calibrated threshold of every target activation.
pub fn to_qdq(model: &pb::ModelProto, targets: &[Target], amax: &HashMap<String, f32>) -> pb::ModelProto {
    let graph = model.graph.as_ref().expect("a graph");
    let mut g = builder_for(graph);
    let mut replaced_inputs: BTreeMap<usize, (String, String)> = BTreeMap::new();
    let mut dq_of_activation: HashMap<String, String> = HashMap::new();
    let mut quantized_weights: HashMap<String, String> = HashMap::new();
    let mut q_nodes = Vec::new();
    for target in targets {
        let a = &target.activation;
        let dq = dq_of_activation
            .entry(a.clone())
            .or_insert_with(|| {
                let (s, z) = scale_and_zero(&mut g, a, activation_scale(amax[a.as_str()]));
                let q = g.node("QuantizeLinear", &format!("{a}_QuantizeLinear"), &[a, &s, &z], vec![]);
                g.node("DequantizeLinear", &format!("{a}_DequantizeLinear"), &[&q, &s, &z], vec![])
            })
            .clone();
        let wdq = quantized_weights
            .entry(target.weight.clone())
            .or_insert_with(|| {
                let (_, dims, w) = weight_of(graph, &target.weight);
                let qw = quantize_weight(&dims, &w, weight_axis(target.product));
                let name = &target.weight;
                let values = g.initializer(tensor_i8(&format!("{name}_quantized"), &dims, &qw.values));
                let scales =
                    g.initializer(tensor_f32(&format!("{name}_scale"), &[qw.scales.len()], &qw.scales));
                let zeros = g.initializer(tensor_i8(
                    &format!("{name}_zero_point"),
                    &[qw.scales.len()],
                    &vec![0; qw.scales.len()],
                ));
                g.node(
                    "DequantizeLinear",
                    &format!("{name}_DequantizeLinear"),
                    &[&values, &scales, &zeros],
                    vec![attr_int("axis", qw.axis as i64)],
                )
            })
            .clone();
        replaced_inputs.insert(target.node, (dq, wdq));
    }
    q_nodes.append(&mut g.nodes);
    // Original nodes in order, each preceded by the Q/DQ nodes it reads.
    let quantized_weight_names: std::collections::HashSet<&String> =
        targets.iter().map(|t| &t.weight).collect();
    let mut nodes = Vec::new();
    let mut emitted = std::collections::HashSet::new();
    let producers: HashMap<String, usize> =
        q_nodes.iter().enumerate().flat_map(|(i, n)| n.output.iter().map(move |o| (o.clone(), i))).collect();
    for (i, node) in graph.node.iter().enumerate() {
        let mut node = node.clone();
        if let Some((dq, wdq)) = replaced_inputs.get(&i) {
            node.input[0] = dq.clone();
            node.input[1] = wdq.clone();
            for input in [dq, wdq] {
                emit_with_inputs(input, &q_nodes, &producers, &mut emitted, &mut nodes);
            }
        }
        nodes.push(node);
    }
    let mut initializers: Vec<pb::TensorProto> =
        graph.initializer.iter().filter(|t| !quantized_weight_names.contains(&t.name)).cloned().collect();
    initializers.extend(g.initializers);
    let mut out = model.clone();
    let new_graph = out.graph.as_mut().expect("a graph");
    new_graph.node = nodes;
    new_graph.initializer = initializers;
    out
}

/// Pushes the node producing `tensor` (and, first, the nodes producing its inputs) once.
fn emit_with_inputs(
    tensor: &str,
    pool: &[pb::NodeProto],
    producers: &HashMap<String, usize>,
    emitted: &mut std::collections::HashSet<usize>,
    out: &mut Vec<pb::NodeProto>,
) {
    let Some(&i) = producers.get(tensor) else { return };
    if emitted.contains(&i) {
        return;
    }
    for input in &pool[i].input {
        emit_with_inputs(input, pool, producers, emitted, out);
    }
    emitted.insert(i);
    out.push(pool[i].clone());
}

/// The graph with integer products (see the module documentation).
pub fn to_qop(model: &pb::ModelProto, targets: &[Target], amax: &HashMap<String, f32>) -> pb::ModelProto {
    let graph = model.graph.as_ref().expect("a graph");
    let mut g = builder_for(graph);
    let by_node: HashMap<usize, &Target> = targets.iter().map(|t| (t.node, t)).collect();
    let mut quantized_activation: HashMap<String, (String, f32)> = HashMap::new();
    let mut nodes = Vec::new();
    for (i, node) in graph.node.iter().enumerate() {
        let Some(target) = by_node.get(&i) else {
            nodes.push(node.clone());
            continue;
        };
        let a = &target.activation;
        let (aq, sa) = match quantized_activation.get(a) {
            Some(v) => v.clone(),
            None => {
                let sa = activation_scale(amax[a.as_str()]);
                let (s, z) = scale_and_zero(&mut g, a, sa);
                let q = g.node("QuantizeLinear", &format!("{a}_QuantizeLinear"), &[a, &s, &z], vec![]);
                nodes.append(&mut g.nodes);
                quantized_activation.insert(a.clone(), (q.clone(), sa));
                (q, sa)
            }
        };
        let (_, dims, w) = weight_of(graph, &target.weight);
        let out_name = node.output[0].clone();
        let base = node.name.clone();
        let (int_out, channels, rescale_shape) = match target.product {
            Product::MatMul | Product::Gemm { .. } => {
                // MatMulInteger wants B as [in, out].
                let (dims, w) = match target.product {
                    Product::Gemm { trans_b: true } => {
                        let (o, k) = (dims[0], dims[1]);
                        let mut t = vec![0f32; w.len()];
                        for r in 0..o {
                            for c in 0..k {
                                t[c * o + r] = w[r * k + c];
                            }
                        }
                        (vec![k, o], t)
                    }
                    _ => (dims, w),
                };
                let qw = quantize_weight(&dims, &w, 1);
                let wq = g.initializer(tensor_i8(&format!("{}_quantized", target.weight), &dims, &qw.values));
                let y = g.node("MatMulInteger", &format!("{base}_MatMulInteger"), &[&aq, &wq], vec![]);
                (y, qw.scales, vec![qw.dims[1]])
            }
            Product::Conv => {
                let qw = quantize_weight(&dims, &w, 0);
                let wq = g.initializer(tensor_i8(&format!("{}_quantized", target.weight), &dims, &qw.values));
                // Same geometry as the float Conv.
                let attributes: Vec<pb::AttributeProto> =
                    node.attribute.iter().filter(|a| a.name != "group").cloned().collect();
                let y = g.node("ConvInteger", &format!("{base}_ConvInteger"), &[&aq, &wq], attributes);
                (y, qw.scales, vec![1, dims[0], 1, 1])
            }
        };
        let f = g.node(
            "Cast",
            &format!("{base}_Cast"),
            &[&int_out],
            vec![attr_int("to", DataType::Float as i32 as i64)],
        );
        let scales: Vec<f32> = channels.iter().map(|sw| sa * sw).collect();
        let sname = g.initializer(tensor_f32(&format!("{base}_rescale"), &rescale_shape, &scales));
        let bias = match target.product {
            Product::Conv | Product::Gemm { .. } => node.input.get(2).filter(|b| !b.is_empty()).cloned(),
            Product::MatMul => None,
        };
        match bias {
            None => {
                g.nodes.push(pb::NodeProto {
                    input: vec![f, sname],
                    output: vec![out_name],
                    name: format!("{base}_rescale"),
                    op_type: "Mul".into(),
                    ..Default::default()
                });
            }
            Some(b) => {
                let scaled = g.node("Mul", &format!("{base}_rescale"), &[&f, &sname], vec![]);
                // Conv biases are [O]: reshape them to [1, O, 1, 1] as a new initializer.
                let b = match target.product {
                    Product::Conv => {
                        let (_, bdims, bvalues) = weight_of(graph, &b);
                        g.initializer(tensor_f32(&format!("{b}_nchw"), &[1, bdims[0], 1, 1], &bvalues))
                    }
                    _ => b,
                };
                g.nodes.push(pb::NodeProto {
                    input: vec![scaled, b],
                    output: vec![out_name],
                    name: format!("{base}_bias"),
                    op_type: "Add".into(),
                    ..Default::default()
                });
            }
        }
        nodes.append(&mut g.nodes);
    }
    // Initializers still read: the untouched ones and the new ones (the float weights and Conv
    // biases of quantized products drop out).
    let used: std::collections::HashSet<String> =
        nodes.iter().flat_map(|n| n.input.iter().cloned()).collect();
    let mut initializers: Vec<pb::TensorProto> = graph.initializer.clone();
    initializers.extend(g.initializers);
    let mut out = model.clone();
    let new_graph = out.graph.as_mut().expect("a graph");
    new_graph.node = nodes;
    new_graph.initializer = initializers.into_iter().filter(|t| used.contains(&t.name)).collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_quantized_per_output_channel() {
        // [in 2, out 3] MatMul weight: channels along axis 1.
        let w = [1.0, -0.5, 0.0, -2.0, 0.25, 0.0];
        let q = quantize_weight(&[2, 3], &w, 1);
        assert_eq!(q.scales, [2.0 / 127.0, 0.5 / 127.0, 1.0]);
        assert_eq!(q.values, [64, -127, 0, -127, 64, 0]);
        // [O 2, I 1, 1, 2] conv kernel: channels along axis 0.
        let q = quantize_weight(&[2, 1, 1, 2], &[0.1, -0.2, 3.0, 1.5], 0);
        assert_eq!(q.scales, [0.2 / 127.0, 3.0 / 127.0]);
        assert_eq!(q.values, [64, -127, 127, 64]);
    }
}
