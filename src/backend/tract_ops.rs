//! Operators we give tract where its own are slow for SeMask's graph, swapped in by
//! [`accelerate`] before tract optimises the model, or by [`accelerate_optimized`] after.
//!
//! - [`BilinearResize2d`] replaces ONNX `Resize` in linear mode with half-pixel coordinates on the
//!   last two axes of an NCHW f32 tensor: the decoder's ×2 upsamplings and its fusion resizes.
//!   tract 0.23.9's generic `Resize` copies and re-plans on every call; on the full SeMask-T at
//!   512x1024 it took 20 % of the network time (`cargo bench --bench network -- --profile`). This
//!   one uses the separable plan of [`crate::resample`] (PyTorch's arithmetic, the order of
//!   `upsample_bilinear2d`), forwards same-size resizes untouched, and splits planes across
//!   tract's threads.
//! - [`MoveAxisCopy`] replaces tract's `MoveAxis` (the window partition / reverse and head split
//!   transposes of Swin attention: 11 % of the full model) with a strided copy by contiguous runs;
//!   transposes of the two innermost axes (the patch embedding's NCHW -> NLC) go through 16x16
//!   blocks.
//! - [`BroadcastBinary`] replaces the f32 `Add`/`Sub`/`Mul` that tract leaves generic after
//!   optimisation: broadcasts whose repeated block is not a multiple of its SIMD width (the
//!   attention bias and shift mask of every window, 49x49; bias adds over 96 channels). These ran
//!   element by element; this one coalesces axes, runs contiguous rows, and splits rows across
//!   tract's threads.
//! - [`ConcatSlices`] replaces a tree of `Concat`s and `Slice`s (Swin's cyclic shift and
//!   reverse shift, `torch.roll` over two axes, and the crop after it) by one copy of boxes of
//!   its inputs: tract ran each slice and each concat as a pass over the tensor. A lone f32
//!   `Slice` (the un-pad crops after the window reverse) becomes a one-box `ConcatSlices`: the
//!   same copy, on all threads (tract's runs on one).
//! - [`PadConstant`] replaces tract's constant `Pad` of an f32 tensor (Swin pads each stage's
//!   feature map to whole windows before every block): tract's ran on one thread, the one
//!   operator of the full model that two threads did not speed up (25 ms per run either way).
//! - [`SoftmaxLastAxis`] (`super::tract_rows`) takes in the constants added just before it (the
//!   attention's relative position bias and shift mask), so the scores are not written and read
//!   once more per `Add`.
//! - An int8 QOperator model's layers (`QuantizeLinear`, `MatMulInteger` or `ConvInteger`,
//!   `Cast`, `Mul`, `Add`) each become one [`MatMulI8`] or [`ConvI8`] (`super::tract_i8`).
//! - [`QuantizeI8`] replaces tract's `QuantizeLinearI8` (f32 -> int8) where one is left (the
//!   int8 layers above quantize their own input with it): tract rounds element by element
//!   through a generic function; on the built-in model's int8 form it was 21 % of the network
//!   time. This one vectorises (clamp, then round half to even by the 1.5 * 2^23 trick, exact
//!   for the clamped range) and splits the tensor across tract's threads.

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::{Pad, PadMode, Slice, TypedConcat};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::nn::resize::{CoordTransformer, Interpolator, Resize};
use tract_onnx::tract_core::ops::nn::{GeluExact, Softmax, SoftmaxKind};
use tract_onnx::tract_core::ops::quant::QuantizeLinearI8;

use super::tract_gemm::{ConvF32, MatMulF32, ProductLayout};
use super::tract_i8::{ConvI8, Epilogue, InputLayout, MatMulI8};
use super::tract_rows::SoftmaxLastAxis;
use crate::resample::{LinearTap, linear_taps};

/// Bilinear resize of the last two axes (half-pixel centres, `align_corners=False`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct BilinearResize2d {
    pub out_height: usize,
    pub out_width: usize,
}

impl Op for BilinearResize2d {
    fn name(&self) -> StaticName {
        "BilinearResize2d".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("to {}x{}", self.out_height, self.out_width)])
    }

    op_as_typed_op!();
}

impl EvalOp for BilinearResize2d {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape();
        ensure!(shape.len() >= 2, "BilinearResize2d needs at least 2 axes, got {shape:?}");
        let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        if (h, w) == (self.out_height, self.out_width) {
            return Ok(tvec!(input));
        }
        let mut out_shape: TVec<usize> = shape.into();
        let rank = out_shape.len();
        out_shape[rank - 2] = self.out_height;
        out_shape[rank - 1] = self.out_width;
        let src = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let x_taps = linear_taps(w, self.out_width);
        let y_taps = linear_taps(h, self.out_height);
        let plane_out = self.out_height * self.out_width;
        // SAFETY: `resize_plane` writes each of the `out_height` rows of `out_width` values of
        // its plane (one per y tap, one value per x tap); `src` has `h * w` values per plane
        // (it is the input tensor of that shape).
        let output = unsafe {
            tensor_by_rows(
                &out_shape,
                plane_out,
                || vec![0f32; h * self.out_width],
                |rows, plane, out_plane| {
                    resize_plane(
                        &src[plane * h * w..(plane + 1) * h * w],
                        w,
                        &x_taps,
                        &y_taps,
                        rows,
                        out_plane,
                    )
                },
            )?
        };
        Ok(tvec!(output.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for BilinearResize2d {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape = inputs[0].shape.to_tvec();
        let rank = shape.len();
        shape[rank - 2] = self.out_height.to_dim();
        shape[rank - 1] = self.out_width.to_dim();
        Ok(tvec!(f32::fact(shape)))
    }

    as_op!();
}

/// One plane: every source row resized along x into `rows` (`[h][out_w]`), then each output row
/// blended from two of them, as PyTorch's `upsample_bilinear2d` does.
fn resize_plane(
    src: &[f32],
    w: usize,
    x_taps: &[LinearTap],
    y_taps: &[LinearTap],
    rows: &mut [f32],
    out: &mut [f32],
) {
    let out_w = x_taps.len();
    for (row, dst) in src.chunks_exact(w).zip(rows.chunks_exact_mut(out_w)) {
        for (d, t) in dst.iter_mut().zip(x_taps) {
            *d = t.w0 * row[t.i0 as usize] + t.w1 * row[t.i1 as usize];
        }
    }
    for (dst, t) in out.chunks_exact_mut(out_w).zip(y_taps) {
        let top = &rows[t.i0 as usize * out_w..(t.i0 as usize + 1) * out_w];
        let bottom = &rows[t.i1 as usize * out_w..(t.i1 as usize + 1) * out_w];
        for ((d, &a), &b) in dst.iter_mut().zip(top).zip(bottom) {
            *d = t.w0 * a + t.w1 * b;
        }
    }
}

/// An output walked as contiguous rows: its axes, outermost first, as `(length, strides)` with
/// one stride per operand (0 = broadcast), coalesced so the last axis is as long as possible.
/// Both [`BroadcastBinary`] (two operands) and [`MoveAxisCopy`] (one) iterate this way.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct RowWalk<const N: usize> {
    /// Never empty.
    axes: Vec<(usize, [usize; N])>,
}

impl<const N: usize> RowWalk<N> {
    /// From per-output-axis lengths and operand strides (axes of length 1 are dropped; an axis
    /// merges into the previous one when the previous steps over exactly it in every operand).
    fn new(lengths: &[usize], strides: &[[usize; N]]) -> Self {
        let mut axes: Vec<(usize, [usize; N])> = Vec::new();
        for (&len, &st) in lengths.iter().zip(strides) {
            if len == 1 {
                continue;
            }
            match axes.last_mut() {
                Some((prev_len, prev)) if (0..N).all(|k| prev[k] == st[k] * len) => {
                    *prev_len *= len;
                    *prev = st;
                }
                _ => axes.push((len, st)),
            }
        }
        if axes.is_empty() {
            axes.push((1, [0; N]));
        }
        RowWalk { axes }
    }

    /// Length and per-operand step of the innermost (row) axis.
    fn row(&self) -> (usize, [usize; N]) {
        *self.axes.last().expect("never empty")
    }

    /// Offset in every operand of the start of row `index`.
    fn offsets(&self, mut index: usize) -> [usize; N] {
        let mut offsets = [0; N];
        for &(len, strides) in self.axes[..self.axes.len() - 1].iter().rev() {
            let i = index % len;
            index /= len;
            for k in 0..N {
                offsets[k] += i * strides[k];
            }
        }
        offsets
    }
}

/// Most axes before a row that a [`RowIndex`] follows (tensors up to rank 8; Swin's have 4).
pub(super) const MAX_LEADING_AXES: usize = 7;

/// The index of a row over the axes before it (the row's values share one index on each), from
/// the row's number; [`RowIndex::advance`] steps to the next row without a division, for rows
/// as short as Swin's 49 scores. [`SoftmaxLastAxis`] follows its added terms with it and
/// [`ConcatSlices`] finds the boxes a row crosses.
pub(super) struct RowIndex<'a> {
    lengths: &'a [usize],
    index: [usize; MAX_LEADING_AXES],
}

impl<'a> RowIndex<'a> {
    /// Row number `row` over axes of `lengths` (at most [`MAX_LEADING_AXES`] of them).
    pub(super) fn new(lengths: &'a [usize], mut row: usize) -> Self {
        let mut index = [0; MAX_LEADING_AXES];
        for (axis, &len) in lengths.iter().enumerate().rev() {
            index[axis] = row % len;
            row /= len;
        }
        RowIndex { lengths, index }
    }

    /// The index on each axis.
    pub(super) fn axes(&self) -> &[usize] {
        &self.index[..self.lengths.len()]
    }

    /// Offset of the row's start in a tensor read with `strides` (one per axis).
    pub(super) fn offset(&self, strides: &[usize]) -> usize {
        strides.iter().zip(&self.index).map(|(s, i)| s * i).sum()
    }

    pub(super) fn advance(&mut self) {
        for (axis, &len) in self.lengths.iter().enumerate().rev() {
            self.index[axis] += 1;
            if self.index[axis] < len {
                return;
            }
            self.index[axis] = 0;
        }
    }
}

/// A new f32 tensor of `shape` whose rows of `row_len` values are each written in full by
/// `fill(scratch, row_index, row)`, rows split across tract's threads; `scratch` is made once per
/// chunk of rows by `new_scratch`. The tensor starts uninitialised: zeroing it first costs a
/// pass over the largest tensors of the network (the upsampled logits).
///
/// # Safety
///
/// `fill` must write every element of the row it is given (it may not read it first). Callers
/// check their inputs' shapes against the shapes the op was built for, so that no row is cut
/// short by an input shorter than expected.
pub(super) unsafe fn tensor_by_rows<S>(
    shape: &[usize],
    row_len: usize,
    new_scratch: impl Fn() -> S + Sync + Send,
    fill: impl Fn(&mut S, usize, &mut [f32]) + Sync + Send,
) -> TractResult<Tensor> {
    // SAFETY: each chunk's rows are written in full by `fill` (this function's contract).
    unsafe {
        tensor_by_row_chunks(shape, row_len, |first_row, chunk| {
            let mut scratch = new_scratch();
            for (r, row) in chunk.chunks_exact_mut(row_len).enumerate() {
                fill(&mut scratch, first_row + r, row);
            }
        })
    }
}

/// [`tensor_by_rows`] for writers that fill several rows at once: `fill(first_row, chunk)`
/// writes a chunk of whole rows, chunks split across tract's threads.
///
/// # Safety
///
/// `fill` must write every element of the chunk it is given (it may not read it first).
pub(super) unsafe fn tensor_by_row_chunks(
    shape: &[usize],
    row_len: usize,
    fill: impl Fn(usize, &mut [f32]) + Sync + Send,
) -> TractResult<Tensor> {
    let total: usize = shape.iter().product();
    ensure!(row_len > 0 && total.is_multiple_of(row_len), "{shape:?} does not split into rows of {row_len}");
    // SAFETY: every row is written in full by `fill` (this function's contract), and the rows
    // cover the tensor (checked above), before the tensor is read.
    let mut output = unsafe { Tensor::uninitialized::<f32>(shape)? };
    {
        let mut view = output.try_as_plain_ram_mut()?;
        let out = view.as_slice_mut::<f32>()?;
        tract_linalg::multithread::par_chunks_mut(out, row_len, total, |first_row, chunk| {
            fill(first_row, chunk);
            Ok(())
        })?;
    }
    Ok(output)
}

/// Row-major strides of `shape`.
fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        strides[i] = acc;
        acc *= shape[i];
    }
    strides
}

/// The strides that read a tensor of `shape` as if broadcast to `out_shape` (numpy's rules:
/// missing leading axes and axes of length 1 repeat, stride 0); `None` when it does not
/// broadcast so.
pub(super) fn broadcast_strides(shape: &[usize], out_shape: &[usize]) -> Option<Vec<usize>> {
    let rank = out_shape.len();
    if shape.len() > rank {
        return None;
    }
    let padded: Vec<usize> =
        std::iter::repeat_n(1, rank - shape.len()).chain(shape.iter().copied()).collect();
    let mut strides = vec![0; rank];
    let mut acc = 1;
    for i in (0..rank).rev() {
        match padded[i] {
            d if d == out_shape[i] && d != 1 => {
                strides[i] = acc;
                acc *= d;
            }
            1 => strides[i] = 0,
            _ => return None,
        }
    }
    Some(strides)
}

/// The arithmetic of a [`BroadcastBinary`].
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum BinaryKind {
    Add,
    Sub,
    Mul,
}

impl BinaryKind {
    fn from_name(name: &str) -> Option<BinaryKind> {
        match name {
            "Add" => Some(BinaryKind::Add),
            "Sub" => Some(BinaryKind::Sub),
            "Mul" => Some(BinaryKind::Mul),
            _ => None,
        }
    }

    #[inline(always)]
    fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryKind::Add => a + b,
            BinaryKind::Sub => a - b,
            BinaryKind::Mul => a * b,
        }
    }
}

/// `c = a op b` on f32 with numpy broadcasting, for static shapes known when the model is built.
///
/// The output is walked row by row ([`RowWalk`]); the inner loop runs over contiguous rows.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct BroadcastBinary {
    pub kind: BinaryKind,
    pub out_shape: Vec<usize>,
    /// The input shapes the walk was planned for; checked at each eval.
    in_shapes: [Vec<usize>; 2],
    walk: RowWalk<2>,
}

impl BroadcastBinary {
    /// `None` when the shapes do not broadcast to `out_shape`.
    pub fn new(kind: BinaryKind, a_shape: &[usize], b_shape: &[usize], out_shape: &[usize]) -> Option<Self> {
        let (sa, sb) = (broadcast_strides(a_shape, out_shape)?, broadcast_strides(b_shape, out_shape)?);
        let strides: Vec<[usize; 2]> = sa.iter().zip(&sb).map(|(&x, &y)| [x, y]).collect();
        let walk = RowWalk::new(out_shape, &strides);
        Some(BroadcastBinary {
            kind,
            out_shape: out_shape.to_vec(),
            in_shapes: [a_shape.to_vec(), b_shape.to_vec()],
            walk,
        })
    }
}

impl Op for BroadcastBinary {
    fn name(&self) -> StaticName {
        format!("Broadcast{:?}", self.kind).into()
    }

    op_as_typed_op!();
}

impl EvalOp for BroadcastBinary {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (a, b) = args_2!(inputs);
        ensure!(
            a.shape() == self.in_shapes[0].as_slice() && b.shape() == self.in_shapes[1].as_slice(),
            "Broadcast{:?} was planned for inputs {:?}, got {:?} and {:?}",
            self.kind,
            self.in_shapes,
            a.shape(),
            b.shape()
        );
        let a = a.try_as_plain_ram()?.as_slice::<f32>()?;
        let b = b.try_as_plain_ram()?.as_slice::<f32>()?;
        let (row_len, [a_step, b_step]) = self.walk.row();
        let kind = self.kind;
        // SAFETY: every branch writes each value of `dst`: the inputs have the shapes the walk
        // was planned for (checked above), so the zipped input runs are as long as the row.
        let output = unsafe {
            tensor_by_rows(
                &self.out_shape,
                row_len,
                || (),
                |_, row, dst| {
                    let [a_off, b_off] = self.walk.offsets(row);
                    match (a_step, b_step) {
                        (1, 1) => {
                            for ((d, &x), &y) in dst.iter_mut().zip(&a[a_off..]).zip(&b[b_off..]) {
                                *d = kind.apply(x, y);
                            }
                        }
                        (1, 0) => {
                            let y = b[b_off];
                            for (d, &x) in dst.iter_mut().zip(&a[a_off..]) {
                                *d = kind.apply(x, y);
                            }
                        }
                        (0, 1) => {
                            let x = a[a_off];
                            for (d, &y) in dst.iter_mut().zip(&b[b_off..]) {
                                *d = kind.apply(x, y);
                            }
                        }
                        _ => {
                            for (i, d) in dst.iter_mut().enumerate() {
                                *d = kind.apply(a[a_off + i * a_step], b[b_off + i * b_step]);
                            }
                        }
                    }
                },
            )?
        };
        Ok(tvec!(output.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for BroadcastBinary {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&self.out_shape)))
    }

    as_op!();
}

/// One box of a [`ConcatSlices`] output, copied from one of its inputs.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct CopiedBox {
    /// Which input it is read from.
    pub input: usize,
    /// Its first index in that input, and in the output, per axis.
    pub from: Vec<usize>,
    pub to: Vec<usize>,
    pub size: Vec<usize>,
}

/// The f32 tensor a tree of tract's `Concat`s and `Slice`s builds from its inputs, each box of
/// the output copied once from where it lies. Swin's cyclic shift (`torch.roll` over two axes)
/// is exported as two slices and a concat per axis, which tract's optimiser turns into four
/// slices, two concats along one axis and one along the other: four passes over the tensor,
/// four times per shifted block, where one copy does.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ConcatSlices {
    pub out_shape: Vec<usize>,
    /// The inputs' shapes (checked at each eval).
    in_shapes: Vec<Vec<usize>>,
    boxes: Vec<CopiedBox>,
    /// The innermost axis along which a box is narrower than the output or than its input,
    /// or an axis after it when that gives too few rows. A row of the output (its values for
    /// one index of every axis before this one) is assembled from contiguous runs, one per box
    /// that it crosses.
    split_axis: usize,
}

impl ConcatSlices {
    /// Ranks it plans for (a row is indexed by the axes before the split axis).
    pub const MAX_RANK: usize = MAX_LEADING_AXES + 1;
    /// Rows enough for tract's threads to share (it hands out rows in up to 4 groups per
    /// thread): 64 keep a Jetson AGX Orin's 12 cores busy.
    const MIN_ROWS: usize = 64;

    /// `None` unless every box lies inside its input and the output, and the boxes tile the
    /// output exactly (each value written once).
    pub fn new(out_shape: &[usize], in_shapes: Vec<Vec<usize>>, boxes: Vec<CopiedBox>) -> Option<Self> {
        let rank = out_shape.len();
        if rank > Self::MAX_RANK {
            return None;
        }
        let mut covered = 0;
        for b in &boxes {
            let source = in_shapes.get(b.input)?;
            if [source.len(), b.from.len(), b.to.len(), b.size.len()] != [rank; 4] {
                return None;
            }
            let inside =
                (0..rank).all(|a| b.from[a] + b.size[a] <= source[a] && b.to[a] + b.size[a] <= out_shape[a]);
            if !inside {
                return None;
            }
            covered += b.size.iter().product::<usize>();
        }
        let overlap = |x: &CopiedBox, y: &CopiedBox| {
            (0..rank).all(|a| x.to[a] < y.to[a] + y.size[a] && y.to[a] < x.to[a] + x.size[a])
        };
        let disjoint = boxes.iter().enumerate().all(|(i, x)| boxes[i + 1..].iter().all(|y| !overlap(x, y)));
        if !disjoint || covered != out_shape.iter().product::<usize>() || rank == 0 {
            return None;
        }
        let mut split_axis = (0..rank)
            .rev()
            .find(|&a| boxes.iter().any(|b| b.size[a] != out_shape[a] || b.size[a] != in_shapes[b.input][a]))
            .unwrap_or(0);
        // Rows are what threads share. A crop along an outer axis (Swin's un-pad of
        // [1, 133, 37, 7, 96] to 128 rows of windows) leaves one row: index rows by the next
        // axes too (every box spans them in full, so each row is still whole runs).
        while out_shape[..split_axis].iter().product::<usize>() < Self::MIN_ROWS && split_axis + 1 < rank {
            split_axis += 1;
        }
        Some(ConcatSlices { out_shape: out_shape.to_vec(), in_shapes, boxes, split_axis })
    }
}

impl Op for ConcatSlices {
    fn name(&self) -> StaticName {
        "ConcatSlices".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(self
            .boxes
            .iter()
            .map(|b| format!("{:?} at {:?} from input {} at {:?}", b.size, b.to, b.input, b.from))
            .collect())
    }

    op_as_typed_op!();
}

impl EvalOp for ConcatSlices {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == self.in_shapes.len(), "ConcatSlices expects {} inputs", self.in_shapes.len());
        let mut sources: TVec<&[f32]> = tvec!();
        for (input, shape) in inputs.iter().zip(&self.in_shapes) {
            ensure!(
                input.shape() == shape.as_slice(),
                "ConcatSlices was planned for an input of {shape:?}, got {:?}",
                input.shape()
            );
            sources.push(input.try_as_plain_ram()?.as_slice::<f32>()?);
        }
        if self.out_shape.contains(&0) {
            return Ok(tvec!(Tensor::zero::<f32>(&self.out_shape)?.into_tvalue()));
        }
        let split = self.split_axis;
        let row_len: usize = self.out_shape[split..].iter().product();
        // Values per index of the split axis (the same in the output and in every input: the
        // boxes span the axes after it in full).
        let inner: usize = self.out_shape[split + 1..].iter().product();
        let in_strides: Vec<Vec<usize>> = self.in_shapes.iter().map(|s| contiguous_strides(s)).collect();
        // SAFETY: the boxes tile the output (checked by `new`), so a row is written in full by
        // the runs of the boxes it crosses; the inputs have the shapes planned (checked above).
        let output = unsafe {
            tensor_by_rows(
                &self.out_shape,
                row_len,
                || (),
                |_, row, dst| {
                    let row_index = RowIndex::new(&self.out_shape[..split], row);
                    let index = row_index.axes();
                    for b in &self.boxes {
                        let crosses =
                            (0..split).all(|a| index[a] >= b.to[a] && index[a] < b.to[a] + b.size[a]);
                        if !crosses {
                            continue;
                        }
                        let strides = &in_strides[b.input];
                        let at =
                            (0..split).map(|a| (b.from[a] + index[a] - b.to[a]) * strides[a]).sum::<usize>()
                                + b.from[split] * inner;
                        let len = b.size[split] * inner;
                        dst[b.to[split] * inner..][..len].copy_from_slice(&sources[b.input][at..at + len]);
                    }
                },
            )?
        };
        Ok(tvec!(output.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for ConcatSlices {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&self.out_shape)))
    }

    as_op!();
}

/// tract's `Pad` in constant mode of an f32 tensor of static shape, rows split across tract's
/// threads: a row (the output's values for one index of every axis before the innermost padded
/// one) is the fill value where that index is in the padding, else the fill, one contiguous run
/// of the input, and the fill again.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct PadConstant {
    pub out_shape: Vec<usize>,
    /// The input shape it was planned for; checked at each eval.
    in_shape: Vec<usize>,
    /// Values added before the input on each axis.
    before: Vec<usize>,
    /// The fill value, as bits (`f32` is not `Hash`).
    value_bits: u32,
    /// The innermost padded axis (0 if none is padded).
    split_axis: usize,
}

impl PadConstant {
    /// Ranks it plans for (a row is indexed by the axes before the split axis).
    pub const MAX_RANK: usize = MAX_LEADING_AXES + 1;

    /// Padding `in_shape` by `pads` (before, after) per axis with `value`.
    pub fn new(in_shape: &[usize], pads: &[(usize, usize)], value: f32) -> Option<Self> {
        let rank = in_shape.len();
        if rank == 0 || rank > Self::MAX_RANK || pads.len() != rank {
            return None;
        }
        let split_axis = (0..rank).rev().find(|&a| pads[a] != (0, 0)).unwrap_or(0);
        Some(PadConstant {
            out_shape: in_shape.iter().zip(pads).map(|(&len, &(b, a))| b + len + a).collect(),
            in_shape: in_shape.to_vec(),
            before: pads.iter().map(|&(b, _)| b).collect(),
            value_bits: value.to_bits(),
            split_axis,
        })
    }
}

impl Op for PadConstant {
    fn name(&self) -> StaticName {
        "PadConstant".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{:?} -> {:?} with {}",
            self.in_shape,
            self.out_shape,
            f32::from_bits(self.value_bits)
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for PadConstant {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(
            input.shape() == self.in_shape.as_slice(),
            "PadConstant was planned for {:?}, got {:?}",
            self.in_shape,
            input.shape()
        );
        let value = f32::from_bits(self.value_bits);
        if self.out_shape.contains(&0) {
            return Ok(tvec!(Tensor::zero::<f32>(&self.out_shape)?.into_tvalue()));
        }
        let src = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let split = self.split_axis;
        let row_len: usize = self.out_shape[split..].iter().product();
        // Values per index of the split axis, the same in the input and the output (no axis
        // after it is padded).
        let inner: usize = self.out_shape[split + 1..].iter().product();
        let in_strides = contiguous_strides(&self.in_shape);
        let (before, run) = (self.before[split] * inner, self.in_shape[split] * inner);
        // SAFETY: each row is written in full (fill, or fill + run + fill, `before + run <=
        // row_len`); the input has the planned shape (checked above), so the run is inside it.
        let output = unsafe {
            tensor_by_rows(
                &self.out_shape,
                row_len,
                || (),
                |_, row, dst| {
                    let row_index = RowIndex::new(&self.out_shape[..split], row);
                    let index = row_index.axes();
                    let inside = (0..split)
                        .all(|a| index[a] >= self.before[a] && index[a] < self.before[a] + self.in_shape[a]);
                    if !inside {
                        dst.fill(value);
                        return;
                    }
                    let at: usize = (0..split).map(|a| (index[a] - self.before[a]) * in_strides[a]).sum();
                    let (head, rest) = dst.split_at_mut(before);
                    let (copied, tail) = rest.split_at_mut(run);
                    head.fill(value);
                    copied.copy_from_slice(&src[at..at + run]);
                    tail.fill(value);
                },
            )?
        };
        Ok(tvec!(output.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for PadConstant {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&self.out_shape)))
    }

    as_op!();
}

/// tract's `MoveAxis` (one axis moved to another position) as one strided copy, for f32 tensors
/// of static shape: contiguous runs are copied as slices, transposes block by block
/// (`transpose_block_rows`), rows split across tract's threads.
/// tract's own clones a shared input, then permutes element by element.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct MoveAxisCopy {
    pub out_shape: Vec<usize>,
    /// The input shape the walk was planned for; checked at each eval.
    in_shape: Vec<usize>,
    walk: RowWalk<1>,
}

impl MoveAxisCopy {
    /// Moving axis `from` of a tensor shaped `in_shape` to position `to`.
    pub fn new(in_shape: &[usize], from: usize, to: usize) -> Option<Self> {
        let rank = in_shape.len();
        if from >= rank || to >= rank {
            return None;
        }
        let mut order: Vec<usize> = (0..rank).collect();
        let axis = order.remove(from);
        order.insert(to, axis);
        let in_strides = contiguous_strides(in_shape);
        let out_shape: Vec<usize> = order.iter().map(|&a| in_shape[a]).collect();
        let strides: Vec<[usize; 1]> = order.iter().map(|&a| [in_strides[a]]).collect();
        Some(MoveAxisCopy {
            walk: RowWalk::new(&out_shape, &strides),
            out_shape,
            in_shape: in_shape.to_vec(),
        })
    }
}

impl Op for MoveAxisCopy {
    fn name(&self) -> StaticName {
        "MoveAxisCopy".into()
    }

    op_as_typed_op!();
}

impl EvalOp for MoveAxisCopy {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(
            input.shape() == self.in_shape.as_slice(),
            "MoveAxisCopy was planned for {:?}, got {:?}",
            self.in_shape,
            input.shape()
        );
        let src = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let (row_len, [step]) = self.walk.row();
        // Rows that start at consecutive input values: the two innermost axes transposed (the
        // patch embedding's NCHW -> NLC, the backbone outputs' NLC -> NCHW). So many in a run.
        let run = match self.walk.axes.as_slice() {
            [.., (len, [1]), _] if step != 1 => *len,
            _ => 1,
        };
        // SAFETY: every branch writes each value of its rows; the input has the planned shape
        // (checked above), so every offset is in bounds.
        let output = unsafe {
            tensor_by_row_chunks(&self.out_shape, row_len, |first_row, chunk| {
                let (mut row, mut rest) = (first_row, chunk);
                while !rest.is_empty() {
                    let [offset] = self.walk.offsets(row);
                    let rows = if step == 1 {
                        rest[..row_len].copy_from_slice(&src[offset..offset + row_len]);
                        1
                    } else if run > 1 {
                        let rows = TRANSPOSE_BLOCK.min(run - row % run).min(rest.len() / row_len);
                        transpose_block_rows(src, offset, step, &mut rest[..rows * row_len], rows);
                        rows
                    } else {
                        for (i, d) in rest[..row_len].iter_mut().enumerate() {
                            *d = src[offset + i * step];
                        }
                        1
                    };
                    row += rows;
                    rest = &mut rest[rows * row_len..];
                }
            })?
        };
        Ok(tvec!(output.into_tvalue()))
    }

    op_out_of_plan!();
}

/// Side of the square blocks [`transpose_block_rows`] copies through.
const TRANSPOSE_BLOCK: usize = 16;

/// Writes `rows` output rows (`dst`, each `dst.len() / rows` long) where row `j` holds
/// `src[offset + j + i * step]` at `i`: a transpose, block by block. A block is read as
/// [`TRANSPOSE_BLOCK`] runs of `rows` neighbours and written as `rows` runs of as many values, so
/// both sides touch at most 16 pages and whole cache lines. Row by row (one value per cache
/// line read) the patch embedding's 12 MB transpose took 11-14 ms on one thread; tiles of 16
/// rows that wrote one value of each row per step read 96 pages per tile and were no better.
fn transpose_block_rows(src: &[f32], offset: usize, step: usize, dst: &mut [f32], rows: usize) {
    let row_len = dst.len() / rows;
    let mut block = [[0f32; TRANSPOSE_BLOCK]; TRANSPOSE_BLOCK];
    for first in (0..row_len).step_by(TRANSPOSE_BLOCK) {
        let width = TRANSPOSE_BLOCK.min(row_len - first);
        for (i, line) in block[..width].iter_mut().enumerate() {
            let at = offset + (first + i) * step;
            line[..rows].copy_from_slice(&src[at..at + rows]);
        }
        for (j, out) in dst.chunks_exact_mut(row_len).enumerate() {
            for (i, d) in out[first..first + width].iter_mut().enumerate() {
                *d = block[i][j];
            }
        }
    }
}

impl TypedOp for MoveAxisCopy {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&self.out_shape)))
    }

    as_op!();
}

/// `y = saturate(round_half_even(x / scale) + zero_point)` from f32 to i8 (ONNX
/// `QuantizeLinear` with a scalar scale): see the module docs.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct QuantizeI8 {
    /// `1 / scale`, as bits (ops are hashed).
    inv_scale_bits: u32,
    zero_point: i8,
}

impl QuantizeI8 {
    pub fn new(inv_scale: f32, zero_point: i8) -> Self {
        QuantizeI8 { inv_scale_bits: inv_scale.to_bits(), zero_point }
    }

    pub fn zero_point(&self) -> i8 {
        self.zero_point
    }

    /// Quantizes `src` into `dst` (same length).
    #[allow(clippy::manual_clamp)] // max/min, not clamp: NaN must land on a bound (see below)
    pub fn quantize(&self, src: &[f32], dst: &mut [i8]) {
        // Adding and subtracting 1.5 * 2^23 rounds a float of magnitude below 2^22 to the
        // nearest integer, ties to even (IEEE default rounding), and vectorises.
        const ROUND: f32 = 12_582_912.0;
        let (inv, z) = (f32::from_bits(self.inv_scale_bits), self.zero_point as f32);
        for (d, &x) in dst.iter_mut().zip(src) {
            // Round first, then add the zero point (ONNX's order); the first bounds only keep
            // the rounding trick in range. max/min (not clamp) send NaN to the bounds.
            let r = ((x * inv).max(-256.0).min(256.0) + ROUND) - ROUND;
            let v = (r + z).max(-128.0).min(127.0);
            // SAFETY: `v` is a finite integer in [-128, 127]: the unchecked conversion is
            // exact, and it vectorises where the saturating `as` does not.
            *d = unsafe { v.to_int_unchecked::<i32>() } as i8;
        }
    }
}

impl Op for QuantizeI8 {
    fn name(&self) -> StaticName {
        "QuantizeI8".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("1/scale {} zero point {}", f32::from_bits(self.inv_scale_bits), self.zero_point)])
    }

    op_as_typed_op!();
}

impl EvalOp for QuantizeI8 {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let src = input.try_as_plain_ram()?.as_slice::<f32>()?;
        // SAFETY: every element is written below before the tensor is read.
        let mut output = unsafe { Tensor::uninitialized::<i8>(input.shape())? };
        {
            let mut view = output.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut::<i8>()?;
            let total = out.len();
            // Chunks of 16 Ki elements across tract's threads (enough work per task), the
            // remainder here.
            let chunk = 1 << 14;
            let head = total / chunk * chunk;
            let (out_head, out_tail) = out.split_at_mut(head);
            if head > 0 {
                tract_linalg::multithread::par_chunks_mut(out_head, chunk, head, |first, part| {
                    let start = first * chunk;
                    self.quantize(&src[start..start + part.len()], part);
                    Ok(())
                })?;
            }
            self.quantize(&src[head..], out_tail);
        }
        Ok(tvec!(output.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for QuantizeI8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(i8::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// Replaces the f32 `Add`/`Sub`/`Mul` tract's optimiser left generic (see the module docs) by
/// [`BroadcastBinary`], `MoveAxis` by [`MoveAxisCopy`], `QuantizeLinearI8` by [`QuantizeI8`],
/// trees of `Concat`s and `Slice`s and lone slices by [`ConcatSlices`]; refines our products
/// ([`MatMulF32`], [`MatMulI8`]) and lets [`SoftmaxLastAxis`] take in the constants added to its
/// input. Run on the optimised model; returns how many nodes were replaced.
pub fn accelerate_optimized(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        if node.op_is::<MatMulF32>() {
            replaced += refine_matmul(model, id)? as usize;
            continue;
        }
        if let Some(fused) = node.op_as::<MatMulI8>().and_then(|op| op.with_gelu()) {
            if let Some(gelu) = only_gelu_after(model, id) {
                let inputs = node.inputs.clone();
                rewire(model, &inputs, OutletId::new(gelu, 0), fused)?;
                replaced += 1;
            }
            continue;
        }
        if node.op_is::<SoftmaxLastAxis>() {
            replaced += take_in_added_constants(model, id)? as usize;
            continue;
        }
        if node.op_is::<TypedConcat>() || node.op_is::<Slice>() {
            replaced += read_slices_into_concat(model, id, false)? as usize;
            continue;
        }
        if let Some(AxisOp::Move(from, to)) = node.op_as::<AxisOp>() {
            let input = model.outlet_fact(node.inputs[0])?;
            let op = match input.shape.as_concrete() {
                Some(shape) if input.datum_type == f32::datum_type() => MoveAxisCopy::new(shape, *from, *to),
                _ => None,
            };
            if let Some(op) = op {
                replace_node(model, id, op)?;
                replaced += 1;
            }
            continue;
        }
        if let Some(pad) = node.op_as::<Pad>() {
            let input = model.outlet_fact(node.inputs[0])?;
            let op = match (&pad.mode, input.shape.as_concrete()) {
                (PadMode::Constant(value), Some(shape))
                    if input.datum_type == f32::datum_type()
                        && value.datum_type() == f32::datum_type()
                        && value.len() == 1 =>
                {
                    PadConstant::new(shape, &pad.pads, value.cast_to_scalar::<f32>()?)
                }
                _ => None,
            };
            if let Some(op) = op {
                replace_node(model, id, op)?;
                replaced += 1;
            }
            continue;
        }
        if let Some(q) = node.op_as::<ElementWiseOp>().and_then(|e| e.0.downcast_ref::<QuantizeLinearI8>()) {
            let op = QuantizeI8::new(q.scale, q.zero_point);
            if model.outlet_fact(node.inputs[0])?.datum_type == f32::datum_type() {
                replace_node(model, id, op)?;
                replaced += 1;
            }
            continue;
        }
        let Some(bin) = node.op_as::<TypedBinOp>() else { continue };
        let Some(kind) = BinaryKind::from_name(bin.0.name()) else { continue };
        let facts = model.node_input_facts(id)?;
        let output = model.outlet_fact(OutletId::new(id, 0))?;
        if facts.iter().any(|f| f.datum_type != f32::datum_type()) || output.datum_type != f32::datum_type() {
            continue;
        }
        let (Some(a), Some(b), Some(c)) =
            (facts[0].shape.as_concrete(), facts[1].shape.as_concrete(), output.shape.as_concrete())
        else {
            continue;
        };
        let op = BroadcastBinary::new(kind, a, b, c);
        drop(facts);
        let Some(op) = op else { continue };
        replace_node(model, id, op)?;
        replaced += 1;
    }
    // The slices left once the products have read theirs in place (`refine_matmul`): lone
    // copies, which tract runs on one thread (12-13 ms per run of the full model on one thread
    // and on two), become one-box `ConcatSlices`, which split their rows across threads. A
    // slice nothing reads any more is not run, so it is left as it is.
    for id in model.eval_order()? {
        let node = model.node(id);
        let read = !node.outputs[0].successors.is_empty() || model.outputs.contains(&OutletId::new(id, 0));
        if node.op_is::<Slice>() && read {
            replaced += read_slices_into_concat(model, id, true)? as usize;
        }
    }
    Ok(replaced)
}

/// Replaces the f32 `Concat` or `Slice` node `id`, with the `Slice`s and the `Concat`s feeding
/// only it (and those feeding them...), by one [`ConcatSlices`] when there is a `Concat` among
/// them; whether it did. Swin's un-shift is a crop (`Slice`) of concats of slices. A node that
/// feeds only a `Concat` or a `Slice` is left for that one to take in. A lone slice (of a
/// tensor that is not a concat or a slice) is replaced only when `lone`. The nodes taken in,
/// left without consumers, are not run (a slice that other nodes read still runs for them).
fn read_slices_into_concat(model: &mut TypedModel, id: usize, lone: bool) -> TractResult<bool> {
    let root = OutletId::new(id, 0);
    // Left for the next node to take in when that is a `Concat` or a `Slice` reading only it.
    if sole_consumer(model, root).is_some_and(|next| next.op_is::<TypedConcat>() || next.op_is::<Slice>()) {
        return Ok(false);
    }
    let Some(out_shape) = model.outlet_fact(root)?.shape.as_concrete().map(|s| s.to_vec()) else {
        return Ok(false);
    };
    let mut inputs = vec![];
    let mut taken_in = 0;
    let Some(boxes) = boxes_of(model, root, true, &mut inputs, &mut taken_in)? else { return Ok(false) };
    if taken_in == 0 && !lone {
        return Ok(false);
    }
    let mut in_shapes = vec![];
    for &input in &inputs {
        let Some(shape) = model.outlet_fact(input)?.shape.as_concrete() else { return Ok(false) };
        in_shapes.push(shape.to_vec());
    }
    let Some(op) = ConcatSlices::new(&out_shape, in_shapes, boxes) else { return Ok(false) };
    rewire(model, &inputs, root, op)?;
    Ok(true)
}

/// The boxes `outlet` is assembled from, in its own coordinates: through the `Concat`s (the
/// `root`, or feeding only the next) and `Slice`s (reading through one copies nothing) that build it, down to
/// tensors read as they are (appended to `inputs`). `taken_in` counts the nodes gone through
/// below the root. `None` for what a [`ConcatSlices`] cannot read (not f32, symbolic shapes).
fn boxes_of(
    model: &TypedModel,
    outlet: OutletId,
    root: bool,
    inputs: &mut Vec<OutletId>,
    taken_in: &mut usize,
) -> TractResult<Option<Vec<CopiedBox>>> {
    let fact = model.outlet_fact(outlet)?;
    let Some(shape) = fact
        .shape
        .as_concrete()
        .filter(|s| s.len() <= ConcatSlices::MAX_RANK && fact.datum_type == f32::datum_type())
    else {
        return Ok(None);
    };
    let node = model.node(outlet.node);
    let interior = root || sole_consumer(model, outlet).is_some();
    if let Some(concat) = node.op_as::<TypedConcat>().filter(|_| interior) {
        let mut boxes = vec![];
        let mut offset = 0;
        for &input in &node.inputs {
            let Some(part) = boxes_of(model, input, false, inputs, taken_in)? else { return Ok(None) };
            boxes.extend(part.into_iter().map(|mut b| {
                b.to[concat.axis] += offset;
                b
            }));
            offset += model.outlet_fact(input)?.shape[concat.axis].to_usize()?;
        }
        *taken_in += !root as usize;
        return Ok(Some(boxes));
    }
    let slice = node.op_as::<Slice>();
    if let Some((axis, Ok(start), Ok(end))) = slice.map(|s| (s.axis, s.start.to_usize(), s.end.to_usize())) {
        let Some(part) = boxes_of(model, node.inputs[0], false, inputs, taken_in)? else {
            return Ok(None);
        };
        let boxes = part
            .into_iter()
            .filter_map(|mut b| {
                let (lo, hi) = (b.to[axis].max(start), (b.to[axis] + b.size[axis]).min(end));
                (lo < hi).then(|| {
                    b.from[axis] += lo - b.to[axis];
                    b.to[axis] = lo - start;
                    b.size[axis] = hi - lo;
                    b
                })
            })
            .collect();
        *taken_in += !root as usize;
        return Ok(Some(boxes));
    }
    let input = match inputs.iter().position(|&i| i == outlet) {
        Some(i) => i,
        None => {
            inputs.push(outlet);
            inputs.len() - 1
        }
    };
    let rank = shape.len();
    Ok(Some(vec![CopiedBox { input, from: vec![0; rank], to: vec![0; rank], size: shape.to_vec() }]))
}

/// Makes the [`SoftmaxLastAxis`] node `id` add the constants its input was given just before it
/// (a chain of `Add`s of a `Const`, each used only by the next: Swin's attention bias and shift
/// mask), so that the score tensor is not written and read once more per `Add`; whether it
/// changed. The `Add`s, left without consumers, are not run.
fn take_in_added_constants(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    let node = model.node(id);
    let Some(softmax) = node.op_as::<SoftmaxLastAxis>() else { return Ok(false) };
    if softmax.added_terms() > 0 || node.inputs.len() != 1 {
        return Ok(false);
    }
    let Some(shape) = model.outlet_fact(node.inputs[0])?.shape.as_concrete().map(|s| s.to_vec()) else {
        return Ok(false);
    };
    // Walk up from the softmax: each step finds `at = Add(input, constant)`.
    let mut at = node.inputs[0];
    let mut constants = vec![];
    loop {
        let add = model.node(at.node);
        let is_add = add.op_as::<BroadcastBinary>().is_some_and(|b| b.kind == BinaryKind::Add);
        let used_once = sole_consumer(model, at).is_some();
        if !is_add || !used_once || add.inputs.len() != 2 {
            break;
        }
        let constant = add.inputs.iter().position(|i| model.node(i.node).op_is::<Const>());
        let Some(c) = constant else { break };
        let input = add.inputs[1 - c];
        if model.outlet_fact(input)?.shape.as_concrete() != Some(shape.as_slice()) {
            break;
        }
        constants.push(add.inputs[c]);
        at = input;
    }
    if constants.is_empty() {
        return Ok(false);
    }
    // Added innermost first, as the `Add`s did.
    constants.reverse();
    let mut op = SoftmaxLastAxis::default();
    for &c in &constants {
        let Some(term) = model.outlet_fact(c)?.shape.as_concrete() else { return Ok(false) };
        let Some(next) = op.adding(&shape, term) else { return Ok(false) };
        op = next;
    }
    let inputs: Vec<OutletId> = std::iter::once(at).chain(constants).collect();
    rewire(model, &inputs, OutletId::new(id, 0), op)?;
    Ok(true)
}

/// Makes the [`MatMulF32`] node `id` read its operands that are `Slice`s of another tensor
/// straight from that tensor ([`MatMulF32::reading_slice`]), and take in the exact GELU that is
/// its only consumer ([`MatMulF32::with_gelu`]); whether it changed. A slice left without
/// consumers is not run (plans run what the outputs need).
fn refine_matmul(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    let node = model.node(id);
    let Some(mut op) = node.op_as::<MatMulF32>().cloned() else { return Ok(false) };
    let mut inputs = node.inputs.clone();
    let mut changed = false;
    for (operand, input) in inputs.iter_mut().take(2).enumerate() {
        let producer = model.node(input.node);
        let Some(slice) = producer.op_as::<Slice>() else { continue };
        let whole = model.outlet_fact(producer.inputs[0])?;
        let (Some(shape), Ok(start)) = (whole.shape.as_concrete(), slice.start.to_usize()) else { continue };
        if let Some(reading) = op.reading_slice(operand, shape, slice.axis, start) {
            op = reading;
            *input = producer.inputs[0];
            changed = true;
        }
    }
    let mut replaced = OutletId::new(id, 0);
    if let (Some(gelu), Some(fused)) = (only_gelu_after(model, id), op.with_gelu()) {
        op = fused;
        replaced = OutletId::new(gelu, 0);
        changed = true;
    }
    if changed {
        rewire(model, &inputs, replaced, op)?;
    }
    Ok(changed)
}

/// The only consumer of `outlet`, when it has exactly one and is not a model output: a node
/// that an operator can take in after itself.
fn sole_consumer(model: &TypedModel, outlet: OutletId) -> Option<&TypedNode> {
    match model.node(outlet.node).outputs[outlet.slot].successors.as_slice() {
        [only] if !model.outputs.contains(&outlet) => Some(model.node(only.node)),
        _ => None,
    }
}

/// The exact GELU node that is the [`sole_consumer`] of node `id`'s output: what a product can
/// take in as its epilogue.
fn only_gelu_after(model: &TypedModel, id: usize) -> Option<usize> {
    let next = sole_consumer(model, OutletId::new(id, 0))?;
    next.op_as::<ElementWiseOp>().is_some_and(|e| e.0.is::<GeluExact>()).then_some(next.id)
}

/// Replaces the `EinSum` node `id` by a [`MatMulF32`] when it is a plain f32 matrix product,
/// taking in the `Add` of a constant bias that follows it if there is one; whether it did.
fn replace_matmul(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    let node = model.node(id);
    let Some(einsum) = node.op_as::<EinSum>() else { return Ok(false) };
    let shape = |outlet: OutletId| -> TractResult<Option<Vec<usize>>> {
        let fact = model.outlet_fact(outlet)?;
        Ok((fact.datum_type == f32::datum_type())
            .then(|| fact.shape.as_concrete().map(|s| s.to_vec()))
            .flatten())
    };
    let [a, b] = node.inputs.as_slice() else { return Ok(false) };
    let (Some(a), Some(b), Some(c)) = (shape(*a)?, shape(*b)?, shape(OutletId::new(id, 0))?) else {
        return Ok(false);
    };
    let Some(mut op) = MatMulF32::from_einsum(einsum, &a, &b, &c) else { return Ok(false) };
    let mut inputs: Vec<OutletId> = node.inputs.clone();
    let mut replaced = OutletId::new(id, 0);
    // A bias: the product's only consumer adds a constant that broadcasts along `n`.
    let successors = &node.outputs[0].successors;
    if let [only] = successors.as_slice() {
        let add = model.node(only.node);
        let is_add = add.op_as::<TypedBinOp>().is_some_and(|bin| bin.0.name() == "Add");
        let same_shape = model.outlet_fact(OutletId::new(add.id, 0))?.shape.as_concrete() == Some(&c[..]);
        if is_add && same_shape && model.outputs.iter().all(|o| o.node != id) {
            let other = add.inputs[1 - only.slot];
            let bias_fact = model.outlet_fact(other)?;
            let fused = bias_fact
                .konst
                .is_some()
                .then(|| bias_fact.shape.as_concrete())
                .flatten()
                .and_then(|s| op.with_bias(s));
            if let (Some(fused), true) = (fused, bias_fact.datum_type == f32::datum_type()) {
                op = fused;
                inputs.push(other);
                replaced = OutletId::new(add.id, 0);
            }
        }
    }
    rewire(model, &inputs, replaced, op)?;
    Ok(true)
}

/// Replaces an int8 linear layer, as tract reads ONNX's QOperator form, by one [`MatMulI8`]:
/// `QuantizeLinearI8` (f32 input) -> reshapes -> `EinSum` node `id` (int8 by a constant int8,
/// int32 out, zero points 0) -> reshapes -> `Cast` to f32 -> `Mul` by a constant -> `Add` of a
/// constant (optional), the constants one value per output column or one in all. Whether it did.
fn replace_matmul_i8(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    let node = model.node(id);
    let Some(einsum) = node.op_as::<EinSum>() else { return Ok(false) };
    if einsum.q_params != Some(i32::datum_type()) || !plain_integer_product(model, node) {
        return Ok(false);
    }
    let shape = |outlet: OutletId| {
        model.outlet_fact(outlet).ok().and_then(|f| f.shape.as_concrete().map(|s| s.to_vec()))
    };
    let (Some(b), Some(a_shape), Some(product_shape)) =
        (constant_i8(model, node.inputs[1]), shape(node.inputs[0]), shape(OutletId::new(id, 0)))
    else {
        return Ok(false);
    };
    let Some((quantize, x)) = quantized_from(model, node.inputs[0]) else { return Ok(false) };
    let Some(columns_axis) = columns_axis_from_end(model, einsum, id, &a_shape, b.shape(), &product_shape)
    else {
        return Ok(false);
    };
    let Some((epilogue, last)) = epilogue_after(model, OutletId::new(id, 0), columns_axis) else {
        return Ok(false);
    };
    let (Some(x_shape), Some(c_shape)) = (shape(x), shape(last)) else { return Ok(false) };
    let Some(op) = MatMulI8::new(einsum, &a_shape, &b, &product_shape, &c_shape, quantize, epilogue) else {
        return Ok(false);
    };
    if x_shape.iter().product::<usize>() != a_shape.iter().product::<usize>() {
        return Ok(false);
    }
    rewire(model, &[x], last, op)?;
    Ok(true)
}

/// Which axis of the integer product `id` (counted from the end) holds its columns, the axis
/// along which its rescale and bias vary: the last for a linear layer; the channels for a 1x1
/// convolution, which tract makes an `NIHW,OI->NOHW` product. Columns before the last axis
/// only when the product goes straight to its `Cast` (a reshape in between could move them).
fn columns_axis_from_end(
    model: &TypedModel,
    einsum: &EinSum,
    id: usize,
    a_shape: &[usize],
    b_shape: &[usize],
    product_shape: &[usize],
) -> Option<usize> {
    let n = ProductLayout::of(einsum, a_shape, b_shape, product_shape)?.n;
    if n.c == 1 || n.len == 1 {
        return Some(0);
    }
    let strides = contiguous_strides(product_shape);
    let axis = (0..product_shape.len()).find(|&i| product_shape[i] == n.len && strides[i] as isize == n.c)?;
    let straight_to_cast =
        sole_consumer(model, OutletId::new(id, 0)).is_some_and(|next| next.op_is::<Cast>());
    straight_to_cast.then_some(product_shape.len() - 1 - axis)
}

/// Replaces an int8 convolution, as tract reads ONNX's `QuantizeLinear` -> `ConvInteger` ->
/// `Cast` -> `Mul` -> `Add` (optional), by one [`ConvI8`]: the `Conv` node `id` with int8
/// input and constant kernel, int32 out, zero points 0, the rescale and bias one value per
/// output channel or one in all. Whether it did.
fn replace_conv_i8(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    let node = model.node(id);
    let Some(conv) = node.op_as::<Conv>() else { return Ok(false) };
    if conv.q_params != Some(i32::datum_type()) || !plain_integer_product(model, node) {
        return Ok(false);
    }
    let Some(kernel) = constant_i8(model, node.inputs[1]) else { return Ok(false) };
    // The decoder's inputs: quantized in NHWC, then moved to NCHW.
    let producer = model.node(node.inputs[0].node);
    let (quantized, layout) = match producer.op_as::<AxisOp>() {
        Some(AxisOp::Move(3, 1)) => (producer.inputs[0], InputLayout::Nhwc),
        _ => (node.inputs[0], InputLayout::Nchw),
    };
    let Some((quantize, x)) = quantized_from(model, quantized) else { return Ok(false) };
    let input = model.outlet_fact(node.inputs[0])?.shape.as_concrete().map(|s| s.to_vec());
    // NCHW: channels are the third axis from the end.
    let Some((epilogue, last)) = epilogue_after(model, OutletId::new(id, 0), 2) else { return Ok(false) };
    let Some(op) = input.and_then(|input| ConvI8::new(conv, &input, layout, &kernel, quantize, epilogue))
    else {
        return Ok(false);
    };
    let same_shape = model.outlet_fact(last)?.shape.as_concrete() == Some(&op.output_shape()[..]);
    let x_len = model.outlet_fact(x)?.shape.as_concrete().map(|s| s.iter().product::<usize>());
    if !same_shape || x_len != Some(op.input_len()) {
        return Ok(false);
    }
    rewire(model, &[x], last, op)?;
    Ok(true)
}

/// Whether the int8 product or convolution `node` (tract's 9 inputs: a, b, bias, a0, a_scale,
/// b0, b_scale, c0, c_scale) is a plain integer one, as ONNX `MatMulInteger` / `ConvInteger`
/// without zero points: bias and zero points 0, scales 1.
fn plain_integer_product(model: &TypedModel, node: &TypedNode) -> bool {
    let wanted = [(2, 0.0), (3, 0.0), (4, 1.0), (5, 0.0), (6, 1.0), (7, 0.0), (8, 1.0)];
    node.inputs.len() == 9
        && wanted.iter().all(|&(slot, want)| {
            let konst = model.outlet_fact(node.inputs[slot]).ok().and_then(|f| f.konst.clone());
            konst.and_then(|t| f32_values(&t)).is_some_and(|v| v.iter().all(|&x| x == want))
        })
}

/// The constant int8 tensor `outlet` holds, if it is one.
fn constant_i8(model: &TypedModel, outlet: OutletId) -> Option<Arc<Tensor>> {
    let konst = model.outlet_fact(outlet).ok()?.konst.clone()?;
    (konst.datum_type() == i8::datum_type()).then_some(konst)
}

/// The quantization and the f32 tensor that the int8 tensor `outlet` is made from: a
/// `QuantizeLinearI8` of an f32 tensor, through reshapes if any.
fn quantized_from(model: &TypedModel, outlet: OutletId) -> Option<(QuantizeI8, OutletId)> {
    let mut source = model.node(outlet.node);
    while matches!(source.op_as::<AxisOp>(), Some(AxisOp::Reshape(..))) {
        source = model.node(source.inputs[0].node);
    }
    let quantize = source.op_as::<ElementWiseOp>()?.0.downcast_ref::<QuantizeLinearI8>()?;
    let x = source.inputs[0];
    let is_f32 = model.outlet_fact(x).ok()?.datum_type == f32::datum_type();
    is_f32.then(|| (QuantizeI8::new(quantize.scale, quantize.zero_point), x))
}

/// What follows an int32 product at `outlet` as tract reads ONNX's QOperator form: reshapes,
/// `Cast` to f32, `Mul` by a constant, `Add` of a constant (optional), each the only consumer of
/// the one before and none but the last a model output; the constants vary along one axis of
/// the output only, `axis_from_end` from its last (or not at all). The epilogue, and the outlet
/// it ends at.
fn epilogue_after(
    model: &TypedModel,
    outlet: OutletId,
    axis_from_end: usize,
) -> Option<(Epilogue, OutletId)> {
    let next = |outlet: OutletId| sole_consumer(model, outlet);
    let mut at = outlet;
    let mut step = next(at);
    while let Some(n) = step.filter(|n| matches!(n.op_as::<AxisOp>(), Some(AxisOp::Reshape(..)))) {
        at = OutletId::new(n.id, 0);
        step = next(at);
    }
    let cast = step.filter(|n| n.op_as::<Cast>().is_some_and(|c| c.to == f32::datum_type()))?;
    at = OutletId::new(cast.id, 0);
    let shape = model.outlet_fact(at).ok()?.shape.as_concrete()?.to_vec();
    let axis = shape.len().checked_sub(axis_from_end + 1)?;
    let len = shape[axis];
    // The other operand of the binary `name` node `n` (one of whose inputs is `from`), as `len`
    // values along `axis`.
    let along_axis = |n: &TypedNode, name: &str, from: OutletId| -> Option<Vec<f32>> {
        n.op_as::<TypedBinOp>().filter(|b| b.0.name() == name)?;
        let value = model.outlet_fact(*n.inputs.iter().find(|&&i| i != from)?).ok()?.konst.clone()?;
        let same_shape =
            model.outlet_fact(OutletId::new(n.id, 0)).ok()?.shape.as_concrete() == Some(&shape[..]);
        let rank_gap = shape.len().checked_sub(value.rank())?;
        let varying =
            value.shape().iter().enumerate().filter(|&(i, &d)| d != 1 && i + rank_gap != axis).count();
        let values = f32_values(&value)?;
        match values.len() {
            _ if !same_shape || varying > 0 || value.datum_type() != f32::datum_type() => None,
            1 => Some(vec![values[0]; len]),
            l if l == len => Some(values),
            _ => None,
        }
    };
    let (mul, rescale) = next(at).and_then(|n| Some((n, along_axis(n, "Mul", at)?)))?;
    at = OutletId::new(mul.id, 0);
    let mut bias = None;
    if let Some((add, values)) = next(at).and_then(|n| Some((n, along_axis(n, "Add", at)?))) {
        at = OutletId::new(add.id, 0);
        bias = Some(values.into());
    }
    Some((Epilogue { rescale: rescale.into(), bias }, at))
}

/// A tensor's values as f32 (cast when needed).
fn f32_values(tensor: &Tensor) -> Option<Vec<f32>> {
    Some(tensor.cast_to::<f32>().ok()?.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec())
}

/// Rewires node `id` (single output) to `op`, with the same inputs and name.
fn replace_node(model: &mut TypedModel, id: usize, op: impl TypedOp) -> TractResult<()> {
    let inputs = model.node(id).inputs.clone();
    rewire(model, &inputs, OutletId::new(id, 0), op)
}

/// Wires `op` on `inputs` in place of `replaced` (a single-output node, whose name it takes):
/// the consumers of `replaced` read `op` instead.
fn rewire(
    model: &mut TypedModel,
    inputs: &[OutletId],
    replaced: OutletId,
    op: impl TypedOp,
) -> TractResult<()> {
    let name = model.node(replaced.node).name.clone();
    let mut patch = TypedModelPatch::default();
    let wires = inputs.iter().map(|&i| patch.tap_model(model, i)).collect::<TractResult<TVec<_>>>()?;
    let out = patch.wire_node(&name, op, &wires)?;
    patch.shunt_outside(model, replaced, out[0])?;
    patch.apply(model)
}

/// Swaps our operators into `model` where they apply; returns how many nodes were replaced.
pub fn accelerate(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        if model.node(id).op_as::<EinSum>().is_some() {
            replaced += (replace_matmul(model, id)? || replace_matmul_i8(model, id)?) as usize;
            continue;
        }
        if let Some(conv) = model.node(id).op_as::<Conv>() {
            if conv.q_params.is_some() {
                replaced += replace_conv_i8(model, id)? as usize;
                continue;
            }
            let facts = model.node_input_facts(id)?;
            let f32_inputs = facts.len() == 3 && facts.iter().all(|f| f.datum_type == f32::datum_type());
            let op = match (
                f32_inputs,
                facts.first().and_then(|f| f.shape.as_concrete()),
                facts.get(1).and_then(|f| f.shape.as_concrete()),
            ) {
                (true, Some(input), Some(kernel)) => facts[2]
                    .shape
                    .as_concrete()
                    .and_then(|b| ConvF32::from_conv(conv, input, kernel, b.iter().product())),
                _ => None,
            };
            drop(facts);
            if let Some(op) = op {
                replace_node(model, id, op)?;
                replaced += 1;
            }
            continue;
        }
        let node = model.node(id);
        if let Some(softmax) = node.op_as::<Softmax>() {
            let input = model.outlet_fact(node.inputs[0])?;
            if softmax.kind == SoftmaxKind::Softmax
                && softmax.quant_output_dt.is_none()
                && input.datum_type == f32::datum_type()
                && input.rank() > 0
                && *softmax.axes == [input.rank() - 1]
            {
                replace_node(model, id, SoftmaxLastAxis::default())?;
                replaced += 1;
            }
            continue;
        }
        let Some(resize) = node.op_as::<Resize>() else { continue };
        let input = model.outlet_fact(node.inputs[0])?;
        let output = model.outlet_fact(OutletId::new(id, 0))?;
        let (Some(in_shape), Some(out_shape)) = (input.shape.as_concrete(), output.shape.as_concrete())
        else {
            continue;
        };
        let rank = in_shape.len();
        let half_pixel = match resize.coord_transformer {
            CoordTransformer::HalfPixel => true,
            // pytorch_half_pixel differs from half_pixel only for outputs of length 1.
            CoordTransformer::PytorchHalfPixel => out_shape[rank - 2] > 1 && out_shape[rank - 1] > 1,
            _ => false,
        };
        if resize.interpolator != Interpolator::Linear
            || !half_pixel
            || input.datum_type != f32::datum_type()
            || rank < 2
            || in_shape[..rank - 2] != out_shape[..rank - 2]
        {
            continue;
        }
        let op = BilinearResize2d { out_height: out_shape[rank - 2], out_width: out_shape[rank - 1] };
        let input = node.inputs[0];
        rewire(model, &[input], OutletId::new(id, 0), op)?;
        replaced += 1;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use tract_linalg::multithread::{Executor, multithread_tract_scope};

    use super::*;

    /// Same values as tract's own QuantizeLinear arithmetic, ties included, correct saturation, on a
    /// tensor large enough to be split across threads with a remainder.
    #[test]
    fn quantize_i8_matches_tract() {
        use tract_onnx::tract_core::ops::quant::quantize_linear_f32_i8;
        let n = 3 * (1 << 14) + 1234;
        let mut x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 40.0).collect();
        x[..8].copy_from_slice(&[0.5, 1.5, 2.5, -0.5, -2.5, 1e9, -1e9, f32::NAN]);
        let (scale, zero) = (0.25f32, -3i8);
        let op = QuantizeI8::new(scale.recip(), zero);
        let out = op
            .eval(&EvalContext::out_of_plan(), tvec!(tensor1(&x).into_tvalue()))
            .unwrap()
            .remove(0)
            .into_tensor();
        let ours = out.try_as_plain_ram().unwrap().as_slice::<i8>().unwrap().to_vec();
        for (i, (&v, &q)) in x.iter().zip(&ours).enumerate() {
            // (tract's own wraps around for |x / scale| beyond i32: -1e9 gives +127.)
            if v.is_nan() || v.abs() > 1e6 {
                continue;
            }
            assert_eq!(q, quantize_linear_f32_i8(v, scale.recip(), zero as i32), "element {i}: {v}");
        }
        assert_eq!(&ours[..7], &[-1, 3, 7, -5, -13, 127, -128]);
    }

    fn run(kind: BinaryKind, a_shape: &[usize], b_shape: &[usize]) -> (Vec<usize>, Vec<f32>, Vec<f32>) {
        let a_len: usize = a_shape.iter().product();
        let b_len: usize = b_shape.iter().product();
        let a: Vec<f32> = (0..a_len).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..b_len).map(|i| 100.0 + i as f32).collect();
        let ta = tract_ndarray::ArrayD::from_shape_vec(a_shape, a).unwrap();
        let tb = tract_ndarray::ArrayD::from_shape_vec(b_shape, b).unwrap();
        let expected = match kind {
            BinaryKind::Add => &ta + &tb,
            BinaryKind::Sub => &ta - &tb,
            BinaryKind::Mul => &ta * &tb,
        };
        let op = BroadcastBinary::new(kind, a_shape, b_shape, expected.shape()).unwrap();
        let out = op
            .eval(
                &EvalContext::out_of_plan(),
                tvec!(ta.into_tensor().into_tvalue(), tb.into_tensor().into_tvalue()),
            )
            .unwrap();
        let got = out[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
        (expected.shape().to_vec(), expected.iter().copied().collect(), got)
    }

    /// An input of another shape than the op was planned for is an error, not a tensor with
    /// uninitialised values (the zipped runs would stop short) or an out-of-bounds read.
    #[test]
    fn inputs_of_unplanned_shapes_are_errors() {
        let ctx = EvalContext::out_of_plan();
        let tensor = |shape: &[usize]| Tensor::zero::<f32>(shape).unwrap().into_tvalue();
        let add = BroadcastBinary::new(BinaryKind::Add, &[2, 8], &[2, 8], &[2, 8]).unwrap();
        for (a, b) in [([2, 7], [2, 8]), ([2, 8], [1, 8]), ([2, 9], [2, 9])] {
            let err = add.eval(&ctx, tvec!(tensor(&a), tensor(&b))).unwrap_err();
            assert!(err.to_string().contains("was planned for"), "{err}");
        }
        let moved = MoveAxisCopy::new(&[2, 3, 4], 0, 2).unwrap();
        for shape in [[2, 3, 3], [1, 3, 4], [4, 3, 2]] {
            let err = moved.eval(&ctx, tvec!(tensor(&shape))).unwrap_err();
            assert!(err.to_string().contains("was planned for"), "{err}");
        }
        // SAFETY: the closure writes every value of its row.
        let ragged = unsafe { tensor_by_rows(&[3, 5], 4, || (), |_, _, row| row.fill(0.0)) };
        assert!(ragged.is_err());
    }

    #[test]
    fn bilinear_resize_matches_pytorch() {
        // torch.nn.functional.interpolate(torch.tensor([[[[0., 1.], [2., 3.]]]]), scale_factor=2,
        //                                 mode="bilinear", align_corners=False)
        let expected =
            [0.0, 0.25, 0.75, 1.0, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2.0, 2.25, 2.75, 3.0];
        let input = Tensor::from_shape(&[1, 1, 2, 2], &[0.0f32, 1.0, 2.0, 3.0]).unwrap();
        let op = BilinearResize2d { out_height: 4, out_width: 4 };
        let out = op.eval(&EvalContext::out_of_plan(), tvec!(input.clone().into_tvalue())).unwrap();
        assert_eq!(out[0].shape(), &[1, 1, 4, 4]);
        assert_eq!(out[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(), &expected);
        let same = BilinearResize2d { out_height: 2, out_width: 2 };
        let out = same.eval(&EvalContext::out_of_plan(), tvec!(input.into_tvalue())).unwrap();
        assert_eq!(out[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(), &[0.0, 1.0, 2.0, 3.0]);
    }

    /// A linear layer (product by a constant weight, then a constant bias) becomes one
    /// `MatMulF32` with the bias inside, computing what tract computes; a bias that is not a
    /// constant stays a separate addition.
    #[test]
    fn linear_layers_become_one_product_with_their_bias() {
        let linear = |constant_bias: bool| -> TractResult<TypedModel> {
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([2, 5, 6]))?;
            let weight: Vec<f32> = (0..6 * 3).map(|i| (i as f32 * 0.3).cos()).collect();
            let w = model.add_const("w", tensor1(&weight).into_shape(&[6, 3])?)?;
            let bias = if constant_bias {
                model.add_const("bias", tensor1(&[0.5f32, -1.0, 2.0]))?
            } else {
                model.add_source("bias", f32::fact([3]))?
            };
            let einsum = EinSum::new("bmk,kn->bmn".parse()?, f32::datum_type());
            let product = model.wire_node("product", einsum, &[x, w])?;
            let bias = model.wire_node("bias.rank3", AxisOp::Add(0), &[bias])?;
            let bias = model.wire_node("bias.rank3b", AxisOp::Add(0), &bias)?;
            let sum =
                model.wire_node("sum", tract_onnx::tract_core::ops::math::add(), &[product[0], bias[0]])?;
            model.select_output_outlets(&sum)?;
            Ok(model)
        };
        let x: Vec<f32> = (0..60).map(|i| (i as f32 * 0.7).sin()).collect();
        let x = tensor1(&x).into_shape(&[2, 5, 6]).unwrap();
        let bias = tensor1(&[0.5f32, -1.0, 2.0]);
        for constant_bias in [true, false] {
            let model = linear(constant_bias).unwrap();
            let mut ours = model.clone();
            assert_eq!(accelerate(&mut ours).unwrap(), 1);
            let ops: Vec<String> =
                ours.eval_order().unwrap().iter().map(|&n| ours.node(n).op.name().to_string()).collect();
            let products: Vec<&TypedNode> = ours.nodes().iter().filter(|n| n.op_is::<MatMulF32>()).collect();
            assert_eq!(products.len(), 1, "{ops:?}");
            let fused = products[0].op.info().unwrap()[0].contains("+ bias");
            assert_eq!(fused, constant_bias, "{ops:?}");
            let inputs = |m: &TypedModel| -> TVec<TValue> {
                let mut inputs = tvec!(x.clone().into_tvalue());
                if m.inputs.len() == 2 {
                    inputs.push(bias.clone().into_tvalue());
                }
                inputs
            };
            let run = |m: TypedModel| m.into_runnable().unwrap().run(inputs(&model)).unwrap().remove(0);
            let (expected, got) = (run(model.clone()), run(ours));
            expected.close_enough(&got, true).unwrap();
        }
    }

    /// After tract optimises: a product takes in the exact GELU that follows it (and its bias),
    /// products read their Slice operands in place, and the slices are no longer run; the
    /// results are tract's own.
    #[test]
    fn products_take_in_gelu_and_read_slices_after_optimisation() {
        let mut model = TypedModel::default();
        let build = |model: &mut TypedModel| -> TractResult<()> {
            let x = model.add_source("x", f32::fact([2, 5, 6]))?;
            let weight: Vec<f32> = (0..6 * 40).map(|i| (i as f32 * 0.3).cos()).collect();
            let w = model.add_const("w", tensor1(&weight).into_shape(&[6, 40])?)?;
            let einsum = EinSum::new("bmk,kn->bmn".parse()?, f32::datum_type());
            let product = model.wire_node("fc1", einsum, &[x, w])?;
            let gelu = model.wire_node(
                "act",
                tract_onnx::tract_core::ops::nn::gelu_exact::gelu_exact(),
                &product,
            )?;
            // q and k cut from one tensor, as the qkv projection's output is.
            let qkv = model.add_source("qkv", f32::fact([4, 7, 3, 8]))?;
            let q = model.wire_node("q", Slice::new(2, 0, 1), &[qkv])?;
            let k = model.wire_node("k", Slice::new(2, 1, 2), &[qkv])?;
            let scores = EinSum::new("wmxc,wnxc->wmn".parse()?, f32::datum_type());
            let scores = model.wire_node("qk", scores, &[q[0], k[0]])?;
            model.select_output_outlets(&[gelu[0], scores[0]])?;
            Ok(())
        };
        build(&mut model).unwrap();
        let mut ours = model.clone();
        accelerate(&mut ours).unwrap();
        let mut ours = ours.into_optimized().unwrap();
        accelerate_optimized(&mut ours).unwrap();
        let ops: Vec<String> =
            ours.eval_order().unwrap().iter().map(|&n| ours.node(n).op.name().to_string()).collect();
        // q and k are read in place: no copy of them runs, tract's or ours.
        assert!(
            !ops.iter().any(|op| op == "Slice" || op == "ConcatSlices" || op.contains("Gelu")),
            "{ops:?}"
        );
        let gelu_inside = ours
            .nodes()
            .iter()
            .filter(|n| n.op_is::<MatMulF32>())
            .any(|n| n.op.info().unwrap()[0].contains("GELU"));
        assert!(gelu_inside, "{ops:?}");
        let x: Vec<f32> = (0..60).map(|i| (i as f32 * 0.7).sin() * 3.0).collect();
        let qkv: Vec<f32> = (0..4 * 7 * 3 * 8).map(|i| (i as f32 * 0.37).cos()).collect();
        let inputs = tvec!(
            tensor1(&x).into_shape(&[2, 5, 6]).unwrap().into_tvalue(),
            tensor1(&qkv).into_shape(&[4, 7, 3, 8]).unwrap().into_tvalue()
        );
        let expected = model.into_runnable().unwrap().run(inputs.clone()).unwrap();
        let got = ours.into_runnable().unwrap().run(inputs).unwrap();
        for (e, g) in expected.iter().zip(&got) {
            e.close_enough(g, true).unwrap();
        }
    }

    /// `model` as the CPU backend plans it (our operators before and after tract's optimiser,
    /// as `super::tract` does), and the names of the operators its plan runs, in order.
    fn planned_with_ours(model: &TypedModel) -> (Arc<TypedSimplePlan>, Vec<String>) {
        let mut ours = model.clone();
        accelerate(&mut ours).unwrap();
        let mut ours = ours.into_optimized().unwrap();
        accelerate_optimized(&mut ours).unwrap();
        let plan = ours.into_runnable().unwrap();
        let ran =
            plan.order_without_consts().iter().map(|&n| plan.model().node(n).op.name().to_string()).collect();
        (plan, ran)
    }

    /// After tract optimises: the attention bias and shift mask added to the scores become
    /// terms of the softmax (no `BroadcastAdd` left), and the results are tract's own.
    #[test]
    fn softmax_takes_in_the_attention_bias_and_mask() {
        let (windows, heads, n) = (6, 3, 9);
        let mut model = TypedModel::default();
        let build = |model: &mut TypedModel| -> TractResult<()> {
            let scores = model.add_source("qk", f32::fact([windows, heads, n, n]))?;
            let bias: Vec<f32> = (0..heads * n * n).map(|i| (i as f32 * 0.13).sin()).collect();
            let bias = model.add_const("bias", tensor1(&bias).into_shape(&[1, heads, n, n])?)?;
            let mask: Vec<f32> =
                (0..windows * n * n).map(|i| if i % 7 == 3 { -100.0 } else { 0.0 }).collect();
            let mask = model.add_const("mask", tensor1(&mask).into_shape(&[windows, 1, n, n])?)?;
            let biased =
                model.wire_node("add_bias", tract_onnx::tract_core::ops::math::add(), &[scores, bias])?;
            let masked =
                model.wire_node("add_mask", tract_onnx::tract_core::ops::math::add(), &[mask, biased[0]])?;
            let softmax = Softmax::new(tvec![3], None, SoftmaxKind::Softmax);
            let probs = model.wire_node("softmax", softmax, &masked)?;
            model.select_output_outlets(&probs)?;
            Ok(())
        };
        build(&mut model).unwrap();
        let (plan, ran) = planned_with_ours(&model);
        assert!(!ran.iter().any(|op| op.contains("Add")), "{ran:?}");
        let softmax = plan.model().nodes().iter().find(|n| n.op_is::<SoftmaxLastAxis>()).unwrap();
        assert_eq!(softmax.op.info().unwrap().len(), 2, "{:?}", softmax.op.info());
        let scores: Vec<f32> = (0..windows * heads * n * n).map(|i| (i as f32 * 0.71).cos() * 4.0).collect();
        let inputs = tvec!(tensor1(&scores).into_shape(&[windows, heads, n, n]).unwrap().into_tvalue());
        let expected = model.into_runnable().unwrap().run(inputs.clone()).unwrap();
        let got = plan.run(inputs).unwrap();
        expected[0].close_enough(&got[0], true).unwrap();
    }

    /// `Concat`s of `Slice`s (Swin's cyclic shift; odd shapes, every axis, a piece that is a
    /// whole tensor, a slice that another node also reads) against tract's own operators, on
    /// one thread and on three: the slices feeding only the concat are read in place, and the
    /// one that is also an output becomes a one-box copy of its own.
    #[test]
    fn concat_reads_its_slices_in_place() {
        // (shape of x, axis, pieces: Some(range of x) for a slice, None for the whole of `y`)
        type Case = (&'static [usize], usize, &'static [Option<(usize, usize)>]);
        let cases: [Case; 6] = [
            (&[1, 9, 13, 5], 1, &[Some((3, 9)), Some((0, 3))]), // roll by -3 along rows
            (&[1, 9, 13, 5], 2, &[Some((10, 13)), Some((0, 10))]),
            (&[7, 3], 0, &[Some((1, 2)), None, Some((0, 6))]),
            (&[2, 3, 4], 2, &[Some((0, 0)), Some((3, 4)), Some((1, 3))]),
            (&[5, 1, 17], 2, &[None, Some((16, 17))]),
            (&[11], 0, &[Some((5, 11)), Some((2, 5)), Some((0, 2))]),
        ];
        for (case, &(shape, axis, pieces)) in cases.iter().enumerate() {
            let mut y_shape = shape.to_vec();
            y_shape[axis] = 2;
            let mut model = TypedModel::default();
            let mut build = || -> TractResult<()> {
                let x = model.add_source("x", f32::fact(shape))?;
                let y = model.add_source("y", f32::fact(&y_shape))?;
                let mut parts = tvec!();
                for (p, piece) in pieces.iter().enumerate() {
                    parts.push(match piece {
                        Some((start, end)) => {
                            model.wire_node(format!("slice{p}"), Slice::new(axis, *start, *end), &[x])?[0]
                        }
                        None => y,
                    });
                }
                let concat = model.wire_node("concat", TypedConcat { axis }, &parts)?;
                // Case 2's first slice is also an output: it must stay, and be read by the concat.
                let mut outputs = vec![concat[0]];
                if case == 2 {
                    outputs.push(parts[0]);
                }
                model.select_output_outlets(&outputs)?;
                Ok(())
            };
            build().unwrap();
            let (plan, ran) = planned_with_ours(&model);
            let copies = ran.iter().filter(|op| *op == "ConcatSlices").count();
            assert_eq!(copies, 1 + (case == 2) as usize, "case {case}: {ran:?}");
            assert!(!ran.iter().any(|op| op == "Slice"), "case {case}: {ran:?}");
            let values = |shape: &[usize], seed: usize| {
                let data: Vec<f32> =
                    (0..shape.iter().product::<usize>()).map(|i| (i * 31 + seed) as f32).collect();
                tensor1(&data).into_shape(shape).unwrap().into_tvalue()
            };
            let inputs = tvec!(values(shape, 0), values(&y_shape, 7));
            let expected = model.into_runnable().unwrap().run(inputs.clone()).unwrap();
            for threads in [1, 3] {
                let got =
                    multithread_tract_scope(Executor::multithread(threads), || plan.run(inputs.clone()))
                        .unwrap();
                for (e, g) in expected.iter().zip(&got) {
                    assert_eq!(e, g, "case {case}, {threads} threads");
                }
            }
        }
    }

    /// Swin's cyclic shift over two axes (a roll along the rows, then along the columns) and the
    /// crop after it, which tract's optimiser turns into slices of slices and concats of
    /// concats, becomes one `ConcatSlices`, with tract's values on one thread and on three.
    #[test]
    fn a_roll_over_two_axes_is_one_copy() {
        let shape = [1, 9, 13, 5];
        let mut model = TypedModel::default();
        let mut build = || -> TractResult<()> {
            let x = model.add_source("x", f32::fact(shape))?;
            let mut rolled = x;
            for (axis, by) in [(1, 3), (2, 2)] {
                let len = shape[axis];
                let tail = model.wire_node(format!("tail{axis}"), Slice::new(axis, by, len), &[rolled])?[0];
                let head = model.wire_node(format!("head{axis}"), Slice::new(axis, 0, by), &[rolled])?[0];
                rolled = model.wire_node(format!("roll{axis}"), TypedConcat { axis }, &[tail, head])?[0];
            }
            // The un-pad crop that follows Swin's reverse shift.
            let cropped = model.wire_node("crop", Slice::new(1, 0, 7), &[rolled])?[0];
            model.select_output_outlets(&[cropped])?;
            Ok(())
        };
        build().unwrap();
        let (plan, ran) = planned_with_ours(&model);
        assert_eq!(ran, ["Source", "ConcatSlices"]);
        let data: Vec<f32> = (0..shape.iter().product::<usize>()).map(|i| i as f32).collect();
        let inputs = tvec!(tensor1(&data).into_shape(&shape).unwrap().into_tvalue());
        let expected = model.into_runnable().unwrap().run(inputs.clone()).unwrap();
        for threads in [1, 3] {
            let got =
                multithread_tract_scope(Executor::multithread(threads), || plan.run(inputs.clone())).unwrap();
            assert_eq!(expected[0], got[0], "{threads} threads");
        }
    }

    /// A lone slice along each axis of a 5-D tensor (Swin's un-pad crops along the window rows
    /// leave as few rows before the sliced axis as there are images) is one
    /// `ConcatSlices` with tract's values, on one thread and on three, its rows split
    /// across them.
    #[test]
    fn a_lone_slice_is_a_copy_on_all_threads() {
        let shape = [3, 19, 6, 7, 5];
        for axis in 0..shape.len() {
            let (start, end) = (shape[axis] / 3, shape[axis] - shape[axis] / 4);
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact(shape)).unwrap();
            let cropped = model.wire_node("crop", Slice::new(axis, start, end), &[x]).unwrap();
            model.select_output_outlets(&cropped).unwrap();
            let (plan, ran) = planned_with_ours(&model);
            assert_eq!(ran, ["Source", "ConcatSlices"], "axis {axis}");
            let copy = plan.model().nodes().iter().find_map(|n| n.op_as::<ConcatSlices>()).unwrap();
            let rows: usize = shape[..copy.split_axis].iter().product();
            assert!(
                rows >= ConcatSlices::MIN_ROWS || copy.split_axis == shape.len() - 1,
                "axis {axis}: {rows} rows"
            );
            let data: Vec<f32> = (0..shape.iter().product::<usize>()).map(|i| i as f32).collect();
            let inputs = tvec!(tensor1(&data).into_shape(&shape).unwrap().into_tvalue());
            let expected = model.clone().into_runnable().unwrap().run(inputs.clone()).unwrap();
            for threads in [1, 3] {
                let got =
                    multithread_tract_scope(Executor::multithread(threads), || plan.run(inputs.clone()))
                        .unwrap();
                assert_eq!(expected[0], got[0], "axis {axis}, {threads} threads");
            }
        }
    }

    /// Boxes outside their input or the output, overlapping, or leaving a gap are refused when
    /// planned; an input of another shape than planned is an error at run time.
    #[test]
    fn concat_slices_checks_its_boxes() {
        let b = |input: usize, from: [usize; 2], to: [usize; 2], size: [usize; 2]| CopiedBox {
            input,
            from: from.to_vec(),
            to: to.to_vec(),
            size: size.to_vec(),
        };
        let out = [2, 5];
        let source = || vec![vec![2, 5]];
        let roll = vec![b(0, [0, 3], [0, 0], [2, 2]), b(0, [0, 0], [0, 2], [2, 3])];
        assert!(ConcatSlices::new(&out, source(), roll.clone()).is_some());
        let past_the_end = vec![b(0, [0, 4], [0, 0], [2, 2]), b(0, [0, 0], [0, 2], [2, 3])];
        assert!(ConcatSlices::new(&out, source(), past_the_end).is_none());
        let overlapping = vec![b(0, [0, 3], [0, 0], [2, 3]), b(0, [0, 0], [0, 2], [2, 3])];
        assert!(ConcatSlices::new(&out, source(), overlapping).is_none());
        let gap = vec![b(0, [0, 3], [0, 0], [2, 2]), b(0, [0, 0], [0, 3], [2, 2])];
        assert!(ConcatSlices::new(&out, source(), gap).is_none());
        assert!(
            ConcatSlices::new(&out, source(), vec![b(1, [0, 0], [0, 0], [2, 5])]).is_none(),
            "no input 1"
        );
        let op = ConcatSlices::new(&out, source(), roll).unwrap();
        let wrong = Tensor::zero::<f32>(&[2, 4]).unwrap().into_tvalue();
        let error = op.eval(&EvalContext::out_of_plan(), tvec!(wrong)).unwrap_err();
        assert!(format!("{error}").contains("planned for"), "{error}");
    }

    /// The values of tract's constant `Pad` on padded and unpadded axes, inner and outer, an
    /// empty input, on one and three threads; the optimised model runs ours instead of tract's.
    #[test]
    fn pad_matches_tract() {
        // (input shape, (before, after) per axis, fill value)
        type Case = (&'static [usize], &'static [(usize, usize)], f32);
        let cases: [Case; 7] = [
            (&[1, 128, 256, 96], &[(0, 0), (0, 5), (0, 3), (0, 0)], 0.0), // Swin's stage 1
            (&[2, 3, 5], &[(1, 2), (0, 0), (3, 1)], -1.5),
            (&[2, 3, 5], &[(0, 0), (2, 0), (0, 0)], 7.0),
            (&[4, 6], &[(0, 0), (0, 0)], 0.0),
            (&[9], &[(4, 0)], 2.5),
            (&[3, 0, 2], &[(1, 1), (2, 1), (0, 0)], 1.0), // an empty input, padded
            (&[1, 2, 3, 4, 5], &[(1, 0), (0, 2), (1, 1), (0, 0), (0, 0)], 0.25),
        ];
        for (shape, pads, value) in cases {
            let len: usize = shape.iter().product();
            let input = tensor1(&(0..len).map(|i| i as f32 * 0.5 - 3.0).collect::<Vec<_>>())
                .into_shape(shape)
                .unwrap();
            let tracts = Pad { pads: pads.to_vec(), mode: PadMode::Constant(Arc::new(tensor0(value))) };
            let expected = tracts
                .eval(&EvalContext::out_of_plan(), tvec!(input.clone().into_tvalue()))
                .unwrap()
                .remove(0)
                .into_tensor();
            let op = PadConstant::new(shape, pads, value).unwrap();
            let run = || {
                op.eval(&EvalContext::out_of_plan(), tvec!(input.clone().into_tvalue())).unwrap().remove(0)
            };
            for got in [run(), multithread_tract_scope(Executor::multithread(3), run)] {
                assert_eq!(got.shape(), expected.shape(), "{shape:?} {pads:?}");
                assert_eq!(
                    got.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(),
                    expected.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(),
                    "{shape:?} {pads:?}"
                );
            }
        }
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 12, 10, 3])).unwrap();
        let pad = Pad { pads: vec![(0, 0), (0, 2), (0, 4), (0, 0)], mode: PadMode::default() };
        let y = model.wire_node("pad", pad, &[x]).unwrap();
        model.select_output_outlets(&y).unwrap();
        let (_, ran) = planned_with_ours(&model);
        assert!(ran.contains(&"PadConstant".to_string()) && !ran.contains(&"Pad".to_string()), "{ran:?}");
    }

    /// Permutations of Swin's graph and transposes of the two innermost axes (copied block by
    /// block; sizes around the 16-value blocks, several images), on one thread and on three (a
    /// thread's rows can end inside a block).
    #[test]
    fn move_axis_matches_ndarray_permutation() {
        for (shape, from, to) in [
            (vec![2, 3, 4, 5], 1, 3),
            (vec![2, 3, 4, 5], 3, 0),
            (vec![1, 4, 7, 4, 7, 3], 2, 3), // window partition
            (vec![6, 49, 3, 2, 8], 2, 0),   // qkv head split
            (vec![3, 4], 0, 0),
            (vec![1, 20, 3, 17], 1, 3), // NCHW -> NHWC (the patch embedding), 51 rows of 20
            (vec![2, 51, 20], 2, 1),    // and back, 20 rows of 51 per image
            (vec![37, 16], 0, 1),
            (vec![5, 1], 0, 1),
        ] {
            let len: usize = shape.iter().product();
            let input =
                tract_ndarray::ArrayD::from_shape_vec(shape.clone(), (0..len).map(|i| i as f32).collect())
                    .unwrap();
            let mut view = input.view();
            AxisOp::Move(from, to).change_view(&mut view).unwrap();
            let expected: Vec<f32> = view.iter().copied().collect();
            let expected_shape = view.shape().to_vec();
            let op = MoveAxisCopy::new(&shape, from, to).unwrap();
            let input = input.into_tensor().into_tvalue();
            let run = || op.eval(&EvalContext::out_of_plan(), tvec!(input.clone())).unwrap().remove(0);
            for (threads, out) in [(1, run()), (3, multithread_tract_scope(Executor::multithread(3), run))] {
                assert_eq!(out.shape(), &expected_shape[..], "{shape:?} {from}->{to}");
                let got = out.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
                assert_eq!(got, expected, "{shape:?} {from}->{to} on {threads} threads");
            }
        }
    }

    #[test]
    fn broadcasts_like_numpy() {
        for (a, b) in [
            (vec![8, 3, 5, 5], vec![1, 3, 5, 5]), // attention bias
            (vec![4, 2, 5, 5], vec![4, 1, 5, 5]), // shift mask over heads
            (vec![2, 3, 7], vec![7]),             // channel bias
            (vec![1, 7], vec![6, 1]),             // outer product
            (vec![3, 1, 4], vec![1, 5, 1]),
            (vec![2, 3], vec![2, 3]),
            (vec![1], vec![1]),
        ] {
            for kind in [BinaryKind::Add, BinaryKind::Sub, BinaryKind::Mul] {
                let (shape, expected, got) = run(kind, &a, &b);
                assert_eq!(expected, got, "{kind:?} {a:?} {b:?} -> {shape:?}");
            }
        }
        assert!(BroadcastBinary::new(BinaryKind::Add, &[3, 2], &[4, 2], &[3, 2]).is_none());
    }
}
