//! Hostile input, class by class (issue 13): whatever the file, flag or URI, the runtime answers
//! with a clear error or a counted bad frame, never a panic, an abort, a hang, a destroyed
//! input, a torn output, or a silently wrong result.
//!
//! 1. panics and aborts: sizes from files are bounded before allocating; third-party panics
//!    are caught.
//! 2. hangs: every numeric flag has a range, only regular files are read, waits see Ctrl-C.
//! 3. lost data: no output may be (or overwrite) an input, nor another output.
//! 4. outputs that are not whole: `.partial` until complete; SIGTERM finishes like Ctrl-C.
//! 5. silent wrong results: palettes, rates, int8 artifacts of other models, 0-class models.
//! 6. misleading errors: one line, the file, the value, the fix.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use tract_onnx::pb;
use util::onnx::{dim, identity_model, int64_tensor, model, node, set_props};
use util::{assert_one_line_error, files_in, fixture, run_cli, s, stderr, stdout, workspace_root};

// ---------------------------------------------------------------------------------------------
// Helpers: crafted files, runs with a deadline.

/// Runs the binary, failing the test if it has not ended within `secs` (a hang).
fn run_within(args: &[&str], secs: u64) -> Output {
    let mut child = util::semask_edge()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start semask-edge");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(secs) {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("{args:?} still running after {secs} s (a hang); stderr: {}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// No run may leave a panic message or a `.partial` file behind in `dir` (recursively).
fn assert_clean(out: &Output, dir: &Path) {
    assert!(!stderr(out).contains("panicked"), "panic: {}", stderr(out));
    for entry in walk(dir) {
        assert!(!entry.to_string_lossy().ends_with(".partial"), "left behind: {}", entry.display());
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            all.extend(walk(&path));
        }
        all.push(path);
    }
    all
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(&body);
    chunk.extend_from_slice(&crc32(&body).to_be_bytes());
    chunk
}

/// A valid-looking PNG (correct CRCs) whose header claims `w`x`h` RGB pixels, with a few bytes
/// of image data: tiny on disk, gigantic once decoded.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let idat = [0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]; // zlib of one zero byte
    [
        b"\x89PNG\r\n\x1a\n".to_vec(),
        png_chunk(b"IHDR", &ihdr),
        png_chunk(b"IDAT", &idat),
        png_chunk(b"IEND", &[]),
    ]
    .concat()
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 90]))
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg)
        .unwrap();
    out
}

/// A JPEG whose frame header (SOF0) claims `w`x`h`.
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let mut bytes = jpeg(16, 16);
    let sof = bytes.windows(2).position(|p| p == [0xFF, 0xC0]).expect("baseline JPEG");
    bytes[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    bytes
}

fn street_png(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(fixture("images/street_224x448.png"), &path).unwrap();
    path
}

/// A small H.264 MP4 written by the runtime itself (4 frames of 64x32 at 30 fps).
fn small_mp4(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = run_cli(&["run", "-i", "synth://?frames=4&size=64x32", "-o", s(&path), "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    path
}

/// Offset of the payload of the first box of type `kind` (just after its 8-byte header)
/// inside the `moov` box (brands in `ftyp` spell `avc1` too).
fn box_payload(bytes: &[u8], kind: &[u8; 4]) -> usize {
    let moov = bytes.windows(4).position(|w| w == b"moov").expect("no moov box");
    moov + bytes[moov..].windows(4).position(|w| w == kind).unwrap_or_else(|| panic!("no {kind:?} box")) + 4
}

fn patched(path: &Path, name: &str, patch: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(path).unwrap();
    patch(&mut bytes);
    let out = path.with_file_name(name);
    std::fs::write(&out, bytes).unwrap();
    out
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

/// Every line of `path` is a whole JSON object.
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "torn last line in {}", path.display());
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

fn wait_for_lines(path: &Path, n: usize) {
    let start = Instant::now();
    while std::fs::read_to_string(path).map_or(0, |t| t.lines().count()) < n {
        assert!(start.elapsed().as_secs() < 60, "fewer than {n} lines in {} after 60 s", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill").args([name, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

// ---------------------------------------------------------------------------------------------
// 1. Panics and aborts: declared sizes are bounded before anything is allocated.

#[test]
fn images_claiming_gigantic_sizes_are_bad_frames_not_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    street_png(&frames, "a1.png");
    std::fs::write(frames.join("a2.png"), png_claiming(65535, 65535)).unwrap(); // 12.8 GB of RGB
    std::fs::write(frames.join("a3.png"), png_claiming(30000, 30000)).unwrap(); // under 65535 a side
    std::fs::write(frames.join("a4.png"), png_claiming(1_000_000, 1)).unwrap(); // a side too long
    std::fs::write(frames.join("a5.jpg"), jpeg_claiming(65500, 65500)).unwrap();
    std::fs::write(frames.join("a6.jpg"), jpeg_claiming(9000, 9000)).unwrap();
    let (labels, overlay) = (dir.path().join("labels"), dir.path().join("overlay"));
    let out = run_within(
        &["run", "-i", s(&frames), "--labels", s(&labels), "--overlay", s(&overlay), "--mixed-sizes", "-q"],
        120,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).contains("6 frames in, 1 written, 5 failed"), "{}", stdout(&out));
    let err = stderr(&out);
    for name in ["a2.png", "a3.png", "a4.png", "a5.jpg", "a6.jpg"] {
        let line =
            err.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("{name} not reported: {err}"));
        assert!(line.contains("--max-pixels") || line.contains("65535"), "{line}");
    }
    assert_eq!(files_in(&labels), ["a1.png"]);
    assert_clean(&out, dir.path());
}

#[test]
fn the_pixel_limit_is_overridable_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("street.png");
    std::fs::copy(fixture("images/street_1024x512.png"), &image).unwrap(); // 524288 pixels
    let labels = dir.path().join("labels");
    let out = run_cli(&["--max-pixels", "500000", "run", "-i", s(&image), "--labels", s(&labels), "-q"]);
    assert_one_line_error(&out, 1, &["street.png", "--max-pixels 524288"]);
    let out = run_cli(&["run", "--max-pixels", "524288", "-i", s(&image), "--labels", s(&labels), "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The network input counts too (the built-in model takes 512x256 = 131072 pixels).
    let out = run_cli(&["run", "--max-pixels", "131071", "-i", "synth://?size=256x128", "-q"]);
    assert_one_line_error(&out, 2, &["512x256", "--max-pixels"]);
    // A synthetic size above the limit is refused before rendering.
    let out = run_cli(&["run", "-i", "synth://?size=8192x8192", "-q"]);
    assert_one_line_error(&out, 2, &["synth://", "--max-pixels"]);
    for bad in ["0", "-5", "x", "99999999999999"] {
        let out = run_cli(&["run", "--max-pixels", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(stderr(&out).starts_with("error: invalid value"), "{bad}: {}", stderr(&out));
    }
}

#[test]
fn mjpeg_frames_claiming_gigantic_sizes_cost_only_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("drive.mjpeg");
    let frames =
        [jpeg(64, 32), jpeg_claiming(65000, 65000), jpeg(64, 32), jpeg_claiming(20000, 20000), jpeg(64, 32)];
    std::fs::write(&stream, frames.concat()).unwrap();
    let labels = dir.path().join("labels");
    let out = run_within(&["run", "-i", s(&stream), "--labels", s(&labels), "-q"], 120);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).contains("5 frames in, 3 written, 2 failed"), "{}", stdout(&out));
    assert_eq!(files_in(&labels), ["000000.png", "000002.png", "000004.png"]);
    assert_clean(&out, dir.path());
}

#[test]
fn mp4_headers_with_zero_or_absurd_values_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let clip = small_mp4(dir.path(), "clip.mp4");
    let mdhd_timescale = |bytes: &mut Vec<u8>, value: u32| {
        let at = box_payload(bytes, b"mdhd");
        let skip = if bytes[at] == 1 { 4 + 16 } else { 4 + 8 }; // version 1: 64-bit times
        bytes[at + skip..at + skip + 4].copy_from_slice(&value.to_be_bytes());
    };
    let cases: Vec<(PathBuf, Option<&str>)> = vec![
        // The mp4 crate divides by the media timescale: 0 made it panic.
        (patched(&clip, "timescale0.mp4", |b| mdhd_timescale(b, 0)), None),
        // A timescale giving a frame every ten hours: the rate is ignored, not trusted.
        (patched(&clip, "slow.mp4", |b| mdhd_timescale(b, 1)), None),
        // A track claiming 65535x65535.
        (
            patched(&clip, "huge.mp4", |b| {
                let at = box_payload(b, b"avc1") + 24;
                b[at..at + 4].copy_from_slice(&[0xFF; 4]);
            }),
            Some("--max-pixels"),
        ),
        // A sample table claiming 4 billion samples of constant size.
        (
            patched(&clip, "count.mp4", |b| {
                let at = box_payload(b, b"stsz") + 4;
                b[at..at + 8].copy_from_slice(&[0, 0, 0x10, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
            }),
            Some("stsz"),
        ),
        // A box claiming to be far larger than its parent (counts inside it would follow).
        (
            patched(&clip, "box.mp4", |b| {
                let at = box_payload(b, b"stco") - 8;
                b[at..at + 4].copy_from_slice(&0x7FFF_FFF0u32.to_be_bytes());
            }),
            Some("claims"),
        ),
    ];
    for (video, needle) in cases {
        let labels = dir.path().join(format!("labels-{}", video.file_stem().unwrap().to_string_lossy()));
        let out = run_within(&["run", "-i", s(&video), "--labels", s(&labels), "-q"], 60);
        match needle {
            None => {
                assert!(out.status.success(), "{}: {}", video.display(), stderr(&out));
                assert_eq!(files_in(&labels).len(), 4, "{}", video.display());
            }
            Some(needle) => assert_one_line_error(&out, 2, &[s(&video), needle]),
        }
        assert_clean(&out, dir.path());
    }
}

#[test]
fn models_with_enormous_tensors_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    for (name, dims, needle) in [
        ("wide.onnx", [1, 3, 100_000, 100_000], "--max-pixels"),
        ("big.onnx", [1, 3, 7000, 7000], "--max-pixels"),
        ("side.onnx", [1, 3, 1, 70_000], "--max-pixels"),
    ] {
        let path = dir.path().join(name);
        identity_model(&path, dims.iter().map(|&d| dim(d)).collect());
        for command in ["run", "info"] {
            let out = run_within(&[command, "-m", s(&path)], 60);
            assert_one_line_error(&out, 2, &[name, needle]);
        }
    }
    // A graph that expands a small input into a 7.7 TB tensor.
    let expand = model(
        vec![node("Expand", &["input", "shape"], "logits")],
        vec![dim(1), dim(3), dim(8), dim(8)],
        vec![int64_tensor("shape", &[100_000, 100_000, 1, 3, 8, 8])],
    );
    let path = dir.path().join("expand.onnx");
    std::fs::write(&path, expand.encode_to_vec()).unwrap();
    let out = run_within(&["run", "-m", s(&path), "-q"], 60);
    assert_one_line_error(&out, 2, &["expand.onnx", "limit per tensor"]);
}

#[test]
fn numeric_flags_that_would_overflow_are_refused() {
    for args in [
        vec!["bench", "--frames", "18446744073709551615"],
        vec!["bench", "--warmup", "99999999999"],
        vec!["bench", "--threads", "1,100000"],
        vec!["run", "--frames", "0"],
        vec!["run", "--input-width", "0"],
        vec!["run", "--input-height", "4294967295"],
        vec!["run", "--input-size", "100000x100000"],
        vec!["record", "-o", "x.mjpeg", "--frames", "0"],
    ] {
        let out = run_within(&args, 30);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).starts_with("error: invalid value"), "{args:?}: {}", stderr(&out));
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Hangs.

#[test]
fn fifos_devices_and_loops_inside_input_folders_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    street_png(&frames, "f1.png");
    mkfifo(&frames.join("f2.png"));
    std::os::unix::fs::symlink("/dev/zero", frames.join("f3.png")).unwrap();
    std::os::unix::fs::symlink("/dev/null", frames.join("f4.jpg")).unwrap();
    std::os::unix::fs::symlink(&frames, frames.join("loop")).unwrap(); // a directory loop
    std::os::unix::fs::symlink(dir.path().join("gone.png"), frames.join("f5.png")).unwrap(); // dangling
    street_png(&frames, "f6.png");
    let labels = dir.path().join("labels");
    let out = run_within(&["run", "-i", s(&frames), "--labels", s(&labels), "-q"], 60);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(files_in(&labels), ["f1.png", "f6.png"]);
    let err = stderr(&out);
    assert!(
        err.contains("skipped 4 entries") && err.contains("FIFO") && err.contains("character device"),
        "{err}"
    );
    assert!(err.contains("loop"), "{err}");
}

#[test]
fn special_files_given_as_inputs_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("camera.mjpeg");
    mkfifo(&fifo);
    let zero = dir.path().join("zero.mp4");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let urandom = dir.path().join("noise.png");
    std::os::unix::fs::symlink("/dev/urandom", &urandom).unwrap();
    for (input, kind) in [(&fifo, "FIFO"), (&zero, "character device"), (&urandom, "character device")] {
        let out = run_within(&["run", "-i", s(input)], 20);
        assert_one_line_error(&out, 2, &[s(input), kind, "not a regular file"]);
        let out = run_within(&["record", "-i", s(input), "-o", s(&dir.path().join("r.mjpeg"))], 20);
        assert_one_line_error(&out, 2, &[s(input), kind]);
    }
    // The model and the class file too.
    let model = dir.path().join("model.onnx");
    mkfifo(&model);
    assert_one_line_error(&run_within(&["info", "-m", s(&model)], 20), 2, &["model.onnx", "FIFO"]);
    let classes = dir.path().join("classes.txt");
    std::os::unix::fs::symlink("/dev/zero", &classes).unwrap();
    assert_one_line_error(
        &run_within(&["run", "--classes", s(&classes)], 20),
        2,
        &["classes.txt", "character device"],
    );
}

#[test]
fn an_mjpeg_frame_that_never_ends_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    // SOI, a scan header, then 20 MB of entropy-coded bytes without a marker, then a real frame.
    let mut stream = vec![0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02];
    stream.extend(std::iter::repeat_n(0x55u8, 20 << 20));
    stream.extend(jpeg(64, 32));
    let path = dir.path().join("endless.mjpeg");
    std::fs::write(&path, stream).unwrap();
    let labels = dir.path().join("labels");
    // At the smallest pixel limit the built-in model allows (256x512), the frame bound is
    // 16 MiB + 8 bytes per pixel, 17 MiB.
    let out =
        run_within(&["run", "--max-pixels", "131072", "-i", s(&path), "--labels", s(&labels), "-q"], 60);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("without an end-of-image marker"), "{}", stderr(&out));
    assert_eq!(files_in(&labels).len(), 1);
}

#[test]
fn rates_that_never_end_or_overflow_are_refused() {
    for rate in ["0", "-1", "1e-9", "0.001", "1e300", "inf", "NaN", "1001"] {
        for command in [vec!["run", "--realtime"], vec!["bench"], vec!["record", "-o", "x.mjpeg"]] {
            let mut args = command.clone();
            args.extend(["--input-rate", rate]);
            let out = run_within(&args, 20);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            let err = stderr(&out);
            assert!(err.contains("--input-rate") && err.contains("0.01"), "{args:?}: {err}");
        }
    }
    for uri in ["synth://?fps=0", "synth://?fps=1e-9", "synth://?fps=5000"] {
        let out = run_within(&["run", "-i", uri], 20);
        assert_one_line_error(&out, 2, &["fps", "0.01"]);
    }
    let out = run_cli(&["run", "--input-loop", "-2"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_paced_replay_stops_at_sigterm_even_between_slow_frames() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    for i in 0..3 {
        street_png(&frames, &format!("f{i}.png"));
    }
    let stats = dir.path().join("stats.jsonl");
    // One frame every 100 s: only a signal ends this run early.
    let child = util::semask_edge()
        .args(["run", "-i", s(&frames), "--realtime", "--input-rate", "0.01", "--stats", s(&stats), "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lines(&stats.with_extension("jsonl.partial"), 1);
    let sent = Instant::now();
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    assert!(sent.elapsed() < Duration::from_secs(10), "took {:?} to stop", sent.elapsed());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("(interrupted)"), "{}", stdout(&out));
    assert_eq!(json_lines(&stats).len(), 1);
    assert_clean(&out, dir.path());
}

// ---------------------------------------------------------------------------------------------
// 3. Lost data: no output replaces an input or another output.

/// Runs `args`, expects a refusal naming `needles`, and checks that `protected` still hold
/// their bytes.
fn assert_refused_and_intact(args: &[&str], needles: &[&str], protected: &[&Path]) {
    let before: Vec<Vec<u8>> = protected.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let out = run_within(args, 60);
    assert_one_line_error(&out, 2, needles);
    for (path, bytes) in protected.iter().zip(before) {
        assert_eq!(std::fs::read(path).unwrap(), bytes, "{args:?} changed {}", path.display());
    }
}

#[test]
fn outputs_that_are_inputs_are_refused_and_inputs_survive() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let clip = small_mp4(d, "a.mp4");
    let hard = d.join("hard.mp4");
    std::fs::hard_link(&clip, &hard).unwrap();
    let soft = d.join("soft.mp4");
    std::os::unix::fs::symlink(&clip, &soft).unwrap();
    let mjpeg = d.join("drive.mjpeg");
    std::fs::write(&mjpeg, [jpeg(64, 32), jpeg(64, 32)].concat()).unwrap();
    let model = d.join("model.onnx");
    std::fs::copy(fixture("semask-ref/tiny2.ortopt.onnx"), &model).unwrap();
    let classes = d.join("classes.txt");
    std::fs::write(&classes, util_cityscapes_names()).unwrap();
    let sub_dot_dot = format!("{}/missing/../a.mp4", d.display());

    for (args, needle) in [
        (vec!["run", "-i", s(&clip), "-o", s(&clip)], "--output"),
        (vec!["run", "-i", s(&clip), "-o", s(&hard)], "--output"),
        (vec!["run", "-i", s(&clip), "-o", s(&soft)], "--output"),
        (vec!["run", "-i", s(&clip), "-o", &sub_dot_dot], "--output"),
        (vec!["run", "-i", s(&clip), "--stats", s(&clip)], "--stats"),
        (vec!["run", "-i", s(&hard), "--stats", s(&clip)], "--stats"),
        (vec!["run", "-i", s(&mjpeg), "-o", s(&mjpeg)], "--output"),
        (vec!["run", "-m", s(&model), "--stats", s(&model)], "--stats"),
        (vec!["run", "--classes", s(&classes), "--stats", s(&classes)], "--stats"),
        (vec!["record", "-i", s(&mjpeg), "-o", s(&mjpeg)], "--output"),
        (vec!["bench", "-m", s(&model), "--report", s(&model), "--frames", "1"], "--report"),
        (vec!["bench", "-i", s(&mjpeg), "--plot", s(&mjpeg), "--frames", "1"], "--plot"),
    ] {
        assert_refused_and_intact(&args, &[needle, "input"], &[&clip, &mjpeg, &model, &classes]);
    }
}

fn util_cityscapes_names() -> String {
    [
        "road",
        "sidewalk",
        "building",
        "wall",
        "fence",
        "pole",
        "traffic light",
        "traffic sign",
        "vegetation",
        "terrain",
        "sky",
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
    ]
    .join("\n")
}

#[test]
fn png_outputs_into_the_input_folder_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir_all(frames.join("city")).unwrap();
    let a = street_png(&frames, "a.png");
    let b = street_png(&frames.join("city"), "b.png");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(frames.join("city"), &link).unwrap();
    let one = s(&a);
    for (input, flag, out_dir) in [
        (s(&frames), "--labels", frames.clone()),
        (s(&frames), "--color", frames.join("city")),
        (s(&frames), "--overlay", link.clone()),
        (one, "--labels", frames.clone()),
        (one, "--labels", frames.join("city/..")),
    ] {
        assert_refused_and_intact(
            &["run", "-i", input, flag, s(&out_dir), "-q"],
            &[flag, "would overwrite the input"],
            &[&a, &b],
        );
    }
    // JPEG inputs write .png results: the same folder is fine then.
    let jpegs = dir.path().join("jpegs");
    std::fs::create_dir(&jpegs).unwrap();
    std::fs::write(jpegs.join("j.jpg"), jpeg(64, 32)).unwrap();
    let out = run_cli(&["run", "-i", s(&jpegs), "--labels", s(&jpegs), "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(files_in(&jpegs), ["j.jpg", "j.png"]);
}

#[test]
fn outputs_that_overwrite_each_other_or_special_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let same = d.join("out");
    let video = d.join("v.mjpeg");
    let existing_dir = d.join("taken.mp4");
    std::fs::create_dir(&existing_dir).unwrap();
    let existing_mjpeg_dir = d.join("taken.mjpeg");
    std::fs::create_dir(&existing_mjpeg_dir).unwrap();
    let fifo = d.join("pipe.jsonl");
    mkfifo(&fifo);
    for (args, needles) in [
        (vec!["run", "--labels", s(&same), "--color", s(&same)], vec!["--labels", "--color"]),
        (vec!["run", "--overlay", s(&same), "--stats", s(&same)], vec!["--overlay", "--stats"]),
        (vec!["run", "-o", s(&video), "--stats", s(&video)], vec!["--output", "--stats"]),
        (vec!["run", "-o", s(&existing_dir)], vec!["directory", "not a regular file"]),
        (vec!["run", "--stats", s(&fifo)], vec!["FIFO", "not a regular file"]),
        (
            vec!["record", "-i", "synth://?frames=2", "-o", s(&existing_mjpeg_dir)],
            vec!["--output", "directory"],
        ),
        (vec!["bench", "--report", "/dev/null", "--frames", "1"], vec!["character device"]),
    ] {
        let out = run_within(&args, 30);
        assert_one_line_error(&out, 2, &needles);
    }
    assert!(existing_dir.is_dir() && existing_mjpeg_dir.is_dir());
}

// ---------------------------------------------------------------------------------------------
// 4. Outputs are whole: `.partial` until complete, SIGTERM like Ctrl-C.

#[test]
fn a_killed_run_leaves_only_partial_files_whose_lines_are_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (video, stats, labels) =
        (dir.path().join("v.mp4"), dir.path().join("s.jsonl"), dir.path().join("labels"));
    let child = util::semask_edge()
        .args(["run", "-i", "synth://?frames=0&size=160x96", "-o", s(&video), "--stats", s(&stats)])
        .args(["--labels", s(&labels), "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let partial = dir.path().join("s.jsonl.partial");
    wait_for_lines(&partial, 3);
    // During the run nothing carries a final name but the PNGs already whole.
    assert!(!stats.exists() && !video.exists());
    signal(&child, "-KILL");
    let _ = child.wait_with_output();
    assert!(!stats.exists() && !video.exists());
    let lines = json_lines(&partial);
    assert!(lines.len() >= 3);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["frame"], i as u64);
    }
    // Every label PNG with a final name decodes.
    for name in files_in(&labels).iter().filter(|n| n.ends_with(".png")) {
        image::open(labels.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn sigterm_and_sighup_finish_outputs_like_ctrl_c() {
    for sig in ["-TERM", "-HUP", "-INT"] {
        let dir = tempfile::tempdir().unwrap();
        let (video, stats) = (dir.path().join("v.mjpeg"), dir.path().join("s.jsonl"));
        let child = util::semask_edge()
            .args(["run", "-i", "synth://?frames=0&size=160x96", "-o", s(&video), "--stats", s(&stats), "-q"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_lines(&dir.path().join("s.jsonl.partial"), 2);
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{sig}: {}", stderr(&out));
        assert!(stdout(&out).contains("(interrupted)"), "{sig}");
        let written = json_lines(&stats).iter().filter(|l| l["status"] == "ok").count();
        let replay = dir.path().join("replay");
        let out2 = run_cli(&["run", "-i", s(&video), "--labels", s(&replay), "-q"]);
        assert!(out2.status.success(), "{}", stderr(&out2));
        assert_eq!(files_in(&replay).len(), written, "{sig}");
        assert_clean(&out, dir.path());
    }
}

#[test]
fn a_setup_error_after_outputs_were_opened_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("only.png"), b"not a png").unwrap();
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, "x").unwrap();
    for args in [
        // The video is opened before the stats file fails.
        vec!["run", "-o", s(&dir.path().join("v.mp4")), "--stats", s(&blocked.join("s.jsonl"))],
        // Nothing recorded: the stream file is not created.
        vec!["record", "-i", s(&broken), "-o", s(&dir.path().join("r.mjpeg"))],
        vec!["run", "-i", s(&dir.path().join("none")), "--stats", s(&dir.path().join("s.jsonl"))],
    ] {
        let out = run_within(&args, 60);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert_clean(&out, dir.path());
        for name in ["v.mp4", "s.jsonl", "r.mjpeg"] {
            assert!(!dir.path().join(name).exists(), "{args:?} left {name}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Silent wrong results.

fn tiny2_with(dir: &Path, name: &str, props: &[(&str, &str)]) -> PathBuf {
    let mut proto =
        pb::ModelProto::decode(&std::fs::read(fixture("semask-ref/tiny2.ortopt.onnx")).unwrap()[..]).unwrap();
    set_props(&mut proto, props);
    let path = dir.join(name);
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    path
}

#[test]
fn a_palette_without_class_names_colours_the_default_classes() {
    let dir = tempfile::tempdir().unwrap();
    let palette: Vec<[u8; 3]> = (0..19).map(|i| [i as u8, 7, 77]).collect();
    let model = tiny2_with(
        dir.path(),
        "palette.onnx",
        &[("semask.palette", &serde_json::to_string(&palette).unwrap())],
    );
    let color = dir.path().join("color");
    let out = run_cli(&["run", "-m", s(&model), "--frames", "1", "--color", s(&color), "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let img = image::open(color.join("000000.png")).unwrap().into_rgb8();
    assert!(img.pixels().all(|p| p.0[1] == 7 && p.0[2] == 77 && p.0[0] < 19));
    let info = run_cli(&["info", "--json", "-m", s(&model)]);
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["classes"]["value"]["names"][0], "road");
    assert_eq!(v["classes"]["value"]["palette"][3], serde_json::json!([3, 7, 77]));
}

#[test]
fn malformed_palettes_are_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let names = serde_json::to_string(&(0..19).map(|i| format!("k{i}")).collect::<Vec<_>>()).unwrap();
    let ok_colours = serde_json::to_string(&vec![[1, 2, 3]; 19]).unwrap();
    for (i, props) in [
        vec![("semask.palette", "[[300, 0, 0]]")],
        vec![("semask.palette", "[[1, 2]]")],
        vec![("semask.palette", "red")],
        vec![("semask.palette", "[[1, 2, 3], [4, 5, 6]]")], // 2 colours, 19 classes
        vec![("semask.palette", "[[1.5, 2, 3]]")],
        vec![("semask.classes", names.as_str()), ("semask.palette", "[[-1, 0, 0]]")],
        vec![("semask.classes", names.as_str()), ("semask.palette", "[[1, 2, 3]]")],
    ]
    .into_iter()
    .enumerate()
    {
        let model = tiny2_with(dir.path(), &format!("p{i}.onnx"), &props);
        for args in [vec!["info", "-m", s(&model)], vec!["run", "-m", s(&model), "--frames", "1"]] {
            let out = run_within(&args, 60);
            assert_one_line_error(&out, 2, &[&format!("p{i}.onnx"), "semask.palette"]);
        }
    }
    // A valid palette with valid names still works.
    let model =
        tiny2_with(dir.path(), "fine.onnx", &[("semask.classes", &names), ("semask.palette", &ok_colours)]);
    assert!(run_cli(&["info", "-m", s(&model)]).status.success());
}

#[test]
fn a_video_from_an_input_with_an_absurd_rate_is_not_hours_long() {
    let dir = tempfile::tempdir().unwrap();
    let clip = small_mp4(dir.path(), "clip.mp4");
    // Media timescale 1 tick/s over the same duration in ticks: a frame every ~8 hours.
    let slow = patched(&clip, "slow.mp4", |b| {
        let at = box_payload(b, b"mdhd");
        let skip = if b[at] == 1 { 4 + 16 } else { 4 + 8 };
        b[at + skip..at + skip + 4].copy_from_slice(&1u32.to_be_bytes());
    });
    let video = dir.path().join("out.mp4");
    let out = run_cli(&["run", "-i", s(&slow), "-o", s(&video), "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("--input-rate"), "{}", stderr(&out));
    let probe = Command::new("ffprobe")
        .args(["-loglevel", "error", "-show_entries", "format=duration", "-of", "csv=p=0"])
        .arg(&video)
        .output()
        .expect("ffprobe (apt-get install ffmpeg)");
    let seconds: f64 = String::from_utf8_lossy(&probe.stdout).trim().parse().unwrap();
    assert!(seconds < 1.0, "4 frames last {seconds} s");
}

#[test]
fn int8_artifacts_of_other_models_are_refused_and_the_one_used_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let builtin = workspace_root().join("calibration/semask-tiny-synth");
    let qop = std::fs::read(builtin.join("model.qop.onnx")).unwrap();
    let fp32 = std::fs::read(builtin.join("model.onnx")).unwrap();
    let place = |folder: &str, fp32_bytes: &[u8], qop_props: &[(&str, &str)]| -> PathBuf {
        let root = d.join(folder);
        std::fs::create_dir_all(root.join("calibration/drive")).unwrap();
        std::fs::write(root.join("drive.onnx"), fp32_bytes).unwrap();
        let mut proto = pb::ModelProto::decode(&qop[..]).unwrap();
        // Each case sets the hash it needs; without one the artifact is matched by the export
        // metadata both files carry (artifacts from before hashes).
        proto.metadata_props.retain(|e| e.key != "semask.fp32_sha256");
        set_props(&mut proto, qop_props);
        std::fs::write(root.join("calibration/drive/model.qop.onnx"), proto.encode_to_vec()).unwrap();
        root.join("drive.onnx")
    };
    let sha = semask_edge::model::sha256_hex(&fp32);
    let tiny2 = std::fs::read(fixture("semask-ref/tiny2.ortopt.onnx")).unwrap();
    let other_names = serde_json::to_string(&(0..19).map(|i| format!("k{i}")).collect::<Vec<_>>()).unwrap();
    for (folder, fp32_bytes, props, needle) in [
        ("other-size", &tiny2[..], vec![], "its input is"),
        ("other-hash", &fp32[..], vec![("semask.fp32_sha256", "00ff")], "SHA-256"),
        (
            "other-weights",
            &fp32[..],
            vec![("semask.weights", "runs/other/iter_10.safetensors")],
            "semask.weights",
        ),
        ("other-classes", &fp32[..], vec![("semask.classes", other_names.as_str())], "classes"),
    ] {
        let model = place(folder, fp32_bytes, &props);
        let out = run_cli(&["run", "-m", s(&model), "--precision", "int8", "--frames", "1", "-q"]);
        assert_one_line_error(&out, 2, &["drive.onnx", "model.qop.onnx", "not made from", needle]);
    }
    let model = place("same", &fp32, &[("semask.fp32_sha256", &sha)]);
    let out = run_cli(&["run", "-m", s(&model), "--precision", "int8", "--frames", "1", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("note: --precision int8 runs") && stderr(&out).contains("model.qop.onnx"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn record_counts_bad_frames_and_says_so_in_its_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("in.mjpeg");
    let good = jpeg(64, 32);
    std::fs::write(&stream, [&good[..], &good[..good.len() / 2], &jpeg(64, 32)[..], b"noise"].concat())
        .unwrap();
    let out = run_cli(&["record", "-i", s(&stream), "-o", s(&dir.path().join("out.mjpeg"))]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("2 frames recorded") && stdout(&out).contains("1 failed"),
        "{}",
        stdout(&out)
    );
    assert!(dir.path().join("out.mjpeg").exists());
}

#[test]
fn a_model_without_classes_is_an_error_not_a_wrapped_count() {
    let dir = tempfile::tempdir().unwrap();
    // logits = input[:, 0:0]: zero channels.
    let slice = model(
        vec![node("Slice", &["input", "starts", "ends", "axes"], "logits")],
        vec![dim(1), dim(3), dim(8), dim(8)],
        vec![int64_tensor("starts", &[0]), int64_tensor("ends", &[0]), int64_tensor("axes", &[1])],
    );
    let path = dir.path().join("empty.onnx");
    std::fs::write(&path, slice.encode_to_vec()).unwrap();
    for command in ["run", "info"] {
        let out = run_within(&[command, "-m", s(&path)], 60);
        assert_one_line_error(&out, 2, &["empty.onnx"]);
        assert!(
            !stderr(&out).contains("18446744073709551615") && !stdout(&out).contains("18446744073709551615")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Errors that say what is wrong, once, with the file and the fix.

/// No clause of the line (split at ": " and "; ") appears twice.
fn assert_said_once(out: &Output) {
    let err = stderr(out);
    let parts: Vec<&str> = err.split([':', ';']).map(str::trim).filter(|p| p.len() > 12).collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(!parts[..i].contains(p), "{p:?} repeated in: {err}");
    }
}

#[test]
fn flag_values_are_blamed_on_the_flag() {
    for (flag, value) in
        [("--std", "0,0,0"), ("--std", "1,1,1e-9"), ("--mean", "1,2,1e9"), ("--std", "nan,1,1")]
    {
        let out = run_cli(&["run", flag, value]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2));
        assert!(err.starts_with("error: invalid value") && err.contains(flag), "{err}");
        assert!(!err.contains("metadata"), "{err}");
    }
}

#[test]
fn bad_class_files_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (text, needle)) in [
        (r#"{"classes": 3}"#, "list of names"),
        (r#"[1, 2, 3]"#, "list of names"),
        (r#"{"names": ["a"]}"#, "\"names\""),
        (r#"{"classes": ["a"], "palette": [[1, 2]]}"#, "palette"),
        (r#"{"classes": ["a", "b"], "palette": [[1, 2, 3]]}"#, "palette colours"),
        (r#"["a", "#, "not valid JSON"),
        ("", "empty"),
        ("\u{feff}\n\n# only comments\n", "empty"),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("classes{i}.json"));
        std::fs::write(&path, text).unwrap();
        let out = run_cli(&["run", "--classes", s(&path)]);
        assert_one_line_error(&out, 2, &[&format!("classes{i}.json"), needle]);
        assert!(!stderr(&out).contains("untagged") && !stderr(&out).contains("variant"), "{}", stderr(&out));
        assert_said_once(&out);
    }
    std::fs::write(dir.path().join("bin.txt"), [0xFFu8, 0xFE, 0x00]).unwrap();
    let out = run_cli(&["run", "--classes", s(&dir.path().join("bin.txt"))]);
    assert_one_line_error(&out, 2, &["bin.txt", "UTF-8"]);
}

#[test]
fn errors_name_the_model_and_say_each_thing_once() {
    let dir = tempfile::tempdir().unwrap();
    // An operator tract does not know.
    let unknown = model(
        vec![node("NoSuchOperator", &["input"], "logits")],
        vec![dim(1), dim(3), dim(8), dim(8)],
        vec![],
    );
    let path = dir.path().join("unknown-op.onnx");
    std::fs::write(&path, unknown.encode_to_vec()).unwrap();
    for command in ["info", "run"] {
        let out = run_cli(&[command, "-m", s(&path)]);
        assert_eq!(out.status.code(), Some(2));
        let last = stderr(&out).lines().last().unwrap_or("").to_string();
        assert!(last.contains("unknown-op.onnx"), "{command}: {}", stderr(&out));
    }
    // Metadata and read errors, each reason once.
    for (name, props) in [
        ("std.onnx", vec![("semask.std", "[1, 2]")]),
        ("mean.onnx", vec![("semask.mean", "zero")]),
        ("order.onnx", vec![("semask.channel_order", "yuv")]),
        ("logits.onnx", vec![("semask.logits", "nope")]),
    ] {
        let model = tiny2_with(dir.path(), name, &props);
        let out = run_cli(&["info", "-m", s(&model)]);
        assert_one_line_error(&out, 2, &[name, props[0].0]);
        assert_said_once(&out);
    }
    for missing in ["no/such/model.onnx", "/"] {
        let out = run_cli(&["run", "-m", missing]);
        assert_one_line_error(&out, 2, &[missing]);
        assert_said_once(&out);
    }
}

#[test]
fn frames_too_small_for_h264_say_so() {
    let dir = tempfile::tempdir().unwrap();
    for (w, h) in [(8u32, 8u32), (15, 64), (64, 2)] {
        let image = dir.path().join(format!("tiny{w}x{h}.png"));
        image::RgbImage::from_pixel(w, h, image::Rgb([9, 9, 9])).save(&image).unwrap();
        let video = dir.path().join("tiny.mp4");
        let out = run_cli(&["run", "-i", s(&image), "-o", s(&video), "--input-rate", "30", "-q"]);
        assert_one_line_error(&out, 2, &["tiny.mp4", &format!("{w}x{h}"), "16x16", ".mjpeg"]);
        assert_clean(&out, dir.path());
        assert!(!video.exists());
        // MJPEG takes any size.
        let mjpeg = dir.path().join("tiny.mjpeg");
        assert!(
            run_cli(&["run", "-i", s(&image), "-o", s(&mjpeg), "--input-rate", "30", "-q"]).status.success()
        );
    }
}
