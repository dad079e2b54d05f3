//! Replay of image directories, MJPEG and MP4 files through the streaming pipeline: one output
//! per input frame, in order, with the right names, one stats line per frame; corrupt inputs are
//! reported, counted and skipped; Ctrl-C finishes the outputs; live replays drop and count.

mod util;

use std::path::Path;
use std::process::Command;

use util::{files_in, fixture, run_cli, stderr, stdout};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Parsed stats lines.
fn stats(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `-m MODEL` for the replay tests below when they run under emulation (the aarch64 tests),
/// where the built-in network takes seconds per frame: they check the replay path (decoding,
/// order, counts, outputs), which an identity model leaves whole. Natively: the built-in model.
fn replay_model(dir: &Path) -> Vec<String> {
    if !util::emulated() {
        return Vec::new();
    }
    let path = dir.join("identity.onnx");
    util::onnx::identity_model(&path, [1, 3, 64, 64].into_iter().map(util::onnx::dim).collect());
    vec!["-m".into(), s(&path).into()]
}

/// `args` followed by `extra`.
fn with(args: &[&str], extra: &[String]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).chain(extra.iter().cloned()).collect()
}

fn run_with(args: &[&str], extra: &[String]) -> std::process::Output {
    let args = with(args, extra);
    run_cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn numbered(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{i:06}.png")).collect()
}

/// Frames with a red bar at x = 4 i and grey level 6 i, so order can be checked after coding.
fn write_marked_frames(dir: &Path, n: usize, w: u32, h: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_fn(w, h, |x, _| {
            if x / 4 == i as u32 { image::Rgb([255, 0, 0]) } else { image::Rgb([6 * i as u8; 3]) }
        });
        img.save(dir.join(format!("f{i:03}.png"))).unwrap();
    }
}

/// The index of the marked frame an image shows (position of its red bar).
fn marked_index(img: &image::RgbImage) -> Option<usize> {
    let y = img.height() / 2;
    (0..img.width())
        .find(|&x| {
            let p = img.get_pixel(x, y).0;
            p[0] > 180 && p[1] < 90 && p[2] < 90
        })
        .map(|x| ((x + 1) / 4) as usize)
}

/// Encodes `frames/f%03d.png` at 25 fps into `clip` with ffmpeg (a writer other than ours) and
/// libx264 with `options`.
fn ffmpeg_clip(frames: &Path, clip: &Path, options: &[&str]) {
    let probe = Command::new("ffmpeg").arg("-version").output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "these tests make clips with ffmpeg, as a writer other than ours: apt-get install ffmpeg"
    );
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-framerate", "25", "-i"])
        .arg(frames.join("f%03d.png"))
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .args(options)
        .arg(clip)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg failed on {}", clip.display());
}

#[test]
fn image_directory_replays_one_output_per_frame_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    // Names that sort differently as text and as numbers: f2 before f10.
    std::fs::create_dir(&frames).unwrap();
    for i in [1, 2, 10, 11] {
        std::fs::copy(fixture("images/street_224x448.png"), frames.join(format!("f{i}.png"))).unwrap();
    }
    let (labels, stats_path) = (dir.path().join("labels"), dir.path().join("stats.jsonl"));
    let out = run_cli(&["run", "-i", s(&frames), "--labels", s(&labels), "--stats", s(&stats_path)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(files_in(&labels), vec!["f1.png", "f10.png", "f11.png", "f2.png"]);
    let lines = stats(&stats_path);
    let order: Vec<&str> = lines.iter().map(|l| l["source"].as_str().unwrap()).collect();
    assert_eq!(order, vec!["f1", "f2", "f10", "f11"]);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["frame"], i);
        assert_eq!(line["status"], "ok");
        assert!(line["stages_ms"]["network"].as_f64().unwrap() > 0.0);
        assert!(line["end_to_end_ms"].as_f64().unwrap() >= line["stages_ms"]["network"].as_f64().unwrap());
    }
    // Frame lines on stdout come in order too.
    let text = stdout(&out);
    let positions: Vec<usize> =
        ["f1 ", "f2 ", "f10 ", "f11 "].iter().map(|n| text.find(n).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn mjpeg_recorded_by_us_replays_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let mjpeg = dir.path().join("drive.mjpeg");
    let rec = run_cli(&["record", "-i", "synth://?frames=12&size=320x160", "-o", s(&mjpeg)]);
    assert!(rec.status.success(), "{}", stderr(&rec));
    assert!(stdout(&rec).contains("12 frames recorded"), "{}", stdout(&rec));
    let (labels, stats_path) = (dir.path().join("labels"), dir.path().join("stats.jsonl"));
    let model = replay_model(dir.path());
    let out =
        run_with(&["run", "-i", s(&mjpeg), "--labels", s(&labels), "--stats", s(&stats_path), "-q"], &model);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(files_in(&labels), numbered(12));
    let lines = stats(&stats_path);
    assert_eq!(lines.len(), 12);
    assert!(lines.iter().enumerate().all(|(i, l)| l["source"] == format!("{i:06}")));
    let img = image::open(labels.join("000000.png")).unwrap();
    assert_eq!((img.width(), img.height()), (320, 160));
}

#[test]
fn mp4_written_by_ffmpeg_with_b_frames_replays_in_display_order() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    write_marked_frames(&frames, 24, 160, 96);
    let clip = dir.path().join("clip.mp4");
    ffmpeg_clip(&frames, &clip, &["-profile:v", "high", "-bf", "3", "-g", "10"]);
    let (overlay, stats_path) = (dir.path().join("overlay"), dir.path().join("stats.jsonl"));
    // alpha 0: the overlay is the decoded frame itself.
    let out = run_with(
        &["run", "-i", s(&clip), "--overlay", s(&overlay), "--alpha", "0", "--stats", s(&stats_path), "-q"],
        &replay_model(dir.path()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(files_in(&overlay), numbered(24));
    assert_eq!(stats(&stats_path).len(), 24);
    for i in 0..24 {
        let img = image::open(overlay.join(format!("{i:06}.png"))).unwrap().into_rgb8();
        assert_eq!(marked_index(&img), Some(i), "frame {i} is out of order");
    }
}

#[test]
fn mp4_written_by_us_replays_every_frame_and_ffmpeg_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("out.mp4");
    let model = replay_model(dir.path());
    let out =
        run_with(&["run", "-i", "synth://?frames=15&size=321x161&fps=15", "-o", s(&video), "-q"], &model);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!dir.path().join("out.mp4.partial").exists());
    let labels = dir.path().join("labels");
    let replay = run_with(&["run", "-i", s(&video), "--labels", s(&labels), "-q"], &model);
    assert!(replay.status.success(), "{}", stderr(&replay));
    assert_eq!(files_in(&labels), numbered(15));
    // Odd sizes are padded to even for H.264.
    let img = image::open(labels.join("000000.png")).unwrap();
    assert_eq!((img.width(), img.height()), (322, 162));
    // An independent reader agrees on the frame count and rate.
    let probe = Command::new("ffprobe")
        .args([
            "-loglevel",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames,r_frame_rate",
            "-of",
            "csv=p=0",
        ])
        .arg(&video)
        .output()
        .expect("ffprobe (apt-get install ffmpeg)");
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "15/1,15");
}

#[test]
fn truncated_mp4_reports_lost_frames_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    write_marked_frames(&frames, 20, 160, 96);
    let clip = dir.path().join("clip.mp4");
    // moov first (faststart), so the index survives the truncation of the media data.
    ffmpeg_clip(&frames, &clip, &["-profile:v", "baseline", "-g", "5", "-movflags", "+faststart"]);
    let bytes = std::fs::read(&clip).unwrap();
    let truncated = dir.path().join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() * 3 / 4]).unwrap();
    let (labels, stats_path) = (dir.path().join("labels"), dir.path().join("stats.jsonl"));
    let out = run_cli(&["run", "-i", s(&truncated), "--labels", s(&labels), "--stats", s(&stats_path), "-q"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("truncated"), "{err}");
    let written = files_in(&labels).len();
    let lines = stats(&stats_path);
    let failed = lines.iter().filter(|l| l["status"] == "failed").count();
    assert!(written > 5 && failed > 0, "{written} written, {failed} failed");
    assert_eq!(written + failed, 20);
    assert!(
        stdout(&out).contains(&format!("20 frames in, {written} written, {failed} failed")),
        "{}",
        stdout(&out)
    );

    // Without its index (moov at the end, cut off), the file cannot be opened at all: one clear error.
    let clip_end = dir.path().join("moov_last.mp4");
    ffmpeg_clip(&frames, &clip_end, &[]);
    let bytes = std::fs::read(&clip_end).unwrap();
    std::fs::write(&clip_end, &bytes[..bytes.len() / 2]).unwrap();
    let out = run_cli(&["run", "-i", s(&clip_end), "-q"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("moov_last.mp4") && err.contains("not a readable MP4"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A baseline JPEG of a marked frame.
fn jpeg_frame(i: usize) -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 32, |x, _| {
        if x / 4 == i as u32 { image::Rgb([255, 0, 0]) } else { image::Rgb([20 * i as u8; 3]) }
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg).unwrap();
    out
}

#[test]
fn garbage_inside_an_mjpeg_stream_costs_only_the_damaged_frames() {
    let dir = tempfile::tempdir().unwrap();
    let mut stream = Vec::new();
    for i in 0..8 {
        let mut frame = jpeg_frame(i);
        if i == 3 {
            // Garbage in the middle of frame 3's compressed data, markers included.
            let mid = frame.len() - 40;
            frame.splice(mid..mid, b"\xFF\xC4\x00\x03garbage\xFF\xE1junk".iter().copied());
        }
        if i == 5 {
            stream.extend_from_slice(b"bytes between frames");
        }
        stream.extend_from_slice(&frame);
    }
    let mjpeg = dir.path().join("cam.mjpeg");
    std::fs::write(&mjpeg, &stream).unwrap();
    let (overlay, stats_path) = (dir.path().join("overlay"), dir.path().join("stats.jsonl"));
    let out = run_cli(&[
        "run",
        "-i",
        s(&mjpeg),
        "--overlay",
        s(&overlay),
        "--alpha",
        "0",
        "--stats",
        s(&stats_path),
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines = stats(&stats_path);
    let failed: Vec<&str> =
        lines.iter().filter(|l| l["status"] == "failed").map(|l| l["source"].as_str().unwrap()).collect();
    assert_eq!(failed, vec!["000003"], "{lines:?}");
    // Every other frame is there, in order, with its own content.
    let written = files_in(&overlay);
    assert_eq!(written.len(), 7);
    for name in written {
        let i: usize = name[..6].parse().unwrap();
        let img = image::open(overlay.join(&name)).unwrap().into_rgb8();
        assert_eq!(marked_index(&img), Some(i), "{name}");
    }
    assert!(stderr(&out).contains("frame 4 (000003)"), "{}", stderr(&out));
}

#[test]
fn a_frame_of_another_size_mid_sequence_is_skipped_unless_sizes_may_mix() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    for i in 0..4 {
        let src = if i == 2 { "images/street_112x224.jpg" } else { "images/street_224x448.png" };
        let ext = if i == 2 { "jpg" } else { "png" };
        std::fs::copy(fixture(src), frames.join(format!("f{i}.{ext}"))).unwrap();
    }
    let (labels, video) = (dir.path().join("labels"), dir.path().join("out.mp4"));
    let out = run_cli(&["run", "-i", s(&frames), "--labels", s(&labels), "-o", s(&video), "-q"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("f2.jpg") || stderr(&out).contains("(f2)"), "{}", stderr(&out));
    assert!(stderr(&out).contains("112 but the stream is 448x224"), "{}", stderr(&out));
    assert_eq!(files_in(&labels), vec!["f0.png", "f1.png", "f3.png"]);
    assert!(stdout(&out).contains("4 frames in, 3 written, 1 failed"), "{}", stdout(&out));
    assert!(video.exists());

    let mixed = dir.path().join("mixed");
    let out = run_cli(&["run", "-i", s(&frames), "--labels", s(&mixed), "--mixed-sizes", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(files_in(&mixed).len(), 4);
}

#[test]
fn realtime_replay_drops_stale_frames_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let stats_path = dir.path().join("stats.jsonl");
    // 200 fps is far faster than the network: most frames must be dropped, none lost silently.
    let out = run_cli(&[
        "run",
        "-i",
        "synth://?frames=120&fps=200&size=320x160",
        "--realtime",
        "--stats",
        s(&stats_path),
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = stats(&stats_path);
    assert_eq!(lines.len(), 120, "every frame has a line");
    let ok = lines.iter().filter(|l| l["status"] == "ok").count();
    let dropped = lines.iter().filter(|l| l["status"] == "dropped").count();
    assert_eq!(ok + dropped, 120);
    assert!(dropped > 30, "only {dropped} dropped");
    let last_ok = lines.iter().rev().find(|l| l["status"] == "ok").unwrap();
    assert!(last_ok["dropped"].as_u64().unwrap() > 0);
    assert!(
        stdout(&out).contains(&format!("120 frames in, {ok} written, 0 failed, {dropped} dropped")),
        "{}",
        stdout(&out)
    );
}

#[test]
fn input_loop_replays_the_input_again() {
    let dir = tempfile::tempdir().unwrap();
    let stats_path = dir.path().join("stats.jsonl");
    let out = run_cli(&[
        "run",
        "-i",
        "synth://?frames=3&size=64x32",
        "--input-loop",
        "2",
        "--stats",
        s(&stats_path),
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sources: Vec<String> =
        stats(&stats_path).iter().map(|l| l["source"].as_str().unwrap().to_string()).collect();
    assert_eq!(sources, ["000000", "000001", "000002"].repeat(3));
}

#[test]
fn ctrl_c_finishes_the_frames_in_flight_and_closes_the_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let (video, stats_path) = (dir.path().join("live.mp4"), dir.path().join("stats.jsonl"));
    // An endless input: only Ctrl-C ends this run.
    let child = util::semask_edge()
        .args([
            "run",
            "-i",
            "synth://?frames=0&size=160x96",
            "-o",
            s(&video),
            "--stats",
            s(&stats_path),
            "-q",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until frames are flowing.
    let start = std::time::Instant::now();
    // Statistics go to stats.jsonl.partial, a whole line per frame, until the run ends.
    let partial = dir.path().join("stats.jsonl.partial");
    while std::fs::read_to_string(&partial).map_or(0, |t| t.lines().count()) < 3 {
        assert!(start.elapsed().as_secs() < 60, "no frame after 60 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(interrupted)"));
    // The video is complete and readable, with every frame the stats count as written.
    let written = stats(&stats_path).iter().filter(|l| l["status"] == "ok").count();
    let labels = dir.path().join("replay");
    let replay = run_cli(&["run", "-i", s(&video), "--labels", s(&labels), "-q"]);
    assert!(replay.status.success(), "{}", stderr(&replay));
    assert_eq!(files_in(&labels).len(), written);
}
