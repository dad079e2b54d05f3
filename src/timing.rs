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
}

/// One-line human summary: `decode 3.1 ms, preprocess 1.2 ms, …, total 52.3 ms` (writes
/// without allocating).
impl fmt::Display for StageTimings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for stage in Stage::ALL {
            write!(f, "{} {:.1} ms, ", stage, self.ms(stage))?;
        }
        write!(f, "total {:.1} ms", self.total().as_secs_f64() * 1e3)
    }
}

/// Summary statistics of a series of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Ratio between the bounds of consecutive histogram buckets: percentiles are within 1 %.
const BUCKET_RATIO: f64 = 1.01;
/// Buckets cover 1 µs .. ~1000 s.
const BUCKETS: usize = 2100;
const FIRST_BUCKET_NS: f64 = 1_000.0;

/// Latency histogram with fixed memory: recording never allocates, so it can run for the
/// whole life of a camera stream. Mean and max are exact; percentiles are the nearest-rank
/// bucket's geometric centre (within 1 %), clamped to the exact min and max.
#[derive(Debug, Clone)]
pub struct LatencyStats {
    counts: Box<[u64]>,
    count: u64,
    sum_ns: f64,
    min_ns: f64,
    max_ns: f64,
}

impl Default for LatencyStats {
    fn default() -> Self {
        LatencyStats {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            sum_ns: 0.0,
            min_ns: f64::INFINITY,
            max_ns: 0.0,
        }
    }
}

impl LatencyStats {
    pub fn push(&mut self, duration: Duration) {
        let ns = duration.as_nanos() as f64;
        let bucket = if ns <= FIRST_BUCKET_NS {
            0
        } else {
            ((ns / FIRST_BUCKET_NS).ln() / BUCKET_RATIO.ln()) as usize
        };
        self.counts[bucket.min(BUCKETS - 1)] += 1;
        self.count += 1;
        self.sum_ns += ns;
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The nearest-rank `p`-th percentile (0..=100), in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        if rank >= self.count {
            return self.max_ns / 1e6;
        }
        let mut seen = 0;
        for (bucket, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let centre = FIRST_BUCKET_NS * BUCKET_RATIO.powf(bucket as f64 + 0.5);
                return centre.clamp(self.min_ns, self.max_ns) / 1e6;
            }
        }
        self.max_ns / 1e6
    }

    /// `None` when nothing was recorded.
    pub fn summary(&self) -> Option<LatencySummary> {
        (self.count > 0).then(|| LatencySummary {
            count: self.count,
            mean_ms: self.sum_ns / self.count as f64 / 1e6,
            p50_ms: self.percentile_ms(50.0),
            p90_ms: self.percentile_ms(90.0),
            p99_ms: self.percentile_ms(99.0),
            max_ms: self.max_ns / 1e6,
        })
    }
}

/// One [`LatencyStats`] per stage, the sum of the stages, and end to end (capture to output
/// written, queueing included).
#[derive(Debug, Clone, Default)]
pub struct StageStats {
    per_stage: [LatencyStats; 5],
    total: LatencyStats,
    end_to_end: LatencyStats,
}

impl StageStats {
    /// Records one frame's stage timings and its end-to-end latency.
    pub fn record(&mut self, timings: &StageTimings, end_to_end: Duration) {
        for stage in Stage::ALL {
            self.per_stage[stage.index()].push(timings.get(stage));
        }
        self.total.push(timings.total());
        self.end_to_end.push(end_to_end);
    }

    pub fn stage(&self, stage: Stage) -> &LatencyStats {
        &self.per_stage[stage.index()]
    }

    /// Sum of the stages of each frame.
    pub fn total(&self) -> &LatencyStats {
        &self.total
    }

    pub fn end_to_end(&self) -> &LatencyStats {
        &self.end_to_end
    }
}

/// Milliseconds from the process's first call of this function to `at` (0 for earlier
/// instants): one clock for the capture times that statistics report.
pub fn clock_ms(at: Instant) -> f64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    at.saturating_duration_since(*ORIGIN.get_or_init(|| at)).as_secs_f64() * 1e3
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
    fn percentiles_are_within_one_percent_of_nearest_rank() {
        let mut s = LatencyStats::default();
        for ms in 1..=100 {
            s.push(Duration::from_millis(ms));
        }
        let sum = s.summary().unwrap();
        assert_eq!(sum.count, 100);
        for (got, want) in [(sum.p50_ms, 50.0), (sum.p90_ms, 90.0), (sum.p99_ms, 99.0)] {
            assert!((got - want).abs() <= want * 0.01, "{got} vs {want}");
        }
        assert!((sum.max_ms - 100.0).abs() < 1e-9);
        assert!((sum.mean_ms - 50.5).abs() < 1e-9);
        assert!(LatencyStats::default().summary().is_none());
    }

    #[test]
    fn tiny_and_huge_latencies_stay_in_range() {
        let mut s = LatencyStats::default();
        s.push(Duration::from_nanos(10));
        s.push(Duration::from_secs(5000));
        // Below 1 µs the histogram only knows "under a microsecond".
        assert!(s.percentile_ms(0.0) <= 0.0011);
        assert_eq!(s.percentile_ms(100.0), 5_000_000.0);
    }

    #[test]
    fn single_sample_is_every_percentile() {
        let mut s = LatencyStats::default();
        s.push(Duration::from_millis(3));
        let sum = s.summary().unwrap();
        assert_eq!((sum.p50_ms, sum.p99_ms, sum.max_ms), (3.0, 3.0, 3.0));
    }
}
