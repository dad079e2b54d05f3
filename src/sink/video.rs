//! `--output FILE.mp4` / `FILE.mjpeg`: the overlay of every frame as a video.
//!
//! - `.mp4`: H.264 (openh264 encoder, constrained baseline) in an MP4 container (`mp4` crate),
//!   at the source's frame rate. Odd frame sizes are padded by one row or column (H.264 4:2:0
//!   needs even sizes).
//! - `.mjpeg` / `.mjpg`: JPEG frames one after the other ([`super::jpeg`]), readable by
//!   `semask-edge run -i FILE.mjpeg`, ffmpeg (`-f mjpeg`) and most players.
//!
//! The file is written as `FILE.partial` and renamed when the run ends ([`PartialFile`]), so a
//! file with the final name is always complete (Ctrl-C and SIGTERM included: the frames so far
//! are finalised).

use std::io::Write;
use std::path::{Path, PathBuf};

use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, RateControlMode,
};
use openh264::formats::{RgbSliceU8, YUVBuffer};

use super::{Sink, SinkError};
use crate::files::PartialFile;
use crate::frame::{Frame, Rgb8Image};
use crate::postprocess::Needs;

/// Smallest frame H.264 (openh264) encodes: one macroblock.
pub const MIN_H264_SIDE: usize = 16;

/// Video container of an `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoFormat {
    Mp4,
    Mjpeg,
}

impl VideoFormat {
    /// The format a file name asks for.
    pub fn from_path(path: &Path) -> Option<VideoFormat> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "mp4" => Some(VideoFormat::Mp4),
            "mjpeg" | "mjpg" => Some(VideoFormat::Mjpeg),
            _ => None,
        }
    }
}

/// Writes overlays into a video file.
pub struct VideoSink {
    path: PathBuf,
    fps: f64,
    size: Option<(usize, usize)>,
    frames: u64,
    writer: Writer,
    /// Even-sized copy of an odd-sized frame.
    padded: Rgb8Image,
}

// One per run: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Writer {
    Mjpeg {
        /// `None` once committed.
        out: Option<PartialFile>,
        jpeg: Vec<u8>,
    },
    Mp4 {
        /// The file until the muxer takes it (at the first frame, when SPS/PPS are known).
        out: Option<PartialFile>,
        muxer: Option<mp4::Mp4Writer<PartialFile>>,
        encoder: Option<Encoder>,
        yuv: Option<YUVBuffer>,
        annex_b: Vec<u8>,
        sample: Vec<u8>,
    },
}

impl std::fmt::Debug for VideoSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoSink").field("path", &self.path).field("frames", &self.frames).finish()
    }
}

impl VideoSink {
    /// Creates `path` (as `path.partial` until the end) for frames at `fps`, which must be in
    /// [`crate::limits::FPS_RANGE`].
    pub fn create(path: &Path, fps: f64) -> Result<VideoSink, SinkError> {
        let format = VideoFormat::from_path(path).ok_or_else(|| {
            SinkError::Config(format!("--output {}: unknown video type; use .mp4 or .mjpeg", path.display()))
        })?;
        crate::limits::check_fps(fps, "the video's frame rate").map_err(|e| {
            SinkError::Config(format!("--output {}: {e}; set one with --input-rate", path.display()))
        })?;
        let out = PartialFile::create(path)
            .map_err(|e| SinkError::Write { path: path.to_path_buf(), reason: e.to_string() })?;
        let writer = match format {
            VideoFormat::Mjpeg => Writer::Mjpeg { out: Some(out), jpeg: Vec::new() },
            VideoFormat::Mp4 => Writer::Mp4 {
                out: Some(out),
                muxer: None,
                encoder: None,
                yuv: None,
                annex_b: Vec::new(),
                sample: Vec::new(),
            },
        };
        Ok(VideoSink {
            path: path.to_path_buf(),
            fps,
            size: None,
            frames: 0,
            writer,
            padded: Rgb8Image::default(),
        })
    }

    fn fail(&self, reason: impl std::fmt::Display) -> SinkError {
        SinkError::Write { path: self.path.clone(), reason: reason.to_string() }
    }
}

/// `image` padded to even width and height by repeating its last column / row.
fn pad_to_even<'a>(image: &'a Rgb8Image, padded: &'a mut Rgb8Image) -> &'a Rgb8Image {
    let (w, h) = (image.width, image.height);
    if w % 2 == 0 && h % 2 == 0 {
        return image;
    }
    let (pw, ph) = (w + w % 2, h + h % 2);
    padded.reset(pw, ph);
    for y in 0..ph {
        let src = &image.data[y.min(h - 1) * w * 3..(y.min(h - 1) + 1) * w * 3];
        let dst = &mut padded.data[y * pw * 3..(y + 1) * pw * 3];
        dst[..w * 3].copy_from_slice(src);
        if pw > w {
            dst[w * 3..].copy_from_slice(&src[(w - 1) * 3..]);
        }
    }
    padded
}

/// The NAL units of an Annex B stream, without their start codes.
fn nal_units(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i] == 0 && stream[i + 1] == 0 && stream[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| {
            // The next start code may be 4 bytes (00 00 00 01): drop its leading zero.
            let e = s - 3;
            if e > 0 && stream[e - 1] == 0 { e - 1 } else { e }
        })
        .chain(std::iter::once(stream.len()))
        .collect();
    starts.into_iter().zip(ends).map(move |(s, e)| &stream[s..e])
}

impl Sink for VideoSink {
    fn describe(&self) -> String {
        format!("overlay video -> {} ({:.2} fps)", self.path.display(), self.fps)
    }

    fn needs(&self) -> Needs {
        Needs { color: false, overlay: true }
    }

    fn write(&mut self, frame: &Frame) -> Result<(), SinkError> {
        let image = &frame.overlay;
        let size = (image.width, image.height);
        match self.size {
            None => {
                if matches!(self.writer, Writer::Mp4 { .. })
                    && (size.0 < MIN_H264_SIDE || size.1 < MIN_H264_SIDE)
                {
                    return Err(self.fail(format!(
                        "frame {} is {}x{}; H.264 needs frames of at least {MIN_H264_SIDE}x{MIN_H264_SIDE} \
                         pixels: write an MJPEG video (-o FILE.mjpeg) or PNGs (--overlay DIR) instead",
                        frame.name, size.0, size.1
                    )));
                }
                self.size = Some(size)
            }
            Some(first) if first != size => {
                return Err(self.fail(format!(
                    "frame {} is {}x{} but the video is {}x{}; a video needs one frame size",
                    frame.name, size.0, size.1, first.0, first.1
                )));
            }
            Some(_) => {}
        }
        let fps = self.fps;
        let index = self.frames;
        let padded = &mut self.padded;
        let result: Result<(), String> = match &mut self.writer {
            Writer::Mjpeg { out: None, .. } => Err(closed()),
            Writer::Mjpeg { out: Some(out), jpeg } => super::jpeg::encode(image, jpeg)
                .map_err(|e| e.to_string())
                .and_then(|_| out.write_all(jpeg).map_err(|e| e.to_string())),
            Writer::Mp4 { out, muxer, encoder, yuv, annex_b, sample } => {
                let image = pad_to_even(image, padded);
                let (w, h) = (image.width, image.height);
                if encoder.is_none() {
                    let bps = ((w * h) as f64 * fps * 0.12).clamp(200_000.0, 40_000_000.0) as u32;
                    // One video frame per frame: no frame skipping, so buffer-based rate control
                    // (quality follows the bitrate budget; the bitrate modes would need skipping).
                    let config = EncoderConfig::new()
                        .skip_frames(false)
                        .rate_control_mode(RateControlMode::Bufferbased)
                        .bitrate(BitRate::from_bps(bps))
                        .max_frame_rate(FrameRate::from_hz(fps as f32))
                        .intra_frame_period(IntraFramePeriod::from_num_frames(
                            (2.0 * fps).round().max(1.0) as u32
                        ));
                    match Encoder::with_api_config(openh264::OpenH264API::from_source(), config) {
                        Ok(e) => *encoder = Some(e),
                        Err(e) => {
                            return Err(SinkError::Write {
                                path: self.path.clone(),
                                reason: format!("cannot start the H.264 encoder: {e}"),
                            });
                        }
                    }
                    *yuv = Some(YUVBuffer::new(w, h));
                }
                let (encoder, yuv) = (encoder.as_mut().expect("set above"), yuv.as_mut().expect("set above"));
                yuv.read_rgb8(RgbSliceU8::new(&image.data, (w, h)));
                match encoder.encode(yuv) {
                    Err(e) => Err(format!("H.264 encoding failed: {e}")),
                    Ok(bitstream) => {
                        annex_b.clear();
                        bitstream.write_vec(annex_b);
                        let is_sync = matches!(bitstream.frame_type(), FrameType::IDR | FrameType::I);
                        let (mut sps, mut pps) = (None, None);
                        sample.clear();
                        for nal in nal_units(annex_b) {
                            match nal.first().map(|b| b & 0x1F) {
                                Some(7) => sps = Some(nal.to_vec()),
                                Some(8) => pps = Some(nal.to_vec()),
                                Some(_) => {
                                    sample.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                                    sample.extend_from_slice(nal);
                                }
                                None => {}
                            }
                        }
                        let mut result = if sample.is_empty() {
                            Err(format!("the encoder produced no picture for frame {}", frame.name))
                        } else {
                            Ok(())
                        };
                        if result.is_ok() && muxer.is_none() {
                            match (sps, pps, out.take()) {
                                (Some(sps), Some(pps), Some(out)) => {
                                    result = start_mp4(out, w, h, fps, sps, pps).map(|m| *muxer = Some(m));
                                }
                                _ => result = Err("the encoder's first frame carries no SPS/PPS".to_string()),
                            }
                        }
                        result.and_then(|_| {
                            let timescale_step = 1000u32;
                            let sample = mp4::Mp4Sample {
                                start_time: index * timescale_step as u64,
                                duration: timescale_step,
                                rendering_offset: 0,
                                is_sync,
                                bytes: bytes::Bytes::copy_from_slice(sample),
                            };
                            muxer
                                .as_mut()
                                .expect("started above")
                                .write_sample(1, &sample)
                                .map_err(|e| e.to_string())
                        })
                    }
                }
            }
        };
        result.map_err(|reason| self.fail(reason))?;
        self.frames += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        let out = match &mut self.writer {
            Writer::Mjpeg { out, .. } => out.take(),
            Writer::Mp4 { muxer, out, .. } => match muxer.take() {
                Some(mut muxer) => {
                    muxer.write_end().map_err(|e| self.fail(e))?;
                    Some(muxer.into_writer())
                }
                None => out.take(), // no frame: nothing to finalise
            },
        };
        let Some(out) = out else { return Ok(()) };
        if self.frames == 0 {
            drop(out); // removes the partial file
            log::info!("no frame was written: {} not created", self.path.display());
            return Ok(());
        }
        out.commit().map_err(|e| self.fail(e))?;
        log::info!("{}: {} frames", self.path.display(), self.frames);
        Ok(())
    }
}

/// The error of a write after [`Sink::finish`].
fn closed() -> String {
    "the video is already closed".into()
}

/// The MP4 muxer with one H.264 track; the timescale makes every frame last 1000 ticks.
fn start_mp4(
    out: PartialFile,
    width: usize,
    height: usize,
    fps: f64,
    sps: Vec<u8>,
    pps: Vec<u8>,
) -> Result<mp4::Mp4Writer<PartialFile>, String> {
    let config = mp4::Mp4Config {
        major_brand: "isom".parse().expect("valid fourcc"),
        minor_version: 512,
        compatible_brands: ["isom", "iso2", "avc1", "mp41"]
            .iter()
            .map(|b| b.parse().expect("valid fourcc"))
            .collect(),
        timescale: 1000,
    };
    let mut muxer = mp4::Mp4Writer::write_start(out, &config).map_err(|e| e.to_string())?;
    let track = mp4::TrackConfig {
        track_type: mp4::TrackType::Video,
        timescale: (fps * 1000.0).round().max(1.0) as u32,
        language: "und".into(),
        media_conf: mp4::MediaConfig::AvcConfig(mp4::AvcConfig {
            width: width as u16,
            height: height as u16,
            seq_param_set: sps,
            pic_param_set: pps,
        }),
    };
    muxer.add_track(&track).map_err(|e| e.to_string())?;
    Ok(muxer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nal_units_split_on_three_and_four_byte_start_codes() {
        let stream = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5];
        let units: Vec<&[u8]> = nal_units(&stream).collect();
        assert_eq!(units, vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5][..]]);
    }

    #[test]
    fn odd_frames_are_padded_by_repeating_the_edge() {
        let mut image = Rgb8Image::new(3, 1);
        image.data = vec![1, 1, 1, 2, 2, 2, 3, 3, 3];
        let mut padded = Rgb8Image::default();
        let p = pad_to_even(&image, &mut padded);
        assert_eq!((p.width, p.height), (4, 2));
        assert_eq!(&p.data[..12], &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3]);
        assert_eq!(&p.data[12..], &p.data[..12]);
    }
}
