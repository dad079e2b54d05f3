//! Softmax and LayerNorm over the last axis of an f32 tensor, row by row, for tract.
//!
//! Why: Swin's attention normalises many short rows (49 scores per query in a 7x7 window) and
//! its LayerNorms run over 96..768 channels per token. tract 0.23.9 runs its softmax kernels
//! once per row, whose set-up costs more than a 49-element row (9 % of the tiny2 fixture's
//! network time), and expands ONNX `LayerNormalization` into six operators with a pass over the
//! tensor each (another ~15 %; `cargo bench --bench network -- --profile`). Here a row is read
//! while it is in cache, the loops run on 16 lanes that the compiler vectorises (AVX2 + FMA
//! where the CPU has them, else SSE2; NEON on aarch64), and rows are split across tract's
//! threads.
//!
//! - [`SoftmaxLastAxis`] replaces tract's `Softmax` on the last axis (swapped in by
//!   [`super::tract_ops::accelerate`]); after tract optimises, it takes in the constants added
//!   to its input just before it (Swin's attention bias and shift mask,
//!   [`super::tract_ops::accelerate_optimized`]).
//! - [`LayerNormLastAxis`] is what ONNX `LayerNormalization` on the last axis becomes when the
//!   model is parsed for the CPU backend ([`register_layer_norm`]); other forms (another axis,
//!   a stash type other than f32, the optional mean / inverse deviation outputs) keep tract's.

use std::sync::OnceLock;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cast::cast;
use tract_onnx::tract_hir::internal::{
    Expansion, InferenceOp, InferenceResult, Solver, TensorProxy, check_input_arity, check_output_arity,
    expand,
};

use super::tract_ops::{MAX_LEADING_AXES, RowIndex, broadcast_strides, tensor_by_rows};

/// Lanes of the vectorised loops (two AVX2 registers of f32, four NEON ones).
const LANES: usize = 16;

/// Defines `fn $name` whose body is compiled twice on x86-64: for AVX2 + FMA and for the SSE2
/// baseline the binary targets, the first the CPU has chosen at each call (the standard library
/// caches the detection; an AVX-512 copy is possible since rust-version went to 1.89 for gemm's
/// kernels, not tried yet: these rows are memory-bound). Elsewhere (aarch64, where NEON is baseline) it is compiled once. The same
/// arithmetic in the same order on every path (`LANES` does not depend on the vector width, and
/// Rust does not contract `a * b + c` into an FMA), so either gives the same values.
macro_rules! simd_variants {
    ($(#[$attr:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$attr])*
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn portable($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    portable($($arg),*)
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}

/// `e^x` for `x <= 0` (larger values are not expected; NaN gives NaN), to within 2 ulp:
/// Cephes' `expf` (range reduction by `ln 2` in two parts, degree-6 polynomial, exponent added
/// to the bits), written without branches or calls so that it vectorises. Below -87.3 the
/// result is 0, as `f32::exp` rounds it.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer (see QuantizeI8).
    const ROUND: f32 = 12_582_912.0;
    let clamped = x.max(-87.0);
    let n = (clamped * LOG2E + ROUND) - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // SAFETY: `n` is an integer in [-126, 0] (`clamped` is in [-87, 0]), which i32 holds
    // exactly; the unchecked conversion vectorises where `as` does not.
    let n = unsafe { n.to_int_unchecked::<i32>() };
    let scaled = e * f32::from_bits(((n + 127) as u32) << 23);
    // `x - x` is 0, except for NaN, which it carries into the result.
    #[allow(clippy::eq_op)]
    let nan_or_zero = x - x;
    if x < -87.0 { 0.0 } else { scaled + nan_or_zero }
}

/// `row` as whole chunks of `LANES` values and the rest (`<[f32]>::as_chunks`, which is stable
/// only from Rust 1.88, above the crate's minimum).
#[inline(always)]
fn chunks(row: &[f32]) -> (&[[f32; LANES]], &[f32]) {
    let (body, tail) = row.split_at(row.len() / LANES * LANES);
    // SAFETY: `body` holds a whole number of `[f32; LANES]`, which have f32's alignment and no
    // padding.
    (unsafe { std::slice::from_raw_parts(body.as_ptr().cast(), body.len() / LANES) }, tail)
}

/// [`chunks`], mutable.
#[inline(always)]
fn chunks_mut(row: &mut [f32]) -> (&mut [[f32; LANES]], &mut [f32]) {
    let (body, tail) = row.split_at_mut(row.len() / LANES * LANES);
    // SAFETY: as in `chunks`; `body` and `tail` do not overlap.
    (unsafe { std::slice::from_raw_parts_mut(body.as_mut_ptr().cast(), body.len() / LANES) }, tail)
}

/// `lanes` reduced to one value by `op`, pairwise (halves of constant widths, so that it stays
/// in registers and vectorises as shuffles).
#[inline(always)]
fn reduce(lanes: [f32; LANES], op: impl Fn(f32, f32) -> f32) -> f32 {
    let half: [f32; 8] = std::array::from_fn(|l| op(lanes[l], lanes[l + 8]));
    let quarter: [f32; 4] = std::array::from_fn(|l| op(half[l], half[l + 4]));
    op(op(quarter[0], quarter[2]), op(quarter[1], quarter[3]))
}

/// The largest value of `row`, -inf for an empty row. With NaN in the row, NaN or the largest
/// other value: the softmax of such a row is NaN either way (see [`softmax_rows`]).
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let (body, tail) = chunks(row);
    let mut max = [f32::NEG_INFINITY; LANES];
    max[..tail.len()].copy_from_slice(tail);
    for chunk in body {
        for l in 0..LANES {
            max[l] = if chunk[l] > max[l] { chunk[l] } else { max[l] };
        }
    }
    reduce(max, |a, b| if a > b { a } else { b })
}

/// Replaces each `x` of `row` by `e^(x - max)` and returns their sum. The last partial chunk
/// goes through the vector loop too, padded with -inf (whose exponential is 0).
#[inline(always)]
fn exp_row(row: &mut [f32], max: f32) -> f32 {
    let (body, tail) = chunks_mut(row);
    let mut last = [f32::NEG_INFINITY; LANES];
    last[..tail.len()].copy_from_slice(tail);
    let mut sum = [0.0f32; LANES];
    for chunk in body.iter_mut() {
        for l in 0..LANES {
            chunk[l] = exp_nonpositive(chunk[l] - max);
            sum[l] += chunk[l];
        }
    }
    for l in 0..LANES {
        last[l] = exp_nonpositive(last[l] - max);
        sum[l] += last[l];
    }
    tail.copy_from_slice(&last[..tail.len()]);
    reduce(sum, |a, b| a + b)
}

/// Rows whose softmax is computed together, step by step: each row's steps depend on one
/// another (maximum, then exponentials and their sum, then the scaling), and on rows as short
/// as Swin's (49 scores) a row at a time left the core waiting on those chains (2.5x slower).
const ROWS_TOGETHER: usize = 8;

simd_variants! {
    /// Softmax of each `row_len`-long row of `rows`, in place: `e^(x - max) / sum`. NaN
    /// anywhere in a row makes the row NaN (through the sum), as does +inf or a row of nothing
    /// but -inf (what the arithmetic gives; tract's own does the same).
    fn softmax_rows(rows: &mut [f32], row_len: usize) {
        // Plain loops, not iterator adaptors such as `for_each`: `Iterator::fold` is not
        // inlined into the feature-enabled copies and would run with the baseline's
        // instructions.
        for group in rows.chunks_mut(row_len * ROWS_TOGETHER) {
            let mut max = [0.0f32; ROWS_TOGETHER];
            for (g, row) in group.chunks_exact(row_len).enumerate() {
                max[g] = row_max(row);
            }
            let mut sum = [0.0f32; ROWS_TOGETHER];
            for (g, row) in group.chunks_exact_mut(row_len).enumerate() {
                sum[g] = if max[g].is_finite() { exp_row(row, max[g]) } else { f32::NAN };
            }
            for (g, row) in group.chunks_exact_mut(row_len).enumerate() {
                // At least 1 (the maximum contributes e^0), or NaN.
                let inv = 1.0 / sum[g];
                for x in row.iter_mut() {
                    *x = if inv.is_nan() { f32::NAN } else { *x * inv };
                }
            }
        }
    }
}

/// ONNX / tract `Softmax` over the last axis of an f32 tensor, in place when the input is not
/// shared, optionally after adding constant terms to its input. See the module docs.
///
/// The terms are what Swin adds to each window's attention scores just before the softmax: the
/// relative position bias (`[heads, N, N]`) and, in shifted blocks, the shift mask
/// (`[windows, 1, N, N]`). As separate `Add`s each wrote and read the whole score tensor once
/// more; here a row gets its terms while it is in cache, just before its softmax.
/// [`super::tract_ops::accelerate_optimized`] takes them in ([`SoftmaxLastAxis::adding`]).
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct SoftmaxLastAxis {
    /// Inputs 1.. in order: constants added to input 0 before the softmax, `(x + t1) + t2`, as
    /// the `Add`s they replace did.
    added: Vec<AddedTerm>,
    /// The shape of input 0 the terms were planned for (empty when there are none).
    in_shape: Vec<usize>,
}

/// One term added before the softmax, broadcast over the input's leading axes.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct AddedTerm {
    shape: Vec<usize>,
    /// Step in the term's values per index of each leading axis of the input (0: broadcast).
    /// Along the last axis the term is contiguous and as long as a row.
    strides: Vec<usize>,
}

impl SoftmaxLastAxis {
    /// This softmax with one more term added to its input first (the next input), a tensor of
    /// `term_shape` broadcast to `in_shape` (the shape of input 0). `None` when it does not
    /// broadcast so, or when it would broadcast along the rows themselves (its last axis is not
    /// a row's length): those stay separate operators.
    pub fn adding(&self, in_shape: &[usize], term_shape: &[usize]) -> Option<SoftmaxLastAxis> {
        let rank = in_shape.len();
        if !self.added.is_empty() && self.in_shape != in_shape {
            return None;
        }
        if rank == 0
            || rank - 1 > MAX_LEADING_AXES
            || term_shape.len() > rank
            || term_shape.last() != in_shape.last()
            || in_shape.contains(&0)
        {
            return None;
        }
        let mut strides = broadcast_strides(term_shape, in_shape)?;
        strides.pop();
        let mut op = self.clone();
        op.added.push(AddedTerm { shape: term_shape.to_vec(), strides });
        op.in_shape = in_shape.to_vec();
        Some(op)
    }

    /// How many terms it adds before the softmax.
    pub fn added_terms(&self) -> usize {
        self.added.len()
    }
}

/// Adds `term` to `row`, element by element.
fn add_to_row(row: &mut [f32], term: &[f32]) {
    for (x, &t) in row.iter_mut().zip(term) {
        *x += t;
    }
}

impl Op for SoftmaxLastAxis {
    fn name(&self) -> StaticName {
        "SoftmaxLastAxis".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(self.added.iter().map(|t| format!("adds a {:?} term first", t.shape)).collect())
    }

    op_as_typed_op!();
}

impl EvalOp for SoftmaxLastAxis {
    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 1 + self.added.len(), "softmax expects {} inputs", 1 + self.added.len());
        let mut output = inputs.remove(0).into_tensor();
        let row_len = *output.shape().last().context("softmax of a scalar")?;
        ensure!(row_len > 0, "softmax over an empty axis");
        let mut terms: TVec<&[f32]> = tvec!();
        for (term, value) in self.added.iter().zip(&inputs) {
            ensure!(
                output.shape() == self.in_shape.as_slice() && value.shape() == term.shape.as_slice(),
                "SoftmaxLastAxis was planned for {:?} plus {:?}, got {:?} plus {:?}",
                self.in_shape,
                term.shape,
                output.shape(),
                value.shape()
            );
            terms.push(value.try_as_plain_ram()?.as_slice::<f32>()?);
        }
        let leading = &self.in_shape[..self.in_shape.len().saturating_sub(1)];
        {
            let mut view = output.try_as_plain_ram_mut()?;
            let data = view.as_slice_mut::<f32>()?;
            let total = data.len();
            tract_linalg::multithread::par_chunks_mut(data, row_len, total, |first_row, rows| {
                if terms.is_empty() {
                    softmax_rows(rows, row_len);
                    return Ok(());
                }
                let mut index = RowIndex::new(leading, first_row);
                for group in rows.chunks_mut(row_len * ROWS_TOGETHER) {
                    for row in group.chunks_exact_mut(row_len) {
                        for (term, values) in self.added.iter().zip(&terms) {
                            let at = index.offset(&term.strides);
                            add_to_row(row, &values[at..at + row_len]);
                        }
                        index.advance();
                    }
                    softmax_rows(group, row_len);
                }
                Ok(())
            })?;
        }
        Ok(tvec!(output.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for SoftmaxLastAxis {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// `(x - mean) / sqrt(var + epsilon) * scale + bias` over the last axis (mean and variance of
/// each row, variance by a second pass over the centred row, as ONNX defines it). `scale` and
/// `bias` hold one value per element of a row, or a single value.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct LayerNormLastAxis {
    /// As bits (ops are hashed).
    epsilon_bits: u32,
}

impl LayerNormLastAxis {
    pub fn new(epsilon: f32) -> Self {
        LayerNormLastAxis { epsilon_bits: epsilon.to_bits() }
    }
}

simd_variants! {
    /// Normalises `src` (one row) into `dst` (see [`LayerNormLastAxis`]).
    fn layer_norm_row(src: &[f32], scale: &[f32], bias: Option<&[f32]>, epsilon: f32, dst: &mut [f32]) {
        let n = src.len();
        let (body, tail) = chunks(src);
        let mut acc = [0.0f32; LANES];
        for chunk in body {
            for l in 0..LANES {
                acc[l] += chunk[l];
            }
        }
        let mean = (reduce(acc, |a, b| a + b) + tail.iter().sum::<f32>()) / n as f32;
        let mut acc = [0.0f32; LANES];
        for chunk in body {
            for l in 0..LANES {
                acc[l] += (chunk[l] - mean) * (chunk[l] - mean);
            }
        }
        let var = (reduce(acc, |a, b| a + b) + tail.iter().map(|&x| (x - mean) * (x - mean)).sum::<f32>()) / n as f32;
        let inv = 1.0 / (var + epsilon).sqrt();
        match bias {
            Some(bias) if scale.len() == n && bias.len() == n => {
                for i in 0..n {
                    dst[i] = (src[i] - mean) * inv * scale[i] + bias[i];
                }
            }
            None if scale.len() == n => {
                for i in 0..n {
                    dst[i] = (src[i] - mean) * inv * scale[i];
                }
            }
            _ => {
                let pick = |v: &[f32], i: usize| if v.len() == 1 { v[0] } else { v[i] };
                for i in 0..n {
                    dst[i] = (src[i] - mean) * inv * pick(scale, i) + bias.map_or(0.0, |b| pick(b, i));
                }
            }
        }
    }
}

impl Op for LayerNormLastAxis {
    fn name(&self) -> StaticName {
        "LayerNormLastAxis".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("epsilon {}", f32::from_bits(self.epsilon_bits))])
    }

    op_as_typed_op!();
}

impl EvalOp for LayerNormLastAxis {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 2 || inputs.len() == 3, "LayerNorm takes x, scale and an optional bias");
        let row_len = *inputs[0].shape().last().context("layer norm of a scalar")?;
        let x = inputs[0].try_as_plain_ram()?.as_slice::<f32>()?;
        let scale = inputs[1].try_as_plain_ram()?.as_slice::<f32>()?;
        let bias = inputs.get(2).map(|b| b.try_as_plain_ram()?.as_slice::<f32>()).transpose()?;
        for (what, v) in [("scale", Some(scale)), ("bias", bias)] {
            if let Some(v) = v {
                ensure!(
                    v.len() == row_len || v.len() == 1,
                    "LayerNorm {what} has {} values for rows of {row_len}",
                    v.len()
                );
            }
        }
        let epsilon = f32::from_bits(self.epsilon_bits);
        // SAFETY: `layer_norm_row` writes every element of `dst`; the rows of `x` are as long as the
        // output's (same shape).
        let output = unsafe {
            tensor_by_rows(
                inputs[0].shape(),
                row_len,
                || (),
                |_, r, dst| layer_norm_row(&x[r * row_len..(r + 1) * row_len], scale, bias, epsilon, dst),
            )?
        };
        Ok(tvec!(output.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for LayerNormLastAxis {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// How tract-onnx builds an operator from an ONNX node (its own alias is private).
type OpBuilder = fn(&ParsingContext, &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

/// tract's own builder for `LayerNormalization`, for the forms ours does not take: taken from a
/// fresh registry (never from one where ours was registered, which would make the fallback call
/// itself).
fn tract_layer_norm_builder() -> Option<OpBuilder> {
    static TRACT_LAYER_NORM: OnceLock<Option<OpBuilder>> = OnceLock::new();
    *TRACT_LAYER_NORM.get_or_init(|| tract_onnx::onnx().op_register.0.get("LayerNormalization").copied())
}

/// Makes `onnx` parse `LayerNormalization` on the last axis into [`LayerNormLastAxis`].
pub fn register_layer_norm(onnx: &mut tract_onnx::model::Onnx) {
    onnx.op_register.insert("LayerNormalization", layer_norm_builder);
}

fn layer_norm_builder(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let axis: isize = node.get_attr_opt("axis")?.unwrap_or(-1);
    let stash: DatumType = node.get_attr_opt("stash_type")?.unwrap_or(DatumType::F32);
    let outputs = node.output.iter().filter(|o| !o.is_empty()).count();
    if axis != -1 || stash != DatumType::F32 || outputs != 1 {
        let tract_builder = tract_layer_norm_builder().context("tract-onnx has no LayerNormalization")?;
        return tract_builder(ctx, node);
    }
    let epsilon: f32 = node.get_attr_opt("epsilon")?.unwrap_or(1e-5);
    Ok((expand(LayerNormExpansion { epsilon, have_bias: node.input.len() == 3 }), vec![]))
}

/// The parse-time form of [`LayerNormLastAxis`]: shapes and types for tract's inference, then
/// the typed operator (f32 in and out; other float types are cast around it, as ONNX's f32
/// stash type computes in f32).
#[derive(Clone, Debug)]
struct LayerNormExpansion {
    epsilon: f32,
    have_bias: bool,
}

impl Expansion for LayerNormExpansion {
    fn name(&self) -> StaticName {
        "LayerNormLastAxis".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2 + self.have_bias as usize)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let dt = model.outlet_fact(inputs[0])?.datum_type;
        let f32_inputs = inputs
            .iter()
            .enumerate()
            .map(|(i, &input)| {
                if model.outlet_fact(input)?.datum_type == DatumType::F32 {
                    Ok(input)
                } else {
                    Ok(model.wire_node(format!("{prefix}.cast_{i}"), cast(DatumType::F32), &[input])?[0])
                }
            })
            .collect::<TractResult<Vec<_>>>()?;
        let out = model.wire_node(prefix, LayerNormLastAxis::new(self.epsilon), &f32_inputs)?;
        if dt == DatumType::F32 {
            Ok(out)
        } else {
            model.wire_node(format!("{prefix}.cast_out"), cast(dt), &out)
        }
    }
}

#[cfg(test)]
mod tests {
    use tract_linalg::multithread::{Executor, multithread_tract_scope};
    use tract_onnx::pb;
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

    use super::*;

    /// Values in [-30, 30] that differ from element to element (large enough that a naive
    /// `e^x` would overflow f32 without the maximum subtracted).
    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * 7919 + seed * 104_729) % 6007) as f32 / 100.0 - 30.0).collect()
    }

    fn run_softmax(shape: &[usize], data: Vec<f32>, ours: bool) -> Vec<f32> {
        let input = tract_ndarray::ArrayD::from_shape_vec(shape, data).unwrap().into_tensor().into_tvalue();
        let ctx = EvalContext::out_of_plan();
        let out = if ours {
            SoftmaxLastAxis::default().eval(&ctx, tvec!(input)).unwrap()
        } else {
            let axes = tvec![shape.len() - 1];
            Softmax::new(axes, None, SoftmaxKind::Softmax).eval(&ctx, tvec!(input)).unwrap()
        };
        out[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec()
    }

    /// Against tract's own `Softmax` on row lengths around the 16 lanes (1, 15, 16, 17, 49, 1000)
    /// and row counts around the rows computed together, on one thread and on three; rows
    /// with masked entries (-100, as Swin's shift mask, and -inf) included.
    #[test]
    fn softmax_matches_tract() {
        let shapes: [&[usize]; 8] =
            [&[1], &[3, 1], &[5, 15], &[9, 16], &[2, 7, 17], &[128, 49], &[2, 3, 1000], &[17, 49]];
        let cases = || {
            for (seed, shape) in shapes.iter().enumerate() {
                let mut data = values(shape.iter().product(), seed);
                let row = *shape.last().unwrap();
                if row > 3 {
                    data[1] = -100.0;
                    data[2] = f32::NEG_INFINITY;
                }
                let expected = run_softmax(shape, data.clone(), false);
                let got = run_softmax(shape, data, true);
                for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                    assert!((g - e).abs() <= 1e-6 + 1e-5 * e.abs(), "{shape:?} [{i}]: {g} vs tract's {e}");
                }
                for r in got.chunks(row) {
                    assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{shape:?}: a row sums to 1");
                }
            }
        };
        cases();
        multithread_tract_scope(Executor::multithread(3), cases);
    }

    /// Softmax of `x + t1 + t2 ...` with the terms taken in, against numpy-style broadcast adds
    /// (ndarray) followed by tract's own `Softmax`: Swin's bias and shift mask, odd row lengths
    /// and row counts that do not split evenly over threads (so chunks start mid-axis), terms of
    /// lower rank, on one thread and on three.
    #[test]
    fn softmax_with_added_terms_matches_adds_then_tract() {
        let cases: [(&[usize], &[&[usize]]); 6] = [
            (&[5, 3, 49, 49], &[&[3, 49, 49], &[5, 1, 49, 49]]), // a shifted Swin block
            (&[2, 7, 17], &[&[17], &[2, 1, 17]]),
            (&[9, 16], &[&[9, 16]]),
            (&[3, 1, 4, 15], &[&[1, 15], &[3, 1, 1, 15]]),
            (&[6, 5, 33], &[&[6, 1, 33], &[1, 5, 33], &[33]]),
            (&[1, 1], &[&[1]]),
        ];
        let check = || {
            for (seed, (shape, terms)) in cases.iter().enumerate() {
                let x = tract_ndarray::ArrayD::from_shape_vec(*shape, values(shape.iter().product(), seed))
                    .unwrap();
                let mut op = SoftmaxLastAxis::default();
                let mut sum = x.clone();
                let mut inputs = tvec!(x.into_tensor().into_tvalue());
                for (t, term_shape) in terms.iter().enumerate() {
                    let mut term = values(term_shape.iter().product(), 100 + 10 * seed + t);
                    term[0] = -100.0; // as the shift mask
                    let term = tract_ndarray::ArrayD::from_shape_vec(*term_shape, term).unwrap();
                    sum = &sum + &term;
                    op = op.adding(shape, term_shape).unwrap();
                    inputs.push(term.into_tensor().into_tvalue());
                }
                let expected = run_softmax(shape, sum.into_raw_vec_and_offset().0, false);
                let out = op.eval(&EvalContext::out_of_plan(), inputs).unwrap();
                let got = out[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
                for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                    assert!((g - e).abs() <= 1e-6 + 1e-5 * e.abs(), "{shape:?} {terms:?} [{i}]: {g} vs {e}");
                }
            }
        };
        check();
        multithread_tract_scope(Executor::multithread(3), check);
    }

    /// Terms that do not broadcast to the input, or that would broadcast along a row, are left
    /// to separate operators; a term of another shape than planned is an error, not a misread.
    #[test]
    fn softmax_takes_in_only_terms_it_can_add_row_by_row() {
        let plain = SoftmaxLastAxis::default();
        assert!(plain.adding(&[4, 49], &[4, 1]).is_none(), "broadcast along the row");
        assert!(plain.adding(&[4, 49], &[3, 49]).is_none(), "does not broadcast");
        assert!(plain.adding(&[4, 49], &[2, 4, 49]).is_none(), "higher rank");
        assert!(plain.adding(&[], &[]).is_none(), "a scalar");
        let op = plain.adding(&[4, 49], &[49]).unwrap();
        assert!(op.adding(&[5, 49], &[49]).is_none(), "planned for another input");
        let inputs = tvec!(
            Tensor::zero::<f32>(&[4, 49]).unwrap().into_tvalue(),
            Tensor::zero::<f32>(&[48]).unwrap().into_tvalue()
        );
        let error = op.eval(&EvalContext::out_of_plan(), inputs).unwrap_err();
        assert!(format!("{error}").contains("planned for"), "{error}");
    }

    /// A row with NaN or +inf, or with nothing but -inf, is NaN; the other rows are untouched.
    #[test]
    fn softmax_rows_without_a_distribution_are_nan() {
        let row = 20;
        for poison in [&[f32::NAN][..], &[f32::INFINITY], &[f32::NEG_INFINITY; 20]] {
            let mut data = values(3 * row, 1);
            data[row..row + poison.len()].copy_from_slice(poison);
            let got = run_softmax(&[3, row], data.clone(), true);
            assert!(got[row..2 * row].iter().all(|x| x.is_nan()), "{poison:?}: the row is NaN");
            let clean = run_softmax(&[3, row], values(3 * row, 1), true);
            assert_eq!(got[..row], clean[..row]);
            assert_eq!(got[2 * row..], clean[2 * row..]);
        }
    }

    /// `e^x` within 2 ulp of the standard library's over [-87, 0], 0 below, NaN for NaN.
    #[test]
    fn exp_is_within_two_ulp() {
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let (got, want) = (exp_nonpositive(x), x.exp());
            let ulp = (got.to_bits() as i64 - want.to_bits() as i64).abs();
            assert!(ulp <= 2, "e^{x}: {got} vs {want} ({ulp} ulp)");
        }
        assert_eq!(exp_nonpositive(-88.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert!(exp_nonpositive(f32::NAN).is_nan());
    }

    fn attribute(name: &str, value: pb::AttributeProto) -> pb::AttributeProto {
        pb::AttributeProto { name: name.into(), ..value }
    }

    fn tensor(name: &str, dims: &[usize], data: Vec<f32>) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: pb::tensor_proto::DataType::Float as i32,
            float_data: data,
            ..Default::default()
        }
    }

    /// An ONNX model `y = LayerNormalization(x, scale[, bias])` on `shape`, with `axis`.
    fn layer_norm_model(shape: &[usize], axis: i64, epsilon: f32, bias: bool) -> pb::ModelProto {
        let c = *shape.last().unwrap();
        let info = |name: &str| pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: pb::tensor_proto::DataType::Float as i32,
                    shape: None,
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut inputs = vec!["x".to_string(), "scale".to_string()];
        let mut initializer = vec![tensor("scale", &[c], values(c, 7).iter().map(|v| v / 10.0).collect())];
        if bias {
            inputs.push("bias".into());
            initializer.push(tensor("bias", &[c], values(c, 8)));
        }
        let node = pb::NodeProto {
            op_type: "LayerNormalization".into(),
            input: inputs,
            output: vec!["y".into()],
            attribute: vec![
                attribute("axis", pb::AttributeProto { i: axis, r#type: 2, ..Default::default() }),
                attribute("epsilon", pb::AttributeProto { f: epsilon, r#type: 1, ..Default::default() }),
            ],
            ..Default::default()
        };
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }],
            graph: Some(pb::GraphProto {
                node: vec![node],
                input: vec![info("x")],
                output: vec![info("y")],
                initializer,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Runs `model` on `x` parsed by tract's ONNX front end, with our `LayerNormalization` or
    /// tract's; also returns the names of the typed model's operators.
    fn run_layer_norm(
        model: &pb::ModelProto,
        shape: &[usize],
        x: &[f32],
        ours: bool,
    ) -> (Vec<f32>, Vec<String>) {
        let mut onnx = tract_onnx::onnx();
        if ours {
            register_layer_norm(&mut onnx);
        }
        let mut parsed = onnx.parse(model, None).unwrap().model;
        parsed.set_input_fact(0, f32::fact(shape).into()).unwrap();
        let typed = parsed.into_typed().unwrap().into_decluttered().unwrap();
        let ops = typed.nodes().iter().map(|n| n.op().name().to_string()).collect();
        let plan = typed.into_runnable().unwrap();
        let input = tract_ndarray::ArrayD::from_shape_vec(shape, x.to_vec()).unwrap().into_tensor();
        let out = plan.run(tvec!(input.into_tvalue())).unwrap();
        (out[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec(), ops)
    }

    /// Ours against tract's expansion on channel counts around the 16 lanes (1, 7, 16, 32, 96,
    /// 100), with and without a bias, on one thread and three; an offset added to the input so
    /// that the mean matters, and rows of small variance so that epsilon does.
    #[test]
    fn layer_norm_matches_tract() {
        let cases = || {
            for (seed, (shape, bias)) in [
                (&[4, 1][..], true),
                (&[3, 5, 7], false),
                (&[2, 16], true),
                (&[1, 6272, 32], true),
                (&[2, 9, 96], true),
                (&[3, 100], false),
            ]
            .into_iter()
            .enumerate()
            {
                let model = layer_norm_model(shape, -1, 1e-5, bias);
                // Odd cases: a variance (~3e-4) where epsilon matters.
                let spread = if seed % 2 == 1 { 1e-3 } else { 1.0 };
                let x: Vec<f32> =
                    values(shape.iter().product(), seed).iter().map(|v| (v + 3.0) * spread).collect();
                let (expected, tract_ops) = run_layer_norm(&model, shape, &x, false);
                let (got, our_ops) = run_layer_norm(&model, shape, &x, true);
                assert!(our_ops.iter().any(|op| op == "LayerNormLastAxis"), "{shape:?}: {our_ops:?}");
                assert!(!tract_ops.iter().any(|op| op == "LayerNormLastAxis"));
                for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                    assert!((g - e).abs() <= 1e-5 * (1.0 + e.abs()), "{shape:?} [{i}]: {g} vs tract's {e}");
                }
            }
        };
        cases();
        multithread_tract_scope(Executor::multithread(3), cases);
    }

    /// Over another axis than the last, `LayerNormalization` stays tract's (same results).
    #[test]
    fn layer_norm_over_other_axes_is_left_to_tract() {
        let shape = [2, 3, 8];
        let model = layer_norm_model(&shape, 1, 1e-5, true);
        let x = values(48, 3);
        let model = pb::ModelProto {
            graph: model.graph.map(|mut g| {
                g.initializer =
                    vec![tensor("scale", &[3, 8], values(24, 1)), tensor("bias", &[3, 8], values(24, 2))];
                g
            }),
            ..model
        };
        let (expected, _) = run_layer_norm(&model, &shape, &x, false);
        let (got, ops) = run_layer_norm(&model, &shape, &x, true);
        assert!(!ops.iter().any(|op| op == "LayerNormLastAxis"), "{ops:?}");
        assert_eq!(got, expected);
        // Registered twice, the fallback is still tract's builder (not ours calling itself).
        let mut onnx = tract_onnx::onnx();
        register_layer_norm(&mut onnx);
        register_layer_norm(&mut onnx);
        let mut parsed = onnx.parse(&model, None).unwrap().model;
        parsed.set_input_fact(0, f32::fact(shape).into()).unwrap();
        assert!(parsed.into_typed().is_ok());
    }
}
