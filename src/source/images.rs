//! Still images as a source: one file, a directory tree of PNG/JPEG files replayed in natural
//! order, or the built-in sample image.

use std::cmp::Ordering;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{Captured, Source, SourceError, SourceInfo};
use crate::files::{FileId, file_kind, read_input};
use crate::frame::{Frame, Rgb8Image};
use crate::limits::Limits;
use crate::timing::Stage;

/// Image file formats this source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Jpeg,
}

impl ImageFormat {
    /// The format a file name's extension says (case-insensitive), if one we read.
    pub fn from_path(path: &Path) -> Option<ImageFormat> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "png" => Some(ImageFormat::Png),
            "jpg" | "jpeg" => Some(ImageFormat::Jpeg),
            _ => None,
        }
    }
}

/// Frames read from image files (or embedded bytes), in a fixed order.
#[derive(Debug)]
pub struct ImageSource {
    info: SourceInfo,
    /// Output name and file of each frame.
    entries: Vec<(String, PathBuf)>,
    next: usize,
    /// File bytes, reused from frame to frame.
    bytes: Vec<u8>,
    limits: Limits,
}

impl ImageSource {
    pub fn single(path: &Path, limits: Limits) -> ImageSource {
        ImageSource::new(path.display().to_string(), "image", vec![(stem(path), path.to_path_buf())], limits)
    }

    /// The PNG/JPEG files matching a glob pattern (`frames/*.png`, `leftImg8bit/val/*/*.png`),
    /// in natural order.
    pub fn glob(pattern: &str, limits: Limits) -> Result<ImageSource, SourceError> {
        let bad = |reason: String| SourceError::Unsupported { input: pattern.to_string(), reason };
        let mut files: Vec<PathBuf> = glob::glob(pattern)
            .map_err(|e| bad(format!("not a valid glob pattern: {e}")))?
            .filter_map(|entry| entry.ok())
            .filter(|p| p.is_file() && ImageFormat::from_path(p).is_some())
            .collect();
        if files.is_empty() {
            return Err(bad("no PNG or JPEG file matches this pattern".into()));
        }
        files.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
        ImageSource::from_files(pattern.to_string(), files, limits)
    }

    /// Every PNG/JPEG below `dir` (subdirectories included, hidden entries skipped), in natural
    /// order of their paths relative to `dir`: `frame2.png` before `frame10.png`, and
    /// Cityscapes' `leftImg8bit/val/<city>/…` city by city.
    ///
    /// Only regular files are read (links followed): FIFOs, devices and sockets are skipped and
    /// reported, as are links that lead back into a directory already walked.
    pub fn directory(dir: &Path, limits: Limits) -> Result<ImageSource, SourceError> {
        let mut walk = Walk::default();
        walk.directory(dir)?;
        if !walk.skipped.is_empty() {
            let shown: Vec<&str> = walk.skipped.iter().take(3).map(String::as_str).collect();
            log::warn!(
                "{}: skipped {} entries that are not regular files or directories: {}{}",
                dir.display(),
                walk.skipped.len(),
                shown.join(", "),
                if walk.skipped.len() > 3 { ", ..." } else { "" }
            );
        }
        let mut files = walk.files;
        if files.is_empty() {
            return Err(SourceError::EmptyDirectory { path: dir.to_path_buf() });
        }
        files.sort_by(|a, b| {
            let (a, b) = (a.strip_prefix(dir).unwrap_or(a), b.strip_prefix(dir).unwrap_or(b));
            natural_cmp(&a.to_string_lossy(), &b.to_string_lossy())
        });
        ImageSource::from_files(dir.display().to_string(), files, limits)
    }

    /// A source over `files` (already in order), refusing two files with the same output name.
    fn from_files(uri: String, files: Vec<PathBuf>, limits: Limits) -> Result<ImageSource, SourceError> {
        let mut seen = std::collections::HashMap::new();
        let mut entries = Vec::with_capacity(files.len());
        for path in files {
            let name = stem(&path);
            if let Some(first) = seen.insert(name.clone(), path.clone()) {
                return Err(SourceError::NameClash {
                    input: uri.clone(),
                    first: first.display().to_string(),
                    second: path.display().to_string(),
                    name,
                });
            }
            entries.push((name, path));
        }
        Ok(ImageSource::new(uri, "images", entries, limits))
    }

    fn new(uri: String, kind: &'static str, entries: Vec<(String, PathBuf)>, limits: Limits) -> ImageSource {
        let info =
            SourceInfo { uri, kind, frame_count: Some(entries.len() as u64), nominal_fps: None, live: false };
        ImageSource { info, entries, next: 0, bytes: Vec::new(), limits }
    }
}

impl Source for ImageSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next(&mut self, frame: &mut Frame) -> Result<Captured, SourceError> {
        let Some((name, path)) = self.entries.get(self.next) else {
            return Ok(Captured::EndOfStream);
        };
        let index = self.next as u64;
        self.next += 1;
        frame.begin(index, name);
        let start = Instant::now();
        let bad = |reason: String| SourceError::BadFrame { index, name: path.display().to_string(), reason };
        read_input(path, self.limits.max_encoded_bytes(), &mut self.bytes)
            .map_err(|e| bad(format!("cannot read: {e}")))?;
        decode_into(&self.bytes, &mut frame.image, &self.limits).map_err(|e| bad(e.to_string()))?;
        frame.timings.add(Stage::Decode, start.elapsed());
        Ok(Captured::Frame)
    }

    fn rewind(&mut self) -> Result<bool, SourceError> {
        self.next = 0;
        Ok(true)
    }

    fn input_files(&self) -> Vec<&Path> {
        self.entries.iter().map(|(_, path)| path.as_path()).collect()
    }
}

/// Why an encoded image was not decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a PNG or JPEG image (unrecognised content)")]
    Unrecognised,
    #[error("{0} images are not supported; convert to PNG or JPEG")]
    Unsupported(String),
    #[error("truncated JPEG (no end-of-image marker after the last scan)")]
    TruncatedJpeg,
    /// The declared size is over the pixel or side limits.
    #[error(transparent)]
    OverLimits(#[from] crate::limits::LimitError),
    #[error("the image needs more memory than --max-pixels {max_pixels} allows ({reason})")]
    OverMemory { max_pixels: u64, reason: String },
    #[error("cannot decode: {0}")]
    Corrupt(String),
    #[error("the image decoder failed on this file ({0})")]
    DecoderPanicked(String),
}

/// Decodes a PNG or JPEG (recognised by content, not name) into `out` as RGB8, reusing its
/// allocation. Grey, alpha and 16-bit images are converted (alpha dropped). The size the header
/// declares is checked against `limits` before anything is allocated, and a panic inside the
/// decoders is an error for this image.
pub fn decode_into(bytes: &[u8], out: &mut Rgb8Image, limits: &Limits) -> Result<(), DecodeError> {
    crate::guard::catch_panic(|| decode_checked(bytes, out, limits))
        .unwrap_or_else(|panic| Err(DecodeError::DecoderPanicked(panic.to_string())))
}

fn decode_checked(bytes: &[u8], out: &mut Rgb8Image, limits: &Limits) -> Result<(), DecodeError> {
    use image::ImageDecoder;
    let corrupt = |e: image::ImageError| DecodeError::Corrupt(e.to_string());
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    reader.limits(limits.image_limits());
    match reader.format() {
        Some(image::ImageFormat::Png) => {}
        // The JPEG decoder fills a truncated scan with grey instead of failing: catch it here.
        Some(image::ImageFormat::Jpeg) => check_jpeg_is_complete(bytes)?,
        Some(other) => return Err(DecodeError::Unsupported(format!("{other:?}"))),
        None => return Err(DecodeError::Unrecognised),
    }
    let decoder = reader.into_decoder().map_err(|e| match e {
        image::ImageError::Limits(_) => {
            DecodeError::OverMemory { max_pixels: limits.max_pixels, reason: e.to_string() }
        }
        e => corrupt(e),
    })?;
    let (width, height) = decoder.dimensions();
    limits.check_frame(width as u64, height as u64)?;
    let (width, height) = (width as usize, height as usize);
    if decoder.color_type() == image::ColorType::Rgb8 {
        out.reset(width, height);
        decoder.read_image(&mut out.data).map_err(corrupt)?;
    } else {
        let rgb = image::DynamicImage::from_decoder(decoder).map_err(corrupt)?.into_rgb8();
        out.reset(width, height);
        out.data.copy_from_slice(rgb.as_raw());
    }
    Ok(())
}

/// Refuses a JPEG whose last scan has no end-of-image marker (a truncated file or stream).
///
/// Inside entropy-coded data every 0xFF byte is followed by 0x00 or a restart marker, so the
/// first `FF D9` after the last start-of-scan (`FF DA`) is the real end of image.
pub fn check_jpeg_is_complete(bytes: &[u8]) -> Result<(), DecodeError> {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let complete = match last_scan {
        Some(at) => bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    };
    if complete { Ok(()) } else { Err(DecodeError::TruncatedJpeg) }
}

fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "frame".into())
}

/// A recursive directory walk that keeps PNG/JPEG regular files.
#[derive(Default)]
struct Walk {
    files: Vec<PathBuf>,
    /// Entries that are neither regular files nor directories, as `path (kind)`.
    skipped: Vec<String>,
    /// Directories entered, by identity: a link back to one of them is a loop.
    visited: std::collections::HashSet<FileId>,
}

impl Walk {
    fn directory(&mut self, dir: &Path) -> Result<(), SourceError> {
        let unreadable =
            |e: std::io::Error| SourceError::Unreadable { path: dir.to_path_buf(), reason: e.to_string() };
        let meta = std::fs::metadata(dir).map_err(unreadable)?;
        if !self.visited.insert(FileId::of(&meta)) {
            log::warn!("{}: skipped, a link to a directory already read (a loop)", dir.display());
            return Ok(());
        }
        for entry in std::fs::read_dir(dir).map_err(unreadable)? {
            let entry = entry.map_err(unreadable)?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            // Links are followed, to files and directories alike; a dangling link is skipped.
            let Ok(meta) = std::fs::metadata(&path) else {
                self.skipped.push(format!("{} (dangling link)", path.display()));
                continue;
            };
            if meta.is_dir() {
                self.directory(&path)?;
            } else if !meta.is_file() {
                self.skipped.push(format!("{} ({})", path.display(), file_kind(&meta)));
            } else if ImageFormat::from_path(&path).is_some() {
                self.files.push(path);
            } else {
                log::debug!("skipping {} (not .png/.jpg/.jpeg)", path.display());
            }
        }
        Ok(())
    }
}

/// Natural ordering: runs of digits compare as numbers (`img2` < `img10`), everything else
/// character by character; equal numbers with different zero padding fall back to plain order.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a_rest, mut b_rest) = (a, b);
    loop {
        match (a_rest.chars().next(), b_rest.chars().next()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(ca), Some(cb)) if ca.is_ascii_digit() && cb.is_ascii_digit() => {
                let a_len = a_rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(a_rest.len());
                let b_len = b_rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(b_rest.len());
                let (a_num, b_num) =
                    (a_rest[..a_len].trim_start_matches('0'), b_rest[..b_len].trim_start_matches('0'));
                let by_value = a_num.len().cmp(&b_num.len()).then_with(|| a_num.cmp(b_num));
                if by_value != Ordering::Equal {
                    return by_value;
                }
                a_rest = &a_rest[a_len..];
                b_rest = &b_rest[b_len..];
            }
            (Some(ca), Some(cb)) => {
                if ca != cb {
                    return ca.cmp(&cb);
                }
                a_rest = &a_rest[ca.len_utf8()..];
                b_rest = &b_rest[cb.len_utf8()..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_compares_numbers_by_value() {
        let mut names = vec!["f10.png", "f2.png", "f1.png", "f02.png", "g.png", "f.png"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names, vec!["f.png", "f1.png", "f02.png", "f2.png", "f10.png", "g.png"]);
        assert_eq!(natural_cmp("a/b2/x", "a/b10/x"), Ordering::Less);
        assert_eq!(natural_cmp("same", "same"), Ordering::Equal);
    }

    fn write_png(path: &Path, w: u32, h: u32) {
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7])).save(path).unwrap();
    }

    #[test]
    fn directory_is_walked_in_natural_order_with_subdirectories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        write_png(&dir.path().join("b/x10.png"), 2, 2);
        write_png(&dir.path().join("b/x9.png"), 2, 2);
        write_png(&dir.path().join("a1.png"), 3, 1);
        std::fs::write(dir.path().join("README.txt"), "not an image").unwrap();
        std::fs::write(dir.path().join(".hidden.png"), "skipped").unwrap();
        let mut src = ImageSource::directory(dir.path(), Limits::default()).unwrap();
        assert_eq!(src.info().frame_count, Some(3));
        let mut frame = Frame::default();
        let mut names = vec![];
        while src.next(&mut frame).unwrap() == Captured::Frame {
            names.push((frame.index, frame.name.clone(), frame.image.width));
        }
        assert_eq!(names, vec![(0, "a1".into(), 3), (1, "x9".into(), 2), (2, "x10".into(), 2)]);
    }

    #[test]
    fn glob_patterns_select_and_order_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a10.png", "a9.png", "b1.png", "a2.jpg"] {
            write_png(&dir.path().join(name), 2, 2);
        }
        let pattern = format!("{}/a*.png", dir.path().display());
        let mut src = ImageSource::glob(&pattern, Limits::default()).unwrap();
        let mut frame = Frame::default();
        let mut names = vec![];
        while src.next(&mut frame).unwrap() == Captured::Frame {
            names.push(frame.name.clone());
        }
        assert_eq!(names, vec!["a9", "a10"]);
        assert!(ImageSource::glob(&format!("{}/z*.png", dir.path().display()), Limits::default()).is_err());
    }

    #[test]
    fn clashing_output_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_png(&dir.path().join("a.png"), 1, 1);
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        write_png(&dir.path().join("sub/a.png"), 1, 1);
        assert!(matches!(
            ImageSource::directory(dir.path(), Limits::default()),
            Err(SourceError::NameClash { .. })
        ));
    }

    #[test]
    fn empty_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            ImageSource::directory(dir.path(), Limits::default()),
            Err(SourceError::EmptyDirectory { .. })
        ));
    }

    #[test]
    fn a_broken_file_is_a_bad_frame_and_the_next_one_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1.png"), b"\x89PNG\r\n\x1a\n garbage").unwrap();
        write_png(&dir.path().join("2.png"), 4, 3);
        let mut src = ImageSource::directory(dir.path(), Limits::default()).unwrap();
        let mut frame = Frame::default();
        let err = src.next(&mut frame).unwrap_err();
        assert!(err.is_bad_frame(), "{err}");
        assert!(err.to_string().contains("1.png"), "{err}");
        assert_eq!(src.next(&mut frame).unwrap(), Captured::Frame);
        assert_eq!((frame.index, frame.image.width, frame.image.height), (1, 4, 3));
        assert_eq!(frame.image.pixel(3, 2), [3, 2, 7]);
        assert_eq!(src.next(&mut frame).unwrap(), Captured::EndOfStream);
    }

    #[test]
    fn truncated_jpeg_is_refused() {
        let mut jpeg = Vec::new();
        image::RgbImage::from_fn(32, 16, |x, y| image::Rgb([x as u8 * 8, y as u8 * 16, 0]))
            .write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        let mut out = Rgb8Image::default();
        decode_into(&jpeg, &mut out, &Limits::default()).unwrap();
        let err = decode_into(&jpeg[..jpeg.len() - 40], &mut out, &Limits::default()).unwrap_err();
        assert_eq!(err, DecodeError::TruncatedJpeg);
    }

    #[test]
    fn grey_and_alpha_images_become_rgb() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.png");
        image::GrayImage::from_fn(2, 1, |x, _| image::Luma([x as u8 * 100])).save(&p).unwrap();
        let mut out = Rgb8Image::default();
        decode_into(&std::fs::read(&p).unwrap(), &mut out, &Limits::default()).unwrap();
        assert_eq!(out.data, vec![0, 0, 0, 100, 100, 100]);
        let p = dir.path().join("a.png");
        image::RgbaImage::from_fn(1, 1, |_, _| image::Rgba([1, 2, 3, 4])).save(&p).unwrap();
        decode_into(&std::fs::read(&p).unwrap(), &mut out, &Limits::default()).unwrap();
        assert_eq!(out.data, vec![1, 2, 3]);
    }
}
