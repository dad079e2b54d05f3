//! The frame rate shown live (the browser view, the window of `display://`): frames per second
//! over the last [`FPS_WINDOW`] frames written, kept in a fixed ring (nothing allocated per frame).

use std::time::Instant;

/// Frames the rate is measured over: about a second at camera rates.
pub const FPS_WINDOW: usize = 30;

/// When the last [`FPS_WINDOW`] frames were written.
#[derive(Debug, Clone)]
pub struct FpsMeter {
    written_at: [Option<Instant>; FPS_WINDOW],
    written: u64,
}

impl Default for FpsMeter {
    fn default() -> Self {
        FpsMeter { written_at: [None; FPS_WINDOW], written: 0 }
    }
}

impl FpsMeter {
    /// A frame was written now.
    pub fn tick(&mut self) {
        self.tick_at(Instant::now());
    }

    fn tick_at(&mut self, at: Instant) {
        self.written_at[self.written as usize % FPS_WINDOW] = Some(at);
        self.written += 1;
    }

    /// Frames per second over the window; 0 before two frames.
    pub fn fps(&self) -> f64 {
        let n = (self.written as usize).min(FPS_WINDOW);
        if n < 2 {
            return 0.0;
        }
        let newest = (self.written as usize - 1) % FPS_WINDOW;
        let oldest = (self.written as usize - n) % FPS_WINDOW;
        match (self.written_at[newest], self.written_at[oldest]) {
            (Some(newest), Some(oldest)) if newest > oldest => {
                (n - 1) as f64 / newest.duration_since(oldest).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rate_over_the_last_frames_only() {
        let start = Instant::now();
        let mut meter = FpsMeter::default();
        assert_eq!(meter.fps(), 0.0);
        // 10 fps for 100 frames, then 50 fps for a window's worth: the old rate is forgotten.
        for i in 0..100 {
            meter.tick_at(start + Duration::from_millis(100 * i));
        }
        assert!((meter.fps() - 10.0).abs() < 1e-6, "{}", meter.fps());
        let later = start + Duration::from_secs(10);
        for i in 0..FPS_WINDOW as u64 {
            meter.tick_at(later + Duration::from_millis(20 * i));
        }
        assert!((meter.fps() - 50.0).abs() < 1e-6, "{}", meter.fps());
    }
}
