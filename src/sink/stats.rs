//! `--stats FILE.jsonl`: one JSON object per frame, in capture order, for every frame the source
//! delivered (written, failed or dropped):
//!
//! ```json
//! {"frame": 12, "source": "aachen_000012", "status": "ok", "captured_ms": 400.2,
//!  "stages_ms": {"decode": 3.1, "preprocess": 0.9, "network": 55.2, "postprocess": 1.4, "output": 0.3},
//!  "end_to_end_ms": 61.2, "dropped": 0}
//! ```
//! `frame` counts frames from 0 over the whole run; `source` is the frame's name (input file
//! stem, or `%06d` of its index in the source); `captured_ms` is the capture time, in ms from the
//! first frame's (monotonic: it never goes back); `end_to_end_ms` runs from capture to the last
//! output written (queueing included); `dropped` is the number of frames dropped before this
//! one. Failed frames carry `"error"`. Lines are written without allocating.
//!
//! Like every file output, the file is `FILE.jsonl.partial` until the run ends and is then
//! renamed ([`PartialFile`]). Each line goes to the file in one write as soon as its frame is
//! final, so during a run, and after a kill (SIGKILL, power loss) that left only the `.partial`
//! file, that file holds one whole line for each frame finished so far, in order.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Sink, SinkError};
use crate::files::PartialFile;
use crate::frame::Frame;
use crate::pipeline::FrameEvent;
use crate::postprocess::Needs;
use crate::timing::Stage;

/// Writes the JSON-lines statistics file.
#[derive(Debug)]
pub struct StatsSink {
    path: PathBuf,
    /// `None` once committed.
    out: Option<PartialFile>,
}

impl StatsSink {
    pub fn create(path: &Path) -> Result<StatsSink, SinkError> {
        let out = PartialFile::create(path)
            .map_err(|e| SinkError::Write { path: path.to_path_buf(), reason: e.to_string() })?;
        Ok(StatsSink { path: path.to_path_buf(), out: Some(out) })
    }

    fn line(&mut self, frame: &Frame) -> std::io::Result<()> {
        let out = self.out.as_mut().ok_or_else(|| std::io::Error::other("statistics already closed"))?;
        write_frame_json(out, frame)?;
        writeln!(out)?;
        // The whole line leaves the buffer in one write.
        out.flush()
    }
}

/// Writes one frame's statistics as a JSON object (no newline), without allocating: the
/// format in this module's documentation, shared by `--stats` and the browser view.
pub fn write_frame_json(out: &mut impl Write, frame: &Frame) -> std::io::Result<()> {
    write!(out, "{{\"frame\": {}, \"source\": ", frame.index)?;
    write_json_string(out, &frame.name)?;
    write!(
        out,
        ", \"status\": \"{}\", \"captured_ms\": {:.3}, \"stages_ms\": {{",
        frame.status.name(),
        crate::timing::clock_ms(frame.captured_at)
    )?;
    for (i, stage) in Stage::ALL.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        write!(out, "{sep}\"{}\": {:.3}", stage.name(), frame.timings.ms(*stage))?;
    }
    write!(
        out,
        "}}, \"end_to_end_ms\": {:.3}, \"dropped\": {}",
        frame.end_to_end.as_secs_f64() * 1e3,
        frame.dropped_before
    )?;
    if !frame.error.is_empty() {
        write!(out, ", \"error\": ")?;
        write_json_string(out, &frame.error)?;
    }
    write!(out, "}}")
}

/// Writes `s` as a JSON string literal.
fn write_json_string(out: &mut impl Write, s: &str) -> std::io::Result<()> {
    out.write_all(b"\"")?;
    for c in s.chars() {
        match c {
            '"' => out.write_all(b"\\\"")?,
            '\\' => out.write_all(b"\\\\")?,
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32)?,
            c => write!(out, "{c}")?,
        }
    }
    out.write_all(b"\"")
}

impl Sink for StatsSink {
    fn describe(&self) -> String {
        format!("per-frame statistics -> {}", self.path.display())
    }

    fn needs(&self) -> Needs {
        Needs::default()
    }

    fn write(&mut self, _frame: &Frame) -> Result<(), SinkError> {
        Ok(())
    }

    fn record(&mut self, event: &FrameEvent<'_>) -> Result<(), SinkError> {
        self.line(event.frame())
            .map_err(|e| SinkError::Write { path: self.path.clone(), reason: e.to_string() })
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        match self.out.take() {
            Some(out) => {
                out.commit().map_err(|e| SinkError::Write { path: self.path.clone(), reason: e.to_string() })
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameStatus;

    #[test]
    fn lines_are_json_with_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/stats.jsonl");
        let mut sink = StatsSink::create(&path).unwrap();
        let mut frame = Frame::default();
        frame.begin(3, "we\"ird\\name");
        frame.timings.add(Stage::Network, std::time::Duration::from_micros(1500));
        frame.end_to_end = std::time::Duration::from_millis(2);
        frame.dropped_before = 4;
        sink.record(&FrameEvent::Written(&frame)).unwrap();
        frame.status = FrameStatus::Failed;
        frame.error.push_str("bad\nframe");
        sink.record(&FrameEvent::Failed(&frame)).unwrap();
        // Before the end: whole lines in the .partial file, nothing under the final name.
        let partial = std::fs::read_to_string(dir.path().join("sub/stats.jsonl.partial")).unwrap();
        assert_eq!(partial.lines().count(), 2);
        assert!(partial.ends_with('\n') && !path.exists());
        sink.finish().unwrap();
        assert!(!dir.path().join("sub/stats.jsonl.partial").exists());
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["frame"], 3);
        assert_eq!(lines[0]["source"], "we\"ird\\name");
        assert_eq!(lines[0]["status"], "ok");
        assert_eq!(lines[0]["stages_ms"]["network"], 1.5);
        assert_eq!(lines[0]["end_to_end_ms"], 2.0);
        assert_eq!(lines[0]["dropped"], 4);
        assert_eq!(lines[1]["error"], "bad\nframe");
    }
}
