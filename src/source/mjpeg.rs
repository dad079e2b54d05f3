//! MJPEG stream files: JPEG images one after the other, as `semask-edge record` writes them (and
//! as many cameras and tools dump them).
//!
//! Frames are cut out of the byte stream by JPEG markers: a frame starts at an SOI (`FF D8 FF`)
//! and ends at the EOI (`FF D9`) after its last scan; segments are skipped by their lengths, so
//! thumbnails inside APP segments do not cut a frame short. Bytes between frames (garbage) are
//! skipped up to the next SOI and reported. A frame that is cut short or does not decode is a bad
//! frame (reported, counted, skipped); the stream goes on with the next one.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::images::decode_into;
use super::{Captured, Source, SourceError, SourceInfo};
use crate::frame::Frame;
use crate::limits::Limits;
use crate::timing::Stage;

/// What [`JpegSplitter::next_frame`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// A frame from SOI to EOI (or to where its structure broke: the decoder will judge).
    Frame,
    /// The frame was cut short (by the end of the stream, or by the next frame's SOI).
    Truncated,
    /// The frame ran past the size bound without ending: it was skipped up to the next SOI.
    TooLarge,
    /// No more frames.
    End,
}

/// Splits a byte stream into JPEG frames.
#[derive(Debug)]
pub struct JpegSplitter<R: BufRead> {
    reader: R,
    /// Bytes given back, popped before reading (at most two).
    back: Vec<u8>,
    /// Largest frame kept in memory; a longer one is skipped ([`Split::TooLarge`]).
    max_frame_bytes: usize,
}

impl<R: BufRead> JpegSplitter<R> {
    pub fn new(reader: R, max_frame_bytes: usize) -> Self {
        JpegSplitter { reader, back: Vec::with_capacity(4), max_frame_bytes }
    }

    fn byte(&mut self) -> std::io::Result<Option<u8>> {
        if let Some(b) = self.back.pop() {
            return Ok(Some(b));
        }
        let buf = self.reader.fill_buf()?;
        let Some(&b) = buf.first() else { return Ok(None) };
        self.reader.consume(1);
        Ok(Some(b))
    }

    fn unread(&mut self, b: u8) {
        self.back.push(b);
    }

    /// Reads the next frame into `out` (cleared first); `skipped` grows by the number of bytes
    /// that belonged to no frame.
    pub fn next_frame(&mut self, out: &mut Vec<u8>, skipped: &mut u64) -> std::io::Result<Split> {
        out.clear();
        // Find SOI: FF D8 FF.
        loop {
            let Some(b) = self.byte()? else { return Ok(Split::End) };
            if b != 0xFF {
                *skipped += 1;
                continue;
            }
            match self.byte()? {
                Some(0xD8) => match self.byte()? {
                    Some(0xFF) => {
                        out.extend_from_slice(&[0xFF, 0xD8]);
                        self.unread(0xFF);
                        break;
                    }
                    Some(other) => {
                        *skipped += 2;
                        self.unread(other);
                    }
                    None => return Ok(Split::End),
                },
                Some(other) => {
                    *skipped += 1;
                    self.unread(other);
                }
                None => return Ok(Split::End),
            }
        }
        // Marker segments, scans, until EOI.
        loop {
            if out.len() > self.max_frame_bytes {
                out.clear();
                return Ok(Split::TooLarge);
            }
            let Some(b) = self.byte()? else { return Ok(Split::Truncated) };
            if b != 0xFF {
                // No marker where one must be: the frame is broken. The decoder refuses it; the
                // next call resynchronises on the next SOI.
                self.unread(b);
                return Ok(Split::Frame);
            }
            let mut code = 0xFF;
            while code == 0xFF {
                let Some(c) = self.byte()? else { return Ok(Split::Truncated) };
                code = c;
            }
            match code {
                0xD9 => {
                    out.extend_from_slice(&[0xFF, 0xD9]);
                    return Ok(Split::Frame);
                }
                0xD8 => {
                    // The next frame starts inside this one: this one was cut short.
                    self.unread(0xD8);
                    self.unread(0xFF);
                    return Ok(Split::Truncated);
                }
                0x01 | 0xD0..=0xD7 => out.extend_from_slice(&[0xFF, code]),
                _ => {
                    let (Some(hi), Some(lo)) = (self.byte()?, self.byte()?) else {
                        return Ok(Split::Truncated);
                    };
                    out.extend_from_slice(&[0xFF, code, hi, lo]);
                    let len = u16::from_be_bytes([hi, lo]) as usize;
                    if len < 2 {
                        return Ok(Split::Frame); // broken length: the decoder refuses it
                    }
                    // APPn and COM payloads may embed whole JPEGs (EXIF thumbnails); in any other
                    // segment an SOI means the frame was cut and the next one starts here.
                    let may_embed = (0xE0..=0xEF).contains(&code) || code == 0xFE;
                    let mut prev = 0u8;
                    for _ in 0..len - 2 {
                        let Some(b) = self.byte()? else { return Ok(Split::Truncated) };
                        if !may_embed && prev == 0xFF && b == 0xD8 {
                            out.pop();
                            self.unread(0xD8);
                            self.unread(0xFF);
                            return Ok(Split::Truncated);
                        }
                        out.push(b);
                        prev = b;
                    }
                    if code == 0xDA {
                        self.scan_data(out)?;
                    }
                }
            }
        }
    }

    /// Entropy-coded data after SOS: runs until a marker other than stuffing (FF 00) and
    /// restarts (FF D0..D7), which is given back for the segment loop.
    fn scan_data(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        loop {
            // Over the bound: stop keeping bytes (the caller then skips this frame).
            if out.len() > self.max_frame_bytes {
                return Ok(());
            }
            let Some(b) = self.byte()? else { return Ok(()) };
            if b != 0xFF {
                out.push(b);
                continue;
            }
            match self.byte()? {
                Some(next) if next == 0x00 || (0xD0..=0xD7).contains(&next) => {
                    out.extend_from_slice(&[0xFF, next])
                }
                Some(next) => {
                    self.unread(next);
                    self.unread(0xFF);
                    return Ok(());
                }
                None => return Ok(()),
            }
        }
    }
}

/// Frames from an MJPEG stream file.
#[derive(Debug)]
pub struct MjpegSource {
    path: PathBuf,
    splitter: JpegSplitter<BufReader<File>>,
    info: SourceInfo,
    next: u64,
    jpeg: Vec<u8>,
    skipped_bytes: u64,
    limits: Limits,
}

impl MjpegSource {
    /// Opens `path`, counting its frames (one quick pass) for progress and reports. `fps` is the
    /// nominal rate, which a bare MJPEG stream does not record (`--input-rate`).
    pub fn open(path: &Path, fps: Option<f64>, limits: Limits) -> Result<MjpegSource, SourceError> {
        let mut frames = 0u64;
        let mut splitter = open_splitter(path, &limits)?;
        let (mut buf, mut skipped) = (Vec::new(), 0u64);
        while splitter.next_frame(&mut buf, &mut skipped).map_err(|e| unreadable(path, e))? != Split::End {
            frames += 1;
        }
        if frames == 0 {
            return Err(SourceError::Unreadable {
                path: path.to_path_buf(),
                reason: "no JPEG frame found (no FF D8 start-of-image marker): not an MJPEG stream".into(),
            });
        }
        let info = SourceInfo {
            uri: path.display().to_string(),
            kind: "mjpeg",
            frame_count: Some(frames),
            nominal_fps: fps,
            live: false,
        };
        Ok(MjpegSource {
            path: path.to_path_buf(),
            splitter: open_splitter(path, &limits)?,
            info,
            next: 0,
            jpeg: buf,
            skipped_bytes: 0,
            limits,
        })
    }
}

fn unreadable(path: &Path, e: std::io::Error) -> SourceError {
    SourceError::Unreadable { path: path.to_path_buf(), reason: e.to_string() }
}

fn open_splitter(path: &Path, limits: &Limits) -> Result<JpegSplitter<BufReader<File>>, SourceError> {
    let (file, _) = crate::files::open_input(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SourceError::NotFound { path: path.to_path_buf() },
        _ => unreadable(path, e),
    })?;
    let max_frame_bytes = usize::try_from(limits.max_encoded_bytes()).unwrap_or(usize::MAX);
    Ok(JpegSplitter::new(BufReader::with_capacity(1 << 16, file), max_frame_bytes))
}

impl Source for MjpegSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next(&mut self, frame: &mut Frame) -> Result<Captured, SourceError> {
        let start = Instant::now();
        let skipped_before = self.skipped_bytes;
        let split = self
            .splitter
            .next_frame(&mut self.jpeg, &mut self.skipped_bytes)
            .map_err(|e| unreadable(&self.path, e))?;
        if self.skipped_bytes > skipped_before {
            log::warn!(
                "{}: skipped {} bytes that belong to no frame before frame {}",
                self.path.display(),
                self.skipped_bytes - skipped_before,
                self.next
            );
        }
        let index = self.next;
        let bad = |reason: String| SourceError::BadFrame { index, name: format!("{index:06}"), reason };
        match split {
            Split::End => return Ok(Captured::EndOfStream),
            Split::Truncated => {
                self.next += 1;
                return Err(bad("truncated JPEG (the frame is cut short)".into()));
            }
            Split::TooLarge => {
                self.next += 1;
                return Err(bad(format!(
                    "the frame runs past {} bytes without an end-of-image marker (a corrupt stream?); skipped",
                    self.splitter.max_frame_bytes
                )));
            }
            Split::Frame => {}
        }
        self.next += 1;
        frame.begin_numbered(index);
        decode_into(&self.jpeg, &mut frame.image, &self.limits).map_err(|e| bad(e.to_string()))?;
        frame.timings.add(Stage::Decode, start.elapsed());
        Ok(Captured::Frame)
    }

    fn rewind(&mut self) -> Result<bool, SourceError> {
        self.splitter = open_splitter(&self.path, &self.limits)?;
        self.next = 0;
        Ok(true)
    }

    fn input_files(&self) -> Vec<&Path> {
        vec![&self.path]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32, seed: u8) -> Vec<u8> {
        let mut out = Vec::new();
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x as u8).wrapping_mul(seed), y as u8, seed]))
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg)
            .unwrap();
        out
    }

    fn split_all(bytes: &[u8]) -> (Vec<(Split, Vec<u8>)>, u64) {
        let mut s = JpegSplitter::new(std::io::Cursor::new(bytes), 1 << 20);
        let (mut out, mut skipped, mut all) = (Vec::new(), 0, Vec::new());
        loop {
            let r = s.next_frame(&mut out, &mut skipped).unwrap();
            if r == Split::End {
                return (all, skipped);
            }
            all.push((r, out.clone()));
        }
    }

    #[test]
    fn concatenated_jpegs_split_exactly() {
        let frames = [jpeg(16, 8, 1), jpeg(32, 16, 2), jpeg(8, 8, 3)];
        let stream: Vec<u8> = frames.concat();
        let (split, skipped) = split_all(&stream);
        assert_eq!(skipped, 0);
        assert_eq!(split.len(), 3);
        for ((kind, bytes), original) in split.iter().zip(&frames) {
            assert_eq!(*kind, Split::Frame);
            assert_eq!(bytes, original);
        }
    }

    #[test]
    fn garbage_between_frames_is_skipped_and_counted() {
        let (a, b) = (jpeg(16, 8, 1), jpeg(16, 8, 2));
        let stream = [&a[..], b"\x00garbage\xFF\x00\xFF", &b[..], b"trailing"].concat();
        let (split, skipped) = split_all(&stream);
        assert_eq!(split.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![Split::Frame, Split::Frame]);
        assert_eq!(split[1].1, b);
        assert_eq!(skipped, 11 + 8);
    }

    #[test]
    fn a_frame_cut_by_the_next_soi_is_truncated_and_the_next_survives() {
        let (a, b) = (jpeg(16, 8, 1), jpeg(16, 8, 2));
        let stream = [&a[..a.len() / 2], &b[..]].concat();
        let (split, _) = split_all(&stream);
        let kinds: Vec<Split> = split.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds.last(), Some(&Split::Frame));
        assert_eq!(split.last().unwrap().1, b);
        assert!(kinds.contains(&Split::Truncated), "{kinds:?}");
    }
}
