//! MP4 files with H.264 video: the `mp4` crate reads the index (`moov`), openh264 (bundled C
//! source, no system ffmpeg) decodes. Baseline, Main and High profiles, B-frames (the decoder
//! reorders; frames come out in display order), any size.
//!
//! Samples are read through a table of (offset, size) built once from the index, into reused
//! buffers, and converted from MP4's length-prefixed NAL units to Annex B for the decoder: no
//! allocation per frame on our side. A sample that cannot be read (a truncated file) or decoded
//! is a bad frame: reported, counted and skipped. An MP4 whose index is missing (truncated
//! before `moov`, which many recorders write last) cannot be opened.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use openh264::decoder::{DecodedYUV, Decoder, DecoderConfig, Flush};
use openh264::formats::YUVSource;

use super::{Captured, Source, SourceError, SourceInfo};
use crate::frame::{Frame, Rgb8Image};
use crate::timing::Stage;

/// Reads the H.264 video track of an MP4 file frame by frame.
pub struct Mp4Source {
    path: PathBuf,
    file: File,
    info: SourceInfo,
    /// (file offset, size) of every sample, in decoding order.
    samples: Vec<(u64, u32)>,
    /// SPS and PPS in Annex B form, fed before the first sample.
    parameter_sets: Vec<u8>,
    nal_length_size: usize,
    decoder: Decoder,
    next_sample: usize,
    /// Output frames so far (display order).
    next_index: u64,
    /// Frames the decoder still held when the samples ran out.
    tail: VecDeque<Rgb8Image>,
    flushed: bool,
    sample: Vec<u8>,
    annex_b: Vec<u8>,
}

impl std::fmt::Debug for Mp4Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mp4Source").field("path", &self.path).field("samples", &self.samples.len()).finish()
    }
}

fn new_decoder(path: &Path) -> Result<Decoder, SourceError> {
    // No flush after each decode: the decoder keeps frames for B-frame reordering and hands
    // them out in display order; the rest is flushed at the end of the file.
    let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
    Decoder::with_api_config(openh264::OpenH264API::from_source(), config).map_err(|e| {
        SourceError::Unreadable {
            path: path.to_path_buf(),
            reason: format!("cannot start the H.264 decoder: {e}"),
        }
    })
}

impl Mp4Source {
    pub fn open(path: &Path) -> Result<Mp4Source, SourceError> {
        let unreadable = |reason: String| SourceError::Unreadable { path: path.to_path_buf(), reason };
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SourceError::NotFound { path: path.to_path_buf() },
            _ => unreadable(e.to_string()),
        })?;
        let size = file.metadata().map_err(|e| unreadable(e.to_string()))?.len();
        let reader = mp4::Mp4Reader::read_header(std::io::BufReader::new(file), size).map_err(|e| {
            unreadable(format!(
                "not a readable MP4 ({e}); if the file is truncated, its index (moov box) may be lost: \
                 re-record it, or remux with `ffmpeg -i in.mp4 -c copy -movflags +faststart out.mp4`"
            ))
        })?;
        let mut tracks: Vec<&mp4::Mp4Track> = reader.tracks().values().collect();
        tracks.sort_by_key(|t| t.track_id());
        let track = tracks.iter().find(|t| t.trak.mdia.minf.stbl.stsd.avc1.is_some()).ok_or_else(|| {
            SourceError::Unsupported {
                input: path.display().to_string(),
                reason: "no H.264 (avc1) video track; re-encode with `ffmpeg -i in -c:v libx264 out.mp4`"
                    .into(),
            }
        })?;
        let stbl = &track.trak.mdia.minf.stbl;
        let avcc = &stbl.stsd.avc1.as_ref().expect("checked above").avcc;
        let mut parameter_sets = Vec::new();
        for nal in avcc.sequence_parameter_sets.iter().chain(&avcc.picture_parameter_sets) {
            parameter_sets.extend_from_slice(&[0, 0, 0, 1]);
            parameter_sets.extend_from_slice(&nal.bytes);
        }
        let chunk_offsets: Vec<u64> = match (&stbl.stco, &stbl.co64) {
            (Some(stco), _) => stco.entries.iter().map(|&o| o as u64).collect(),
            (None, Some(co64)) => co64.entries.clone(),
            (None, None) => {
                return Err(unreadable("the video track has no chunk offsets (stco/co64)".into()));
            }
        };
        let sizes: Vec<u32> = if stbl.stsz.sample_size != 0 {
            vec![stbl.stsz.sample_size; stbl.stsz.sample_count as usize]
        } else {
            stbl.stsz.sample_sizes.clone()
        };
        let chunk_runs: Vec<(u32, u32)> =
            stbl.stsc.entries.iter().map(|e| (e.first_chunk, e.samples_per_chunk)).collect();
        let samples = sample_table(&chunk_offsets, &chunk_runs, &sizes).map_err(unreadable)?;
        let fps = track.frame_rate();
        let info = SourceInfo {
            uri: path.display().to_string(),
            kind: "mp4",
            frame_count: Some(samples.len() as u64),
            nominal_fps: (fps.is_finite() && fps > 0.0).then_some(fps),
            live: false,
        };
        log::debug!(
            "{}: H.264 {}x{}, {} frames, {:.2} fps",
            path.display(),
            track.width(),
            track.height(),
            samples.len(),
            fps
        );
        // The largest sample, known from the table: the read buffers are sized for it now, so
        // that a keyframe larger than any before does not allocate mid-stream (capped: a corrupt
        // size must not reserve gigabytes; such a sample fails at read time instead).
        let largest = samples.iter().map(|&(_, size)| size as usize).max().unwrap_or(0).min(32 << 20);
        let annex_b_capacity = largest + parameter_sets.len();
        Ok(Mp4Source {
            path: path.to_path_buf(),
            file: File::open(path).map_err(|e| unreadable(e.to_string()))?,
            info,
            samples,
            parameter_sets,
            nal_length_size: avcc.length_size_minus_one as usize + 1,
            decoder: new_decoder(path)?,
            next_sample: 0,
            next_index: 0,
            tail: VecDeque::new(),
            flushed: false,
            sample: Vec::with_capacity(largest),
            annex_b: Vec::with_capacity(annex_b_capacity),
        })
    }

    /// Reads sample `i` into `self.sample`.
    fn read_sample(&mut self, i: usize) -> Result<(), String> {
        let (offset, size) = self.samples[i];
        self.sample.resize(size as usize, 0);
        self.file.seek(SeekFrom::Start(offset)).map_err(|e| format!("cannot seek: {e}"))?;
        self.file.read_exact(&mut self.sample).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                "truncated: the file ends inside this frame's data".to_string()
            }
            _ => format!("cannot read: {e}"),
        })
    }

    /// MP4 length-prefixed NAL units → Annex B start codes, into `self.annex_b` (after the
    /// parameter sets when `with_parameter_sets`).
    fn convert_to_annex_b(&mut self, with_parameter_sets: bool) -> Result<(), String> {
        self.annex_b.clear();
        if with_parameter_sets {
            self.annex_b.extend_from_slice(&self.parameter_sets);
        }
        let n = self.nal_length_size;
        let mut rest = &self.sample[..];
        while !rest.is_empty() {
            if rest.len() < n {
                return Err("corrupt sample: a NAL length field is cut short".into());
            }
            let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
            rest = &rest[n..];
            if len > rest.len() {
                return Err(format!("corrupt sample: NAL unit of {len} bytes, {} left", rest.len()));
            }
            self.annex_b.extend_from_slice(&[0, 0, 0, 1]);
            self.annex_b.extend_from_slice(&rest[..len]);
            rest = &rest[len..];
        }
        Ok(())
    }
}

/// (offset, size) of every sample, from the chunk offsets (`stco`/`co64`), the runs of chunks
/// with the same number of samples (`stsc`: first chunk, 1-based, and samples per chunk) and the
/// sample sizes (`stsz`).
fn sample_table(
    chunk_offsets: &[u64],
    chunk_runs: &[(u32, u32)],
    sizes: &[u32],
) -> Result<Vec<(u64, u32)>, String> {
    let mut samples = Vec::with_capacity(sizes.len());
    for (r, &(first_chunk, samples_per_chunk)) in chunk_runs.iter().enumerate() {
        let last_chunk = chunk_runs.get(r + 1).map_or(chunk_offsets.len() + 1, |next| next.0 as usize);
        for chunk in first_chunk as usize..last_chunk {
            let Some(&chunk_offset) = chunk_offsets.get(chunk.wrapping_sub(1)) else { break };
            let mut offset = chunk_offset;
            for _ in 0..samples_per_chunk {
                let Some(&size) = sizes.get(samples.len()) else { return Ok(samples) };
                samples.push((offset, size));
                offset += size as u64;
            }
        }
    }
    if samples.len() != sizes.len() {
        return Err(format!(
            "the index places {} of {} samples (corrupt stsc/stco)",
            samples.len(),
            sizes.len()
        ));
    }
    Ok(samples)
}

/// Converts a decoded I420 picture to RGB8 (BT.601, as openh264 writes it) into `out`.
fn yuv_to_rgb(yuv: &DecodedYUV<'_>, out: &mut Rgb8Image) {
    let (w, h) = yuv.dimensions();
    out.reset(w, h);
    yuv.write_rgb8(&mut out.data);
}

impl Source for Mp4Source {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next(&mut self, frame: &mut Frame) -> Result<Captured, SourceError> {
        let start = Instant::now();
        while self.next_sample < self.samples.len() {
            let i = self.next_sample;
            self.next_sample += 1;
            let bad = |index: u64, reason: String| SourceError::BadFrame {
                index,
                name: format!("{index:06}"),
                reason,
            };
            // A frame that fails is numbered as the next output would have been.
            if let Err(reason) = self.read_sample(i).and_then(|_| self.convert_to_annex_b(i == 0)) {
                let index = self.next_index;
                self.next_index += 1;
                return Err(bad(index, reason));
            }
            match self.decoder.decode(&self.annex_b) {
                Ok(Some(yuv)) => {
                    frame.begin_numbered(self.next_index);
                    yuv_to_rgb(&yuv, &mut frame.image);
                    self.next_index += 1;
                    frame.timings.add(Stage::Decode, start.elapsed());
                    return Ok(Captured::Frame);
                }
                Ok(None) => continue, // held for reordering
                Err(e) => {
                    let index = self.next_index;
                    self.next_index += 1;
                    return Err(bad(index, format!("H.264 decoding failed: {e}")));
                }
            }
        }
        if !self.flushed {
            self.flushed = true;
            match self.decoder.flush_remaining() {
                Ok(frames) => {
                    for yuv in frames {
                        let mut image = Rgb8Image::default();
                        yuv_to_rgb(&yuv, &mut image);
                        self.tail.push_back(image);
                    }
                }
                Err(e) => log::warn!("{}: flushing the decoder failed: {e}", self.path.display()),
            }
        }
        match self.tail.pop_front() {
            Some(image) => {
                frame.begin_numbered(self.next_index);
                frame.image = image;
                self.next_index += 1;
                frame.timings.add(Stage::Decode, start.elapsed());
                Ok(Captured::Frame)
            }
            None => Ok(Captured::EndOfStream),
        }
    }

    fn rewind(&mut self) -> Result<bool, SourceError> {
        self.decoder = new_decoder(&self.path)?;
        self.next_sample = 0;
        self.next_index = 0;
        self.tail.clear();
        self.flushed = false;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_table_follows_chunk_runs() {
        // Chunks at 100, 200, 300: the first two hold 2 samples, the third 1.
        let table = sample_table(&[100, 200, 300], &[(1, 2), (3, 1)], &[10, 20, 30, 40, 50]).unwrap();
        assert_eq!(table, vec![(100, 10), (110, 20), (200, 30), (230, 40), (300, 50)]);
        assert!(sample_table(&[100], &[(1, 2)], &[10, 20, 30]).is_err());
    }
}
