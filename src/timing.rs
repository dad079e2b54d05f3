//! Pipeline stages, the per-frame record of how long each took, and latency statistics.
//!
//! Every frame carries a [`StageTimings`]; the run summary (and later the benchmark report)
//! aggregates them with [`LatencyStats`].

use std::fmt;
use std::time::{Duration, Instant};

/// The stages every frame goes through, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Reading the frame and decoding it to RGB8 (file read + PNG/JPEG decode, camera dequeue…).
    Decode,
    /// Resize to the network input and normalise into NCHW f32.
    Preprocess,
    /// The network itself.
    Network,
    /// Argmax + upsampling to the frame size, palette colours and overlay.
    Postprocess,
    /// Encoding and writing every requested output.
    Output,
}

impl Stage {
    /// All stages, in pipeline order.
    pub const ALL: [Stage; 5] =
        [Stage::Decode, Stage::Preprocess, Stage::Network, Stage::Postprocess, Stage::Output];

    /// Lower-case name used in logs, JSON and tables.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Preprocess => "preprocess",
            Stage::Network => "network",
            Stage::Postprocess => "postprocess",
            Stage::Output => "output",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Wall-clock time spent by one frame in each [`Stage`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimings {
    durations: [Duration; 5],
}

impl StageTimings {
    /// Forget all timings (a recycled frame starts afresh).
    pub fn clear(&mut self) {
        self.durations = Default::default();
    }

    /// Records (adds) `duration` to `stage`.
    pub fn add(&mut self, stage: Stage, duration: Duration) {
        self.durations[stage.index()] += duration;
    }

    /// Runs `f`, adds its wall-clock time to `stage`, and returns its result.
    pub fn time<T>(&mut self, stage: Stage, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.add(stage, start.elapsed());
        out
    }

    pub fn get(&self, stage: Stage) -> Duration {
        self.durations[stage.index()]
    }

    /// Milliseconds spent in `stage`.
    pub fn ms(&self, stage: Stage) -> f64 {
        self.get(stage).as_secs_f64() * 1e3
    }

    /// Sum of all stages.
    pub fn total(&self) -> Duration {
        self.durations.iter().sum()
    }

    /// One-line human summary: `decode 3.1 ms, preprocess 1.2 ms, …, total 52.3 ms`.
    pub fn summary(&self) -> String {
        let mut line = String::new();
        for stage in Stage::ALL {
            line.push_str(&format!("{} {:.1} ms, ", stage, self.ms(stage)));
        }
        line.push_str(&format!("total {:.1} ms", self.total().as_secs_f64() * 1e3));
        line
    }
}

/// Summary statistics of a series of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Collects latencies and summarises them (mean and nearest-rank percentiles).
#[derive(Debug, Clone, Default)]
pub struct LatencyStats {
    samples_ms: Vec<f64>,
}

impl LatencyStats {
    pub fn push(&mut self, duration: Duration) {
        self.samples_ms.push(duration.as_secs_f64() * 1e3);
    }

    pub fn len(&self) -> usize {
        self.samples_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples_ms.is_empty()
    }

    /// `None` when nothing was recorded.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.samples_ms.is_empty() {
            return None;
        }
        let mut sorted = self.samples_ms.clone();
        sorted.sort_by(f64::total_cmp);
        // Nearest-rank percentile: the smallest sample with at least p% of samples <= it.
        let percentile = |p: f64| {
            let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[rank.clamp(1, sorted.len()) - 1]
        };
        Some(LatencySummary {
            count: sorted.len(),
            mean_ms: sorted.iter().sum::<f64>() / sorted.len() as f64,
            p50_ms: percentile(50.0),
            p90_ms: percentile(90.0),
            p99_ms: percentile(99.0),
            max_ms: *sorted.last().unwrap_or(&0.0),
        })
    }
}

/// One [`LatencyStats`] per stage, plus the end-to-end total.
#[derive(Debug, Clone, Default)]
pub struct StageStats {
    per_stage: [LatencyStats; 5],
    total: LatencyStats,
}

impl StageStats {
    pub fn record(&mut self, timings: &StageTimings) {
        for stage in Stage::ALL {
            self.per_stage[stage.index()].push(timings.get(stage));
        }
        self.total.push(timings.total());
    }

    pub fn stage(&self, stage: Stage) -> &LatencyStats {
        &self.per_stage[stage.index()]
    }

    pub fn total(&self) -> &LatencyStats {
        &self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_accumulate_per_stage() {
        let mut t = StageTimings::default();
        t.add(Stage::Network, Duration::from_millis(5));
        t.add(Stage::Network, Duration::from_millis(7));
        t.add(Stage::Decode, Duration::from_millis(1));
        assert_eq!(t.get(Stage::Network), Duration::from_millis(12));
        assert_eq!(t.total(), Duration::from_millis(13));
        t.clear();
        assert_eq!(t.total(), Duration::ZERO);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut s = LatencyStats::default();
        for ms in 1..=100 {
            s.push(Duration::from_millis(ms));
        }
        let sum = s.summary().unwrap();
        assert_eq!(sum.count, 100);
        assert!((sum.p50_ms - 50.0).abs() < 1e-9);
        assert!((sum.p90_ms - 90.0).abs() < 1e-9);
        assert!((sum.p99_ms - 99.0).abs() < 1e-9);
        assert!((sum.max_ms - 100.0).abs() < 1e-9);
        assert!((sum.mean_ms - 50.5).abs() < 1e-9);
        assert!(LatencyStats::default().summary().is_none());
    }

    #[test]
    fn single_sample_is_every_percentile() {
        let mut s = LatencyStats::default();
        s.push(Duration::from_millis(3));
        let sum = s.summary().unwrap();
        assert_eq!((sum.p50_ms, sum.p99_ms, sum.max_ms), (3.0, 3.0, 3.0));
    }
}
