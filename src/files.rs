//! The files a run reads and writes, and the three rules that keep them safe:
//!
//! 1. **Inputs are regular files, read with a bound.** [`open_input`] opens without blocking
//!    and refuses FIFOs, devices and sockets (a FIFO in an image folder would block forever, a
//!    link to `/dev/zero` would never end); [`read_input`] refuses a file above a size bound
//!    before reading it.
//! 2. **An output never replaces an input.** [`InputFiles`] remembers every file the run reads
//!    (model, class file, frames) by device and inode, so that links and different spellings
//!    of a path count; [`InputFiles::check_output`] and [`InputFiles::check_output_dir`] refuse
//!    outputs that would overwrite one, and [`check_distinct_outputs`] outputs that would
//!    overwrite each other.
//! 3. **A file with its final name is whole.** Every file output is written as
//!    `<name>.partial` and renamed when complete: [`PartialFile`] for files written over a run
//!    (videos, statistics), [`write_atomically`] for files written at once (PNGs, reports). A
//!    killed run leaves only `.partial` files; an uncommitted [`PartialFile`] removes its own.

use std::collections::HashMap;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Suffix of files being written.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// What kind of file system object `meta` describes, for messages.
pub fn file_kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        "regular file"
    } else if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

fn not_regular(meta: &Metadata) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("is a {}, not a regular file; only regular files are read", file_kind(meta)),
    )
}

/// Opens `path` for reading if it is a regular file (links followed). The open does not block
/// on a FIFO, and the type is checked on the opened file, so a file swapped after a directory
/// listing is caught too.
pub fn open_input(path: &Path) -> io::Result<(File, Metadata)> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    Ok((file, meta))
}

/// Reads the regular file `path` into `buf` (cleared first), refusing files over `max_bytes`.
pub fn read_input(path: &Path, max_bytes: u64, buf: &mut Vec<u8>) -> io::Result<()> {
    let (file, meta) = open_input(path)?;
    if meta.len() > max_bytes {
        return Err(too_large(meta.len(), max_bytes));
    }
    buf.clear();
    // The length may change under us: never read past the bound.
    file.take(max_bytes + 1).read_to_end(buf)?;
    if buf.len() as u64 > max_bytes {
        return Err(too_large(buf.len() as u64, max_bytes));
    }
    Ok(())
}

fn too_large(len: u64, max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the file is {len} bytes, above the {max}-byte limit for this kind of input"),
    )
}

/// Identity of a file: the same for every link and spelling of its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub(crate) fn of(meta: &Metadata) -> FileId {
        FileId { dev: meta.dev(), ino: meta.ino() }
    }
}

/// What an input file is for (frames are the only inputs a PNG directory can overwrite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputRole {
    /// The ONNX model (or its int8 artifact).
    Model,
    /// A `--classes` file.
    ClassFile,
    /// Frames: an image, a video, an MJPEG stream.
    Frames,
}

/// An output that would destroy data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    #[error(
        "{flag} {output} is the input {input}; writing it would destroy the input: choose another output path"
    )]
    IsInput { flag: String, output: PathBuf, input: PathBuf },
    #[error(
        "{flag} {dir} would overwrite the input image {input} with its result: write into another directory"
    )]
    OverwritesInput { flag: String, dir: PathBuf, input: PathBuf },
    #[error("{flag} {output} exists and is a {kind}, not a regular file: choose a file path")]
    NotAFile { flag: String, output: PathBuf, kind: &'static str },
    #[error("{first} and {second} both write {path}: give each output its own path")]
    Clash { first: String, second: String, path: PathBuf },
}

/// The files a run reads, by identity.
#[derive(Debug, Default, Clone)]
pub struct InputFiles {
    files: HashMap<FileId, (PathBuf, InputRole)>,
    /// Directories holding frame images that a PNG output directory would overwrite.
    png_dirs: HashMap<FileId, PathBuf>,
}

impl InputFiles {
    /// Records `path` as an input (nothing happens if it cannot be examined: then it cannot be
    /// overwritten by accident either, as it does not exist).
    pub fn add(&mut self, path: &Path, role: InputRole) {
        let Ok(meta) = std::fs::metadata(path) else { return };
        self.files.insert(FileId::of(&meta), (path.to_path_buf(), role));
        // A PNG directory writes `<dir>/<frame name>.png`, where an image's frame name is its
        // stem: it overwrites an input exactly when that input is a `.png` inside `<dir>`.
        if role == InputRole::Frames && path.extension().is_some_and(|e| e == "png") {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if let Ok(dir_meta) = std::fs::metadata(parent) {
                self.png_dirs.entry(FileId::of(&dir_meta)).or_insert_with(|| path.to_path_buf());
            }
        }
    }

    /// Records every path of `paths` with one role.
    pub fn add_all<'a>(&mut self, paths: impl IntoIterator<Item = &'a Path>, role: InputRole) {
        for path in paths {
            self.add(path, role);
        }
    }

    /// Refuses the output file `output` (named by `flag` in the error) if it exists and is an
    /// input, or is not a regular file (renaming over a device or a directory must not happen).
    pub fn check_output(&self, output: &Path, flag: &str) -> Result<(), OutputError> {
        let Ok(meta) = std::fs::metadata(output).or_else(|_| std::fs::metadata(resolved(output))) else {
            return Ok(());
        };
        if let Some((input, _)) = self.files.get(&FileId::of(&meta)) {
            return Err(OutputError::IsInput {
                flag: flag.into(),
                output: output.to_path_buf(),
                input: input.clone(),
            });
        }
        if !meta.is_file() {
            return Err(OutputError::NotAFile {
                flag: flag.into(),
                output: output.to_path_buf(),
                kind: file_kind(&meta),
            });
        }
        Ok(())
    }

    /// Refuses the PNG output directory `dir` if a frame image of the input lies in it (its
    /// result would be written over it).
    pub fn check_output_dir(&self, dir: &Path, flag: &str) -> Result<(), OutputError> {
        let Ok(meta) = std::fs::metadata(dir).or_else(|_| std::fs::metadata(resolved(dir))) else {
            return Ok(());
        };
        match self.png_dirs.get(&FileId::of(&meta)) {
            Some(input) => Err(OutputError::OverwritesInput {
                flag: flag.into(),
                dir: dir.to_path_buf(),
                input: input.clone(),
            }),
            None => Ok(()),
        }
    }
}

impl InputFiles {
    /// Checks every output of a run at once: `files` (flag and path of each file output) and
    /// `dirs` (flag and directory of each PNG output) must not overwrite an input, nor each
    /// other.
    pub fn check_outputs(&self, files: &[(&str, &Path)], dirs: &[(&str, &Path)]) -> Result<(), OutputError> {
        for (flag, path) in files {
            self.check_output(path, flag)?;
        }
        for (flag, dir) in dirs {
            self.check_output_dir(dir, flag)?;
        }
        let all: Vec<(&str, &Path)> = files.iter().chain(dirs).copied().collect();
        check_distinct_outputs(&all)
    }
}

/// `path` made absolute, with `.` and `..` folded as written (what `create_dir_all` and
/// `rename` will do with components that do not exist yet).
fn lexically_absolute(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `path` resolved as far as it exists (links included), the rest as written: how to compare
/// outputs that do not exist yet.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let mut existing = lexically_absolute(path);
    let mut tail = Vec::new();
    loop {
        if let Ok(p) = std::fs::canonicalize(&existing) {
            return tail.iter().rev().fold(p, |acc: PathBuf, part: &std::ffi::OsString| acc.join(part));
        }
        match existing.file_name() {
            Some(name) => tail.push(name.to_owned()),
            None => return lexically_absolute(path),
        }
        existing.pop();
    }
}

/// Refuses two outputs that name the same file or directory. `outputs` pairs a flag with the
/// path it writes.
pub fn check_distinct_outputs(outputs: &[(&str, &Path)]) -> Result<(), OutputError> {
    let resolved: Vec<PathBuf> = outputs.iter().map(|(_, p)| resolved(p)).collect();
    for (i, a) in resolved.iter().enumerate() {
        if let Some(j) = resolved[..i].iter().position(|b| b == a) {
            return Err(OutputError::Clash {
                first: outputs[j].0.to_string(),
                second: outputs[i].0.to_string(),
                path: outputs[i].1.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// `<path>.partial`.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut partial = path.as_os_str().to_owned();
    partial.push(PARTIAL_SUFFIX);
    PathBuf::from(partial)
}

/// A file written over a run: the bytes go to `<path>.partial`; [`PartialFile::commit`]
/// flushes, syncs and renames it to `path`. Dropped without a commit (an error, a panic), it
/// removes the partial file.
#[derive(Debug)]
pub struct PartialFile {
    path: PathBuf,
    partial: PathBuf,
    out: Option<BufWriter<File>>,
}

impl PartialFile {
    /// Creates `<path>.partial` (creating missing parent directories).
    pub fn create(path: &Path) -> io::Result<PartialFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let partial = partial_path(path);
        let file = File::create(&partial)?;
        Ok(PartialFile {
            path: path.to_path_buf(),
            partial,
            out: Some(BufWriter::with_capacity(1 << 16, file)),
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path written until the commit.
    pub fn partial(&self) -> &Path {
        &self.partial
    }

    fn out(&mut self) -> &mut BufWriter<File> {
        self.out.as_mut().expect("present until commit or drop")
    }

    /// Makes the file whole under its final name.
    pub fn commit(mut self) -> io::Result<()> {
        let out = self.out.take().expect("present until commit or drop");
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        drop(file);
        std::fs::rename(&self.partial, &self.path)
    }
}

impl Write for PartialFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out().flush()
    }
}

impl Seek for PartialFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.out().seek(pos)
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// Writes `bytes` to `<path>.partial`, then renames it to `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let partial = partial_path(path);
    let result = (|| {
        let mut file = BufWriter::new(File::create(&partial)?);
        file.write_all(bytes)?;
        file.into_inner().map_err(|e| e.into_error())?.sync_data()?;
        std::fs::rename(&partial, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_and_devices_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("frame.png");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let err = open_input(&fifo).unwrap_err().to_string();
        assert!(err.contains("FIFO"), "{err}");
        let err = read_input(Path::new("/dev/zero"), 100, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("character device"), "{err}");
    }

    #[test]
    fn reads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, [7u8; 100]).unwrap();
        let mut buf = Vec::new();
        read_input(&file, 100, &mut buf).unwrap();
        assert_eq!(buf.len(), 100);
        assert!(read_input(&file, 99, &mut buf).unwrap_err().to_string().contains("limit"));
    }

    #[test]
    fn outputs_that_are_inputs_are_refused_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("a.mp4");
        std::fs::write(&input, b"x").unwrap();
        let hard = dir.path().join("hard.mp4");
        std::fs::hard_link(&input, &hard).unwrap();
        let soft = dir.path().join("soft.mp4");
        std::os::unix::fs::symlink(&input, &soft).unwrap();
        let mut inputs = InputFiles::default();
        inputs.add(&input, InputRole::Frames);
        for output in [&input, &hard, &soft, &dir.path().join("sub/../a.mp4")] {
            let e = inputs.check_output(output, "-o").unwrap_err();
            assert!(matches!(e, OutputError::IsInput { .. }), "{output:?}: {e}");
        }
        assert!(inputs.check_output(&dir.path().join("new.mp4"), "-o").is_ok());
        let e = inputs.check_output(dir.path(), "--stats").unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
    }

    #[test]
    fn png_directories_holding_input_pngs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("f1.png");
        std::fs::write(&png, b"x").unwrap();
        let mut inputs = InputFiles::default();
        inputs.add(&png, InputRole::Frames);
        assert!(inputs.check_output_dir(dir.path(), "--labels").is_err());
        assert!(inputs.check_output_dir(&dir.path().join("labels"), "--labels").is_ok());
        // A JPEG input's result is a .png: no clash with the input itself.
        let mut jpeg_only = InputFiles::default();
        jpeg_only.add(&dir.path().join("f1.png").with_extension("jpg"), InputRole::Frames);
        assert!(jpeg_only.check_output_dir(dir.path(), "--labels").is_ok());
    }

    #[test]
    fn outputs_must_differ() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("x.jsonl");
        let same = dir.path().join("sub/../x.jsonl");
        assert!(check_distinct_outputs(&[("-o", &a), ("--stats", &same)]).is_err());
        assert!(check_distinct_outputs(&[("-o", &a), ("--stats", &dir.path().join("y"))]).is_ok());
    }

    #[test]
    fn partial_files_are_renamed_on_commit_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/v.mjpeg");
        let mut f = PartialFile::create(&path).unwrap();
        f.write_all(b"abc").unwrap();
        f.flush().unwrap();
        assert!(dir.path().join("out/v.mjpeg.partial").exists() && !path.exists());
        f.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        let dropped = PartialFile::create(&dir.path().join("w.mjpeg")).unwrap();
        drop(dropped);
        assert!(!dir.path().join("w.mjpeg.partial").exists());
    }
}
