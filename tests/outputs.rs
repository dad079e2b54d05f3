//! Outputs named by URI (`-o`, several at once) and the browser view (`-o http://…`): its HTTP
//! endpoints, its bound on clients, clients that never read, and the page itself in a real
//! headless Chromium (Debian's `chromium`, installed by `scripts/prerequisites.sh --tests`).

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use semask_edge::frame::{Frame, Rgb8Image};
use semask_edge::model::ClassTable;
use semask_edge::pipeline::FrameEvent;
use semask_edge::sink::Sink;
use semask_edge::sink::browser::{BrowserSink, MAX_CLIENTS};
use semask_edge::timing::Stage;
use util::{assert_one_line_error, files_in, run_cli, s, stderr};

/// A GET answered in full (the server closes after each response).
fn get(addr: SocketAddr, path: &str) -> (String, Vec<u8>) {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(socket, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = Vec::new();
    socket.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8(response[..split].to_vec()).unwrap();
    (head, response[split + 4..].to_vec())
}

fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (head, body) = get(addr, path);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_slice(&body).unwrap()
}

/// An open stream: the response head has been read.
fn open_stream(addr: SocketAddr, path: &str) -> BufReader<TcpStream> {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(socket, "GET {path} HTTP/1.1\r\n\r\n").unwrap();
    let mut reader = BufReader::new(socket);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{path}: {line}");
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    reader
}

/// The next JPEG of an MJPEG stream.
fn next_part(stream: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut length = None;
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stream.read_line(&mut line).unwrap() > 0, "the stream ended");
        if let Some(n) = line.strip_prefix("Content-Length: ") {
            length = Some(n.trim().parse::<usize>().unwrap());
        }
        if line == "\r\n" && length.is_some() {
            break;
        }
    }
    let mut jpeg = vec![0; length.unwrap()];
    stream.read_exact(&mut jpeg).unwrap();
    jpeg
}

/// The next server-sent event's data.
fn next_event(stream: &mut BufReader<TcpStream>) -> serde_json::Value {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stream.read_line(&mut line).unwrap() > 0, "the events ended");
        if let Some(data) = line.strip_prefix("data: ") {
            return serde_json::from_str(data).unwrap();
        }
    }
}

fn mean_colour(jpeg: &[u8]) -> [f64; 3] {
    let image = image::load_from_memory(jpeg).unwrap().to_rgb8();
    let mut sum = [0.0; 3];
    for p in image.pixels() {
        for c in 0..3 {
            sum[c] += p[c] as f64;
        }
    }
    sum.map(|v| v / (image.width() * image.height()) as f64)
}

/// Feeds the sink one written frame whose overlay is `colour` (or noise, which makes large
/// JPEGs), the way the pipeline does.
struct Feeder {
    frame: Frame,
    index: u64,
}

impl Feeder {
    fn new(width: usize, height: usize) -> Feeder {
        let frame = Frame { overlay: Rgb8Image::new(width, height), ..Default::default() };
        Feeder { frame, index: 0 }
    }

    fn fill(&mut self, colour: [u8; 3]) -> &mut Self {
        for p in self.frame.overlay.data.chunks_exact_mut(3) {
            p.copy_from_slice(&colour);
        }
        self
    }

    fn noise(&mut self) -> &mut Self {
        let mut x = self.index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for v in self.frame.overlay.data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *v = x as u8;
        }
        self
    }

    fn send(&mut self, sink: &mut dyn Sink) {
        self.frame.begin(self.index, &format!("{:06}", self.index));
        self.frame.timings.add(Stage::Network, Duration::from_millis(40));
        self.frame.end_to_end = Duration::from_millis(55);
        sink.write(&self.frame).unwrap();
        sink.record(&FrameEvent::Written(&self.frame)).unwrap();
        self.index += 1;
    }
}

fn serve() -> BrowserSink {
    BrowserSink::serve("127.0.0.1:0".parse().unwrap(), &ClassTable::cityscapes()).unwrap()
}

#[test]
fn endpoints_serve_the_newest_frame_and_statistics() {
    let mut sink = serve();
    let addr = sink.addr();
    let (head, page) = get(addr, "/");
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("text/html"), "{head}");
    let page = String::from_utf8(page).unwrap();
    for needle in ["/stream.mjpg", "/events", "rgb(128,64,128)\"></span>road", "traffic sign"] {
        assert!(page.contains(needle), "{needle} missing from the page");
    }
    // Before any frame: no statistics, no frame (after a short wait), and no panic.
    assert_eq!(get_json(addr, "/stats.json")["latest"], serde_json::Value::Null);

    let mut events = open_stream(addr, "/events");
    let mut feeder = Feeder::new(64, 48);
    feeder.fill([200, 10, 10]).send(&mut sink);
    assert_eq!(next_event(&mut events)["last"]["frame"], 0);
    feeder.fill([10, 10, 200]).send(&mut sink);
    let event = next_event(&mut events);
    assert_eq!((event["written"].as_u64(), event["last"]["frame"].as_u64()), (Some(2), Some(1)));
    assert_eq!(event["last"]["stages_ms"]["network"], 40.0);
    assert_eq!(event["last"]["end_to_end_ms"], 55.0);

    let (head, jpeg) = get(addr, "/frame.jpg");
    assert!(head.contains("image/jpeg"), "{head}");
    let [r, g, b] = mean_colour(&jpeg);
    assert!(b > 180.0 && r < 40.0 && g < 40.0, "/frame.jpg is not the newest frame: {r} {g} {b}");

    let stats = get_json(addr, "/stats.json");
    assert_eq!(stats["latest"]["written"], 2);
    assert_eq!(stats["max_clients"], MAX_CLIENTS);
    // This request and the events stream.
    let clients = stats["clients"].as_array().unwrap();
    assert!(clients.iter().any(|c| c["path"] == "/events" && c["sent"] == 2), "{clients:?}");

    let (head, _) = get(addr, "/nothing-here");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.write_all(b"POST / HTTP/1.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");

    // The end of the run ends the streams.
    sink.finish().unwrap();
    let mut rest = Vec::new();
    let _ = events.read_to_end(&mut rest);
    assert!(TcpStream::connect(addr).is_err() || get_after_close(addr));
}

/// After the run, nobody answers (the port may linger in the kernel's backlog briefly).
fn get_after_close(addr: SocketAddr) -> bool {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = socket.write_all(b"GET / HTTP/1.1\r\n\r\n");
    let mut buf = [0u8; 16];
    matches!(socket.read(&mut buf), Ok(0) | Err(_))
}

#[test]
fn the_stream_sends_each_new_frame_and_counts_what_slow_clients_miss() {
    let mut sink = serve();
    let addr = sink.addr();
    let mut feeder = Feeder::new(96, 64);
    let mut stream = open_stream(addr, "/stream.mjpg");
    for (i, colour) in [[250, 0, 0], [0, 250, 0], [0, 0, 250]].into_iter().enumerate() {
        feeder.fill(colour).send(&mut sink);
        let mean = mean_colour(&next_part(&mut stream));
        assert!(mean[i] > 200.0, "part {i} is not frame {i}: {mean:?}");
    }

    // Twenty clients that never read, then frames far faster than they could take (noise makes
    // ~30 kB JPEGs, so their socket buffers fill): every write still returns.
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut socket = TcpStream::connect(addr).unwrap();
            socket.write_all(b"GET /stream.mjpg HTTP/1.1\r\n\r\n").unwrap();
            socket
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..300 {
        feeder.noise().send(&mut sink);
    }
    // The reading client still gets the newest frames.
    feeder.fill([0, 250, 0]).send(&mut sink);
    let mut newest = [0.0; 3];
    for _ in 0..400 {
        newest = mean_colour(&next_part(&mut stream));
        if newest[1] > 200.0 && newest[0] < 60.0 {
            break;
        }
    }
    assert!(newest[1] > 200.0, "the reading client never got the newest frame: {newest:?}");

    let stats = get_json(addr, "/stats.json");
    let clients = stats["clients"].as_array().unwrap();
    let streams: Vec<&serde_json::Value> = clients.iter().filter(|c| c["path"] == "/stream.mjpg").collect();
    assert_eq!(streams.len(), 21, "{clients:?}");
    let total_missed: u64 = streams.iter().map(|c| c["missed"].as_u64().unwrap()).sum();
    assert!(total_missed > 20 * 200, "idle clients must show missed frames: {clients:?}");
    for c in &streams {
        let (sent, missed) = (c["sent"].as_u64().unwrap(), c["missed"].as_u64().unwrap());
        assert!(sent + missed >= 300 && sent + missed <= 305, "sent {sent} + missed {missed}: {c}");
    }
    // The run's end is not held up by clients stuck in a write.
    let start = Instant::now();
    sink.finish().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5), "finish took {:?}", start.elapsed());
    drop(idle);
}

#[test]
fn connections_beyond_the_bound_are_turned_away() {
    let sink = serve();
    let addr = sink.addr();
    let held: Vec<BufReader<TcpStream>> = (0..MAX_CLIENTS).map(|_| open_stream(addr, "/events")).collect();
    let (head, body) = get(addr, "/");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("too many"));
    drop(held);
    // Slots free up when clients leave.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (head, _) = get(addr, "/stats.json");
        if head.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "slots never came back: {head}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(get_json(addr, "/stats.json")["refused"].as_u64().unwrap() >= 1);
}

#[test]
fn a_port_in_use_is_one_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let error = BrowserSink::serve(taken.local_addr().unwrap(), &ClassTable::cityscapes()).unwrap_err();
    assert!(error.to_string().contains("in use"), "{error}");
    let out =
        run_cli(&["run", "-i", "synth://?frames=2&size=64x32", "-o", &format!("http://127.0.0.1:{port}")]);
    assert_one_line_error(&out, 2, &[&format!("http://127.0.0.1:{port}"), "in use", "choose another"]);
}

#[test]
fn several_outputs_at_once_each_get_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mp4, mjpeg, pngs, stats) = (d.join("a.mp4"), d.join("b.mjpeg"), d.join("pngs"), d.join("s.jsonl"));
    let out = run_cli(&[
        "run",
        "-i",
        "synth://?frames=5&size=160x96",
        "-o",
        s(&mp4),
        "-o",
        &format!("file://{}", s(&mjpeg)),
        "-o",
        &format!("{}/", s(&pngs)),
        "-o",
        s(&stats),
        "-o",
        "http://127.0.0.1:0",
        "--labels",
        s(&d.join("labels")),
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(files_in(&pngs).len(), 5);
    assert_eq!(files_in(&d.join("labels")).len(), 5);
    assert_eq!(std::fs::read_to_string(&stats).unwrap().lines().count(), 5);
    let jpegs = std::fs::read(&mjpeg).unwrap().windows(2).filter(|w| w == &[0xFF, 0xD8]).count();
    assert!(jpegs >= 5, "{jpegs} JPEG starts in the MJPEG file");
    assert!(std::fs::metadata(&mp4).unwrap().len() > 1000);
    // Nothing left half-written.
    assert!(files_in(d).iter().all(|f| !f.ends_with(".partial")), "{:?}", files_in(d));
}

#[test]
fn outputs_that_cannot_be_made_say_what_to_write_instead() {
    // Without the `gstreamer` feature, its outputs say how to get them (tests/gstreamer.rs
    // has their errors with it).
    #[cfg(not(feature = "gstreamer"))]
    let streamed = [
        ("display://0", vec!["display://0", "GStreamer", "http://"]),
        ("rtsp://@:8554/out", vec!["GStreamer", "--features gstreamer"]),
    ];
    #[cfg(feature = "gstreamer")]
    let streamed = [
        ("rtsp://@:8554", vec!["rtsp://@:8554", "stream's path"]),
        ("rtp://@:5000", vec!["receiver's address"]),
    ];
    for (output, needles) in streamed.into_iter().chain([
        ("webrtc://@:8554/out", vec!["WebRTC", "rtsp://"]),
        ("out.avi", vec!["out.avi", "unknown output type", ".mp4"]),
        ("ftp://host/x", vec!["unknown output scheme"]),
        ("http://127.0.0.1:70000", vec!["0 to 65535"]),
    ]) {
        let out = run_cli(&["run", "-i", "synth://?frames=1&size=64x32", "-o", output]);
        assert_one_line_error(&out, 2, &needles);
    }
}

// ---------------------------------------------------------------------------------------------
// The page in a real browser.

/// Chromium's name here (Debian: `chromium`).
fn chromium() -> &'static str {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return name;
        }
    }
    panic!("no Chromium: run scripts/prerequisites.sh --tests (it installs Debian's chromium)")
}

/// The page's FPS figures, as `browser_view.py` reads them from the live DOM.
struct PageWatcher {
    child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl PageWatcher {
    fn open(addr: SocketAddr, shot: &Path) -> PageWatcher {
        let script = util::workspace_root().join("tests/reference/browser_view.py");
        let mut child = Command::new(util::python())
            .args([s(&script), chromium(), &format!("http://{addr}/"), s(shot)])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        PageWatcher { child, lines }
    }

    /// Reads FPS figures until one satisfies `done`; returns it.
    fn fps_until(&mut self, done: impl Fn(f64) -> bool) -> f64 {
        let mut seen = Vec::new();
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            let text = line.strip_prefix("fps ").unwrap_or_else(|| panic!("{line} (after {seen:?})"));
            if let Ok(fps) = text.parse::<f64>()
                && done(fps)
            {
                return fps;
            }
            seen.push(text.to_string());
        }
        panic!("the page never showed the FPS awaited; it showed {seen:?}")
    }

    fn screenshot(mut self) {
        writeln!(self.child.stdin.as_mut().unwrap(), "shot").unwrap();
        for line in self.lines.by_ref() {
            if line.unwrap() == "shot" {
                break;
            }
        }
        assert!(self.child.wait().unwrap().success());
    }
}

#[test]
fn the_page_in_headless_chromium_shows_the_overlay_and_a_live_fps() {
    let mut sink = serve();
    let addr = sink.addr();
    // Three class colours side by side, as an overlay with --alpha 1 would show them.
    let classes = ClassTable::cityscapes();
    let colours = [classes.palette()[0], classes.palette()[10], classes.palette()[13]]; // road, sky, car
    let mut feeder = Feeder::new(480, 240);
    for (i, p) in feeder.frame.overlay.data.chunks_exact_mut(3).enumerate() {
        p.copy_from_slice(&colours[(i % 480) * 3 / 480]);
    }
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let rate = std::sync::Arc::new(AtomicU64::new(5));
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let feeding = {
        let (rate, stop) = (rate.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                feeder.send(&mut sink);
                std::thread::sleep(Duration::from_millis(1000 / rate.load(Ordering::Relaxed)));
            }
            sink.finish().unwrap();
        })
    };
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-view.png");
    let mut page = PageWatcher::open(addr, &shot);
    // Frames at 5 per second (a little under: the feeder also sleeps between frames), then 25.
    let slow = page.fps_until(|fps| (3.5..=5.5).contains(&fps));
    rate.store(25, Ordering::Relaxed);
    let fast = page.fps_until(|fps| fps > 3.0 * slow);
    page.screenshot();
    stop.store(true, Ordering::Relaxed);
    feeding.join().unwrap();
    eprintln!("FPS on the page: {slow} at 5 frames/s, then {fast} at 25; screenshot {}", shot.display());

    // The overlay is on the screenshot: each of the three colours covers a good area.
    let screenshot = image::open(&shot).unwrap().to_rgb8();
    for colour in colours {
        let near = screenshot
            .pixels()
            .filter(|p| (0..3).all(|c| (p[c] as i32 - colour[c] as i32).abs() <= 12))
            .count();
        let share = near as f64 / (screenshot.width() * screenshot.height()) as f64;
        assert!(share > 0.05, "colour {colour:?} covers {:.1} % of the screenshot", share * 100.0);
    }
}
