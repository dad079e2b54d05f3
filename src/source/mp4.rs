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
use crate::guard::catch_panic;
use crate::limits::{Limits, check_fps};
use crate::timing::Stage;

/// Reads the H.264 video track of an MP4 file frame by frame.
pub struct Mp4Source {
    path: PathBuf,
    file: File,
    file_len: u64,
    limits: Limits,
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
    /// Opens `path`. The box structure is checked first (every box inside its parent and the
    /// file), so that the counts the `mp4` crate allocates for are bounded by the file's size;
    /// the crate itself runs under [`catch_panic`] (it divides by values read from the file).
    pub fn open(path: &Path, limits: &Limits) -> Result<Mp4Source, SourceError> {
        let unreadable = |reason: String| SourceError::Unreadable { path: path.to_path_buf(), reason };
        let open = || {
            crate::files::open_input(path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => SourceError::NotFound { path: path.to_path_buf() },
                _ => unreadable(e.to_string()),
            })
        };
        let (mut file, meta) = open()?;
        let size = meta.len();
        check_box_tree(&mut file, size).map_err(|e| unreadable(format!("not a readable MP4: {e}")))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| unreadable(e.to_string()))?;
        let budget = ReadBudget::new(std::io::BufReader::new(file), 2 * size + (1 << 20));
        let header = catch_panic(|| mp4::Mp4Reader::read_header(budget, size))
            .map_err(|panic| unreadable(format!("not a readable MP4: the demuxer failed on it ({panic})")))?;
        let reader = header.map_err(|e| {
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
                reason: "no H.264 (avc1) video track; re-encode with `ffmpeg -i in -c:v libx264 out.mp4`, \
                         or use a build with `--features gstreamer`, which decodes H.265 too"
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
            // One size for all: the count is not bounded by the box's length, so by the file's.
            let (count, each) = (stbl.stsz.sample_count as u64, stbl.stsz.sample_size as u64);
            if count * each > size {
                return Err(unreadable(format!(
                    "the index declares {count} samples of {each} bytes, more than the file holds (corrupt stsz)"
                )));
            }
            vec![stbl.stsz.sample_size; count as usize]
        } else {
            stbl.stsz.sample_sizes.clone()
        };
        let chunk_runs: Vec<(u32, u32)> =
            stbl.stsc.entries.iter().map(|e| (e.first_chunk, e.samples_per_chunk)).collect();
        let samples = sample_table(&chunk_offsets, &chunk_runs, &sizes).map_err(unreadable)?;
        let (width, height) = (track.width() as u64, track.height() as u64);
        if width > 0 && height > 0 {
            limits.check_frame(width, height).map_err(|e| unreadable(format!("H.264 track: {e}")))?;
        }
        let mdhd = &track.trak.mdia.mdhd;
        let fps = nominal_fps(samples.len() as u64, mdhd.timescale, mdhd.duration);
        let fps = match fps.map(|fps| check_fps(fps, "its frame rate")) {
            Some(Ok(fps)) => Some(fps),
            Some(Err(e)) => {
                log::warn!("{}: {e}; the rate is ignored (give one with --input-rate)", path.display());
                None
            }
            None => None,
        };
        let info = SourceInfo {
            uri: path.display().to_string(),
            kind: "mp4",
            frame_count: Some(samples.len() as u64),
            nominal_fps: fps,
            live: false,
        };
        log::debug!("{}: H.264 {width}x{height}, {} frames, {fps:?} fps", path.display(), samples.len());
        // The largest sample, known from the table: the read buffers are sized for it now, so
        // that a keyframe larger than any before does not allocate mid-stream (capped: a corrupt
        // size must not reserve gigabytes; such a sample fails at read time instead).
        let largest = samples.iter().map(|&(_, size)| size as usize).max().unwrap_or(0).min(32 << 20);
        let annex_b_capacity = largest + parameter_sets.len();
        Ok(Mp4Source {
            path: path.to_path_buf(),
            file: open()?.0,
            file_len: size,
            limits: *limits,
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
        if offset.saturating_add(size as u64) > self.file_len {
            return Err("truncated: the index places this frame past the end of the file".into());
        }
        if size as u64 > self.limits.max_encoded_bytes() {
            return Err(format!(
                "the index says this frame is {size} bytes, too large for one frame (corrupt stsz)"
            ));
        }
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

/// openh264's decoding state bits (`DECODING_STATE` in its API) in words.
fn describe_decoding_error(e: &openh264::Error) -> String {
    let code = e.native_code();
    let meanings = [
        (2, "a reference frame is missing"),
        (4, "the bitstream is corrupt"),
        (8, "a dependency layer is missing"),
        (16, "no sequence or picture parameter set (SPS/PPS)"),
        (32, "corrupt data was concealed"),
    ];
    let said: Vec<&str> = meanings.iter().filter(|(bit, _)| code & bit != 0).map(|(_, what)| *what).collect();
    if said.is_empty() {
        format!("openh264 error {code}")
    } else {
        format!("{} (openh264 state {code})", said.join(", "))
    }
}

/// Frames per second from the media header (time scale in ticks per second, duration in ticks)
/// and the sample count; `None` when the header cannot say (a zero time scale or duration).
fn nominal_fps(samples: u64, timescale: u32, duration: u64) -> Option<f64> {
    (timescale > 0 && duration > 0 && samples > 0)
        .then(|| samples as f64 * timescale as f64 / duration as f64)
}

/// Converts a decoded I420 picture to RGB8 (BT.601, as openh264 writes it) into `out`, after
/// checking its size against `limits`.
fn yuv_to_rgb(yuv: &DecodedYUV<'_>, out: &mut Rgb8Image, limits: &Limits) -> Result<(), String> {
    let (w, h) = yuv.dimensions();
    limits.check_frame(w as u64, h as u64).map_err(|e| e.to_string())?;
    out.reset(w, h);
    yuv.write_rgb8(&mut out.data);
    Ok(())
}

/// Box types whose payload is a sequence of boxes (ISO/IEC 14496-12).
const CONTAINER_BOXES: [&[u8; 4]; 11] =
    [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"dinf", b"edts", b"udta", b"mvex", b"moof", b"traf"];

/// A reader that fails once `left` bytes have been read: the `mp4` crate's header parser reads
/// each byte of the index about once, but loops forever on some corrupt box sizes (a nested box
/// of size 0 inside boxes that [`check_box_tree`] does not walk, like `meta` or `mp4a`).
struct ReadBudget<R> {
    inner: R,
    left: u64,
}

impl<R> ReadBudget<R> {
    fn new(inner: R, bytes: u64) -> Self {
        ReadBudget { inner, left: bytes }
    }
}

impl<R: Read> Read for ReadBudget<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the MP4 index reads far more than the file holds (corrupt box sizes)",
            ));
        }
        let n = self.inner.read(buf)?;
        self.left = self.left.saturating_sub(n as u64);
        Ok(n)
    }
}

impl<R: Seek> Seek for ReadBudget<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// Walks the box tree of an MP4 file (headers only) and checks that every box lies inside its
/// parent and the file, and is at least as long as its header; only a last top-level box of
/// media data may run past the end (a truncated file). Depth is bounded.
fn check_box_tree(file: &mut (impl Read + Seek), len: u64) -> Result<(), String> {
    fn walk(file: &mut (impl Read + Seek), start: u64, end: u64, depth: u32) -> Result<(), String> {
        if depth > 16 {
            return Err("boxes nested more than 16 deep".into());
        }
        let mut at = start;
        while at < end {
            if end - at < 8 {
                // Trailing bytes too short for a box header: ignored, as players do.
                return Ok(());
            }
            file.seek(SeekFrom::Start(at)).map_err(|e| e.to_string())?;
            let mut header = [0u8; 16];
            file.read_exact(&mut header[..8]).map_err(|e| e.to_string())?;
            let size32 = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as u64;
            let kind: [u8; 4] = [header[4], header[5], header[6], header[7]];
            let (size, header_len) = match size32 {
                // "To the end of the file": only the last top-level box may say so. Inside a
                // parent, the mp4 crate would read the same header forever.
                0 if depth > 0 => {
                    return Err(format!(
                        "box {:?} at byte {at} has size 0, which only a last top-level box may have",
                        String::from_utf8_lossy(&kind)
                    ));
                }
                0 => (end - at, 8),
                1 => {
                    if end - at < 16 {
                        return Err(format!("box {:?} at {at} is cut short", String::from_utf8_lossy(&kind)));
                    }
                    file.read_exact(&mut header[8..16]).map_err(|e| e.to_string())?;
                    let large = u64::from_be_bytes(header[8..16].try_into().expect("8 bytes"));
                    (large, 16)
                }
                n => (n, 8),
            };
            if depth == 0 && size > end - at && !CONTAINER_BOXES.contains(&&kind) && size >= header_len {
                // The last top-level box is cut short (a truncated recording): its media data
                // is read sample by sample, each checked against the file's length.
                return Ok(());
            }
            if size < header_len || size > end - at {
                return Err(format!(
                    "box {:?} at byte {at} claims {size} bytes, but its parent has {} left (corrupt or truncated file)",
                    String::from_utf8_lossy(&kind),
                    end - at
                ));
            }
            if CONTAINER_BOXES.contains(&&kind) {
                walk(file, at + header_len, at + size, depth + 1)?;
            }
            at += size;
        }
        Ok(())
    }
    walk(file, 0, len, 0)
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
            let (decoder, annex_b, limits) = (&mut self.decoder, &self.annex_b, &self.limits);
            let decoded = catch_panic(|| match decoder.decode(annex_b) {
                Ok(Some(yuv)) => yuv_to_rgb(&yuv, &mut frame.image, limits).map(|_| true),
                Ok(None) => Ok(false), // held for reordering
                Err(e) => Err(format!("H.264 decoding failed: {}", describe_decoding_error(&e))),
            });
            let decoded = match decoded {
                Ok(result) => result,
                Err(panic) => {
                    // The decoder's state is unknown after a panic: start a fresh one (the
                    // frames up to the next keyframe will fail to decode, each counted).
                    self.decoder = new_decoder(&self.path)?;
                    Err(format!("the H.264 decoder failed on this frame ({panic})"))
                }
            };
            match decoded {
                Ok(true) => {
                    frame.begin_numbered(self.next_index);
                    self.next_index += 1;
                    frame.timings.add(Stage::Decode, start.elapsed());
                    return Ok(Captured::Frame);
                }
                Ok(false) => continue,
                Err(reason) => {
                    let index = self.next_index;
                    self.next_index += 1;
                    return Err(bad(index, reason));
                }
            }
        }
        if !self.flushed {
            self.flushed = true;
            let (decoder, tail, limits) = (&mut self.decoder, &mut self.tail, &self.limits);
            let flushed = catch_panic(|| match decoder.flush_remaining() {
                Ok(frames) => {
                    for yuv in frames {
                        let mut image = Rgb8Image::default();
                        match yuv_to_rgb(&yuv, &mut image, limits) {
                            Ok(()) => tail.push_back(image),
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            });
            if let Err(e) = flushed.unwrap_or_else(Err) {
                log::warn!(
                    "{}: flushing the decoder failed: {e}; the last frames are lost",
                    self.path.display()
                );
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

    fn input_files(&self) -> Vec<&Path> {
        vec![&self.path]
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
    fn a_read_budget_ends_a_parser_that_loops() {
        let mut reader = ReadBudget::new(std::io::Cursor::new(vec![7u8; 64]), 24);
        let mut header = [0u8; 8];
        for _ in 0..3 {
            reader.read_exact(&mut header).unwrap();
            reader.seek(SeekFrom::Start(0)).unwrap(); // the same header again, as a size-0 box does
        }
        let err = reader.read_exact(&mut header).unwrap_err();
        assert!(err.to_string().contains("corrupt box sizes"), "{err}");
    }

    #[test]
    fn a_nested_box_of_size_0_is_refused() {
        // moov { trak of size 0 }: the mp4 crate would read the trak header forever.
        let mut file = Vec::new();
        file.extend_from_slice(&16u32.to_be_bytes());
        file.extend_from_slice(b"moov");
        file.extend_from_slice(&0u32.to_be_bytes());
        file.extend_from_slice(b"trak");
        let err = check_box_tree(&mut std::io::Cursor::new(&file), file.len() as u64).unwrap_err();
        assert!(err.contains("size 0"), "{err}");
    }

    #[test]
    fn sample_table_follows_chunk_runs() {
        // Chunks at 100, 200, 300: the first two hold 2 samples, the third 1.
        let table = sample_table(&[100, 200, 300], &[(1, 2), (3, 1)], &[10, 20, 30, 40, 50]).unwrap();
        assert_eq!(table, vec![(100, 10), (110, 20), (200, 30), (230, 40), (300, 50)]);
        assert!(sample_table(&[100], &[(1, 2)], &[10, 20, 30]).is_err());
    }
}
