//! Activation ranges from calibration frames: the fp32 model runs with every float tensor of
//! the graph observed ([`Tap`]: tract on the CPU, or burn on a GPU); each tensor's `|x|` is summarised by its maximum and a
//! 2048-bin histogram, from which a method picks the clipping threshold `amax` (scale =
//! `amax / 127`).

use std::collections::HashMap;

use anyhow::Context;
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// Histogram bins of `|x|` (TensorRT's entropy calibrator uses 2048).
pub const BINS: usize = 2048;
/// Quantized levels on one side of zero for the entropy search (int8: 128).
const LEVELS: usize = 128;

/// How the clipping threshold of an activation is chosen.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The threshold minimising the KL divergence between the histogram and its int8 version
    /// (TensorRT's `EntropyCalibration2`).
    Entropy,
    /// The given percentile of `|x|` (e.g. 99.99).
    Percentile(f64),
    /// The largest `|x|` seen.
    MinMax,
}

impl Method {
    pub fn name(&self) -> String {
        match self {
            Method::Entropy => "entropy".into(),
            Method::Percentile(p) => format!("percentile {p}"),
            Method::MinMax => "minmax".into(),
        }
    }
}

/// Runs a model and hands over chosen tensors' values: [`TensorTap`] in tract on the CPU,
/// [`super::device_tap::DeviceTap`] with burn on a GPU.
pub trait Tap {
    /// The observed tensors, in the order `run` reports them.
    fn names(&self) -> &[String];
    /// Runs `input`; calls `visit(i, values)` for each observed float tensor `names()[i]`
    /// (tensors of other types are skipped).
    fn run(&self, input: &[f32], visit: &mut dyn FnMut(usize, &[f32])) -> anyhow::Result<()>;
}

/// Runs an ONNX model in tract with chosen tensors as outputs.
pub struct TensorTap {
    plan: Arc<TypedSimplePlan>,
    /// Names of the tapped tensors, in output order.
    pub names: Vec<String>,
    pub input_shape: Vec<usize>,
}

impl TensorTap {
    /// `names`: graph tensors to read back (unknown names are an error).
    pub fn new(proto: &pb::ModelProto, names: &[String]) -> anyhow::Result<TensorTap> {
        let mut model =
            tract_onnx::onnx().model_for_proto_model(proto).context("tract cannot load the model")?;
        // Tensor labels, or node names for the graph input.
        model.select_outputs_by_name(names).context("a calibration tensor is not in the graph")?;
        let typed = model.into_optimized().context("tract cannot optimise the model")?;
        let input_shape = typed
            .input_fact(0)?
            .shape
            .as_concrete()
            .ok_or_else(|| {
                anyhow::anyhow!("the model input has no static shape; export it with a fixed --input-size")
            })?
            .to_vec();
        let plan = typed.into_runnable()?;
        Ok(TensorTap { plan, names: names.to_vec(), input_shape })
    }

    /// The tapped tensors for one input.
    pub fn run_plan(&self, input: &[f32]) -> anyhow::Result<TVec<TValue>> {
        let tensor = Tensor::from_shape(&self.input_shape, input)?;
        self.plan.run(tvec!(tensor.into()))
    }
}

impl Tap for TensorTap {
    fn names(&self) -> &[String] {
        &self.names
    }

    fn run(&self, input: &[f32], visit: &mut dyn FnMut(usize, &[f32])) -> anyhow::Result<()> {
        for (i, value) in self.run_plan(input)?.iter().enumerate() {
            if let Ok(values) = f32s(value) {
                visit(i, values);
            }
        }
        Ok(())
    }
}

/// The values of a float tensor (an error for other types).
fn f32s(value: &TValue) -> TractResult<&[f32]> {
    value.try_as_plain_ram()?.as_slice::<f32>()
}

/// `|x|` statistics of one tensor over all calibration frames.
#[derive(Debug, Clone)]
pub struct Stats {
    pub amax: f32,
    /// Counts of `|x|` in `BINS` bins over `[0, range]` (pass 2; empty for min-max).
    pub histogram: Vec<u64>,
    pub range: f32,
}

/// The float tensors a calibration observes: the graph input and every node output (initializers
/// and integer tensors excluded).
pub fn activation_names(graph: &pb::GraphProto) -> Vec<String> {
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut names: Vec<String> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .map(|i| i.name.clone())
        .collect();
    for node in &graph.node {
        names.extend(node.output.iter().filter(|o| !o.is_empty()).cloned());
    }
    names
}

/// Collects statistics of `tap`'s tensors over `inputs` (one or two passes over the frames)
/// and returns `amax` per tensor name for `method`. Non-float tensors are skipped. `on_step`
/// is called after each frame of each pass.
pub fn calibrate(
    tap: &dyn Tap,
    inputs: &[Vec<f32>],
    method: Method,
    on_step: &dyn Fn(),
) -> anyhow::Result<HashMap<String, f32>> {
    let n = tap.names().len();
    let mut stats: Vec<Option<Stats>> = vec![None; n];
    // Pass 1: maxima.
    for input in inputs {
        tap.run(input, &mut |i, values| {
            let m = values.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = stats[i].get_or_insert(Stats { amax: 0.0, histogram: Vec::new(), range: 0.0 });
            s.amax = s.amax.max(m);
        })?;
        on_step();
    }
    if method != Method::MinMax {
        // Pass 2: histograms over [0, max].
        for s in stats.iter_mut().flatten() {
            s.range = s.amax;
            s.histogram = vec![0; BINS];
        }
        for input in inputs {
            tap.run(input, &mut |i, values| {
                let Some(s) = stats[i].as_mut().filter(|s| s.range > 0.0) else { return };
                let per_bin = BINS as f32 / s.range;
                for v in values {
                    let b = ((v.abs() * per_bin) as usize).min(BINS - 1);
                    s.histogram[b] += 1;
                }
            })?;
            on_step();
        }
    }
    Ok(tap
        .names()
        .iter()
        .zip(stats)
        .filter_map(|(name, s)| {
            let s = s?;
            let amax = match method {
                Method::MinMax => s.amax,
                _ if s.range <= 0.0 => 0.0,
                Method::Entropy => entropy_threshold(&s.histogram, s.range / BINS as f32),
                Method::Percentile(p) => percentile_threshold(&s.histogram, s.range / BINS as f32, p),
            };
            Some((name.clone(), amax))
        })
        .collect())
}

/// The upper edge of the first bin where the cumulative count reaches `percentile` % of all.
pub fn percentile_threshold(histogram: &[u64], bin_width: f32, percentile: f64) -> f32 {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let target = (total as f64 * percentile / 100.0).ceil() as u64;
    let mut cumulative = 0;
    for (i, &count) in histogram.iter().enumerate() {
        cumulative += count;
        if cumulative >= target {
            return (i + 1) as f32 * bin_width;
        }
    }
    histogram.len() as f32 * bin_width
}

/// TensorRT's entropy calibration: for each candidate threshold (bin `i` from 128 to 2048),
/// the reference distribution is the histogram cut at `i` with the outliers folded into the
/// last kept bin; the candidate is that histogram merged into 128 levels and spread back over
/// the non-empty bins; the threshold minimising KL(reference || candidate) wins.
pub fn entropy_threshold(histogram: &[u64], bin_width: f32) -> f32 {
    let bins = histogram.len();
    if histogram.iter().all(|&c| c == 0) {
        return 0.0;
    }
    // Nothing beyond the first 128 bins: the full range is already fine-grained.
    let last_used = histogram.iter().rposition(|&c| c > 0).unwrap_or(0) + 1;
    if last_used <= LEVELS {
        return last_used as f32 * bin_width;
    }
    let total_beyond: Vec<u64> = {
        // suffix[i] = sum of histogram[i..]
        let mut suffix = vec![0u64; bins + 1];
        for i in (0..bins).rev() {
            suffix[i] = suffix[i + 1] + histogram[i];
        }
        suffix
    };
    let mut best = (f64::INFINITY, bins);
    let mut p = vec![0f64; bins];
    let mut q = vec![0f64; bins];
    for i in LEVELS..=bins {
        // Reference P.
        for (j, pj) in p[..i].iter_mut().enumerate() {
            *pj = histogram[j] as f64;
        }
        p[i - 1] += total_beyond[i] as f64;
        // Candidate Q: `i` bins merged into LEVELS levels, each spread over its non-empty bins.
        let merged = i as f64 / LEVELS as f64;
        for level in 0..LEVELS {
            let start = (level as f64 * merged).floor() as usize;
            let stop = if level + 1 == LEVELS { i } else { ((level + 1) as f64 * merged).floor() as usize };
            let sum: u64 = histogram[start..stop].iter().sum();
            let nonzero = histogram[start..stop].iter().filter(|&&c| c > 0).count();
            for j in start..stop {
                q[j] = if histogram[j] > 0 { sum as f64 / nonzero as f64 } else { 0.0 };
            }
        }
        let (sp, sq): (f64, f64) = (p[..i].iter().sum(), q[..i].iter().sum());
        if sq == 0.0 {
            continue;
        }
        let mut kl = 0.0;
        for j in 0..i {
            if p[j] > 0.0 {
                let (pj, qj) = (p[j] / sp, q[j] / sq);
                // A reference bin the candidate leaves empty (the folded outliers landing in an
                // empty bin): count it as a large but finite penalty.
                kl += if qj > 0.0 { pj * (pj / qj).ln() } else { pj * 20.0 };
            }
        }
        if kl < best.0 {
            best = (kl, i);
        }
    }
    best.1 as f32 * bin_width
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_cuts_the_tail() {
        let mut h = vec![0u64; BINS];
        h[10] = 9999;
        h[2000] = 1;
        assert_eq!(percentile_threshold(&h, 1.0, 99.99), 11.0);
        assert_eq!(percentile_threshold(&h, 1.0, 100.0), 2001.0);
    }

    #[test]
    fn entropy_clips_rare_outliers_but_keeps_the_bulk() {
        // Laplace-like bulk over the first ~400 bins and a few far outliers.
        let mut h: Vec<u64> = (0..BINS).map(|i| (100_000.0 * (-(i as f64) / 60.0).exp()) as u64).collect();
        h[2040] = 3;
        let t = entropy_threshold(&h, 1.0);
        assert!(t > 150.0 && t < 1500.0, "threshold {t}");
        // A uniform distribution keeps (nearly) everything.
        let h = vec![100u64; BINS];
        assert!(entropy_threshold(&h, 1.0) > 1900.0);
        // Everything inside the first 128 bins: the used range.
        let mut h = vec![0u64; BINS];
        h[..50].iter_mut().for_each(|c| *c = 7);
        assert_eq!(entropy_threshold(&h, 0.5), 25.0);
    }
}
