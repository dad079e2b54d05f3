//! A virtual X screen for the tests of the window output (`display://`): Xvfb, and a
//! screenshot of it taken with GStreamer's `ximagesrc`.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

/// A virtual X screen (`Xvfb`), 800x600, gone with the value.
pub struct Xvfb {
    child: Child,
    pub display: String,
}

impl Xvfb {
    pub fn start() -> Xvfb {
        use std::io::BufRead;
        // -displayfd: Xvfb picks a free display and prints its number once it accepts clients.
        let mut child = std::process::Command::new("Xvfb")
            // -noreset: no server reset when the last client leaves (autovideosink opens and
            // closes a connection while it probes sinks; a reset then refuses the next one).
            .args(["-displayfd", "1", "-screen", "0", "800x600x24", "-nolisten", "tcp", "-noreset"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("no Xvfb: scripts/prerequisites.sh --tests installs it (Debian's xvfb)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let number = line.trim();
        assert!(!number.is_empty(), "Xvfb did not start");
        // Accepting on its socket, as X clients will find it.
        let socket = format!("/tmp/.X11-unix/X{number}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "Xvfb :{number} does not accept on {socket}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Xvfb { child, display: format!(":{number}") }
    }

    /// The whole screen, RGB.
    pub fn screenshot(&self) -> image::RgbImage {
        let pipeline = gst::parse::launch(&format!(
            "ximagesrc display-name={} num-buffers=1 use-damage=false ! videoconvert \
             ! video/x-raw,format=RGB ! appsink name=out",
            self.display
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let sink = pipeline.by_name("out").unwrap().downcast::<gstreamer_app::AppSink>().unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(10)).expect("no screenshot");
        let info = gstreamer_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        let map = sample.buffer().unwrap().map_readable().unwrap();
        let (w, h, stride) = (info.width(), info.height(), info.stride()[0] as usize);
        let mut shot = image::RgbImage::new(w, h);
        for (y, row) in shot.rows_mut().enumerate() {
            for (x, p) in row.enumerate() {
                let i = y * stride + x * 3;
                p.0 = [map[i], map[i + 1], map[i + 2]];
            }
        }
        drop(map);
        pipeline.set_state(gst::State::Null).unwrap();
        shot
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // SIGTERM: Xvfb removes its lock file and socket (SIGKILL would leave them).
        let terminated = std::process::Command::new("kill").arg(self.child.id().to_string()).status();
        if !terminated.is_ok_and(|s| s.success()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
