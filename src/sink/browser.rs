//! `-o http://127.0.0.1:8080`: a live view in a web browser, for the many Jetsons that run
//! headless. No GStreamer, no extra crate: a small HTTP/1.1 server on its own threads.
//!
//! | path | what |
//! |---|---|
//! | `/` | the page: the live overlay, the class legend with colours, FPS and per-stage latency |
//! | `/stream.mjpg` | the overlay as an MJPEG stream (`multipart/x-mixed-replace`), newest frame first |
//! | `/events` | server-sent events, one per frame: `{"fps", "written", "failed", "dropped", "last"}`, `last` being the `--stats` line of the last frame written |
//! | `/frame.jpg` | the newest overlay as one JPEG |
//! | `/stats.json` | the newest statistics, and every client with the frames it was sent and missed |
//!
//! **The pipeline never waits for a browser.** [`Sink::write`] copies the overlay into a slot
//! and returns; an encoder thread turns the newest slot into a JPEG only while a client waits
//! for one (a client that stopped reading costs no encoding);
//! each client has its own thread that sends the newest JPEG (or statistics) when it is ready
//! for one. A client slower than the pipeline misses frames, counted per client
//! (`/stats.json`, and a log line when it leaves); a client that stops reading for
//! [`STALL_TIMEOUT`] is disconnected. At most [`MAX_CLIENTS`] connections are served at once;
//! more get `503`. The server listens on localhost unless given a wider address
//! (`-o http://0.0.0.0:8080`), which is then logged as reachable by other machines.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::fps::FpsMeter;
use super::{Sink, SinkError};
use crate::frame::{Frame, FrameStatus, Rgb8Image};
use crate::model::ClassTable;
use crate::pipeline::FrameEvent;
use crate::postprocess::Needs;

/// Connections served at once (the page itself takes two: the stream and the events).
pub const MAX_CLIENTS: usize = 32;

/// A client that accepts nothing for this long is disconnected.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Limits of the server ([`MAX_CLIENTS`] and [`STALL_TIMEOUT`] by default).
#[derive(Debug, Clone, Copy)]
pub struct BrowserLimits {
    pub max_clients: usize,
    pub stall_timeout: Duration,
}

impl Default for BrowserLimits {
    fn default() -> Self {
        BrowserLimits { max_clients: MAX_CLIENTS, stall_timeout: STALL_TIMEOUT }
    }
}

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest request head read (the request line and headers).
const MAX_REQUEST: usize = 8 * 1024;

/// How often waiting threads look at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Serves the browser view while the run lasts.
pub struct BrowserSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    encoder: Option<JoinHandle<()>>,
    fps: FpsMeter,
    counts: Counts,
    /// The last written frame's statistics (JSON), shown until the next one is written.
    last_written: Vec<u8>,
    /// The statistics object being built (then swapped into the shared slot).
    json: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    written: u64,
    failed: u64,
    dropped: u64,
}

impl std::fmt::Debug for BrowserSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserSink").field("addr", &self.addr).finish()
    }
}

/// The newest value of something, and how many values came before it (0: none yet).
#[derive(Debug, Default)]
struct Slot<T> {
    value: T,
    seq: u64,
}

/// A slot with a condition variable that announces each new value.
#[derive(Debug, Default)]
struct Latest<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

impl<T> Latest<T> {
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        // A client thread that panicked holds no invariant of ours: go on with the value.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the value in place and wakes the waiters.
    fn publish(&self, update: impl FnOnce(&mut T)) {
        let mut slot = self.lock();
        update(&mut slot.value);
        slot.seq += 1;
        drop(slot);
        self.ready.notify_all();
    }

    /// The slot once it holds a value newer than `seq`; `None` when `give_up` says so first
    /// (it is asked every [`POLL`]).
    fn wait_newer(&self, seq: u64, give_up: impl Fn() -> bool) -> Option<MutexGuard<'_, Slot<T>>> {
        let mut slot = self.lock();
        loop {
            if slot.seq > seq {
                return Some(slot);
            }
            if give_up() {
                return None;
            }
            slot = self.ready.wait_timeout(slot, POLL).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// What the sink, the encoder and the client threads share.
struct Shared {
    stop: AtomicBool,
    /// The newest overlay; `seq` counts frames written.
    overlay: Latest<Rgb8Image>,
    /// The newest overlay as JPEG; `seq` is the overlay's it was made from.
    jpeg: Latest<Vec<u8>>,
    /// The newest statistics object (JSON); `seq` counts frames seen.
    stats: Latest<Vec<u8>>,
    /// Clients waiting for JPEGs: the encoder works only while there is one.
    jpeg_demand: AtomicUsize,
    /// JPEGs encoded so far.
    jpegs_encoded: Arc<AtomicU64>,
    clients: Mutex<Vec<Arc<Client>>>,
    limits: BrowserLimits,
    /// Connections turned away because `limits.max_clients` were being served.
    refused: AtomicU64,
    /// The page, made once (it holds the legend).
    page: String,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn clients(&self) -> MutexGuard<'_, Vec<Arc<Client>>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One connection, and what it was sent.
struct Client {
    id: u64,
    peer: SocketAddr,
    /// The path it asked for, once known.
    path: Mutex<String>,
    since: Instant,
    /// What it streams, and the count of that stream when it started.
    follows: Mutex<Option<(Follows, u64)>>,
    /// Frames (images or statistics) sent.
    sent: AtomicU64,
    /// A handle on its socket, to end it when the run ends.
    socket: TcpStream,
}

/// The streams a client can follow.
#[derive(Debug, Clone, Copy)]
enum Follows {
    /// Overlay frames (`/stream.mjpg`), counted by the overlay slot.
    Frames,
    /// Statistics (`/events`), counted by the statistics slot.
    Stats,
}

impl Client {
    /// Starts following `stream`, whose count is `now`; the first value sent is the one after
    /// `now - 1` (the newest, if any).
    fn follow(&self, stream: Follows, now: u64) {
        *self.follows.lock().unwrap_or_else(|e| e.into_inner()) = Some((stream, now.saturating_sub(1)));
    }

    /// Values the stream offered since the client started following it that it was not sent
    /// (it was still taking an earlier one, or is stuck).
    fn missed(&self, shared: &Shared) -> u64 {
        let Some((stream, start)) = *self.follows.lock().unwrap_or_else(|e| e.into_inner()) else { return 0 };
        let now = match stream {
            Follows::Frames => shared.overlay.lock().seq,
            Follows::Stats => shared.stats.lock().seq,
        };
        now.saturating_sub(start).saturating_sub(self.sent.load(Ordering::Relaxed))
    }

    fn to_json(&self, shared: &Shared) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "peer": self.peer.to_string(),
            "path": *self.path.lock().unwrap_or_else(|e| e.into_inner()),
            "seconds": self.since.elapsed().as_secs_f64(),
            "sent": self.sent.load(Ordering::Relaxed),
            "missed": self.missed(shared),
        })
    }
}

impl BrowserSink {
    /// Listens on `addr` (port 0: any free port; see [`BrowserSink::addr`]) and starts serving.
    pub fn serve(addr: SocketAddr, classes: &ClassTable) -> Result<BrowserSink, SinkError> {
        BrowserSink::serve_with(addr, classes, BrowserLimits::default())
    }

    /// [`BrowserSink::serve`] with other limits.
    pub fn serve_with(
        addr: SocketAddr,
        classes: &ClassTable,
        limits: BrowserLimits,
    ) -> Result<BrowserSink, SinkError> {
        let fail = |reason: String| SinkError::Serve { addr: format!("http://{addr}"), reason };
        let listener = TcpListener::bind(addr).map_err(|e| {
            fail(match e.kind() {
                io::ErrorKind::AddrInUse => format!(
                    "port {} is in use (another semask-edge?); choose another, e.g. -o http://{}:{}",
                    addr.port(),
                    addr.ip(),
                    addr.port().wrapping_add(1).max(1024)
                ),
                io::ErrorKind::PermissionDenied => format!(
                    "no permission to listen on port {} (ports below 1024 need root); use e.g. port 8080",
                    addr.port()
                ),
                io::ErrorKind::AddrNotAvailable => {
                    format!("{} is not an address of this machine; use 127.0.0.1 or 0.0.0.0", addr.ip())
                }
                _ => e.to_string(),
            })
        })?;
        let addr = listener.local_addr().map_err(|e| fail(e.to_string()))?;
        listener.set_nonblocking(true).map_err(|e| fail(e.to_string()))?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            overlay: Latest::default(),
            jpeg: Latest::default(),
            stats: Latest::default(),
            jpeg_demand: AtomicUsize::new(0),
            jpegs_encoded: Arc::new(AtomicU64::new(0)),
            clients: Mutex::new(Vec::new()),
            limits,
            refused: AtomicU64::new(0),
            page: page(classes),
        });
        let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.into()).spawn(body).map_err(|e| fail(e.to_string()))
        };
        let encoder = {
            let shared = shared.clone();
            spawn("semask-http-jpeg", Box::new(move || encode_loop(&shared)))?
        };
        let acceptor = {
            let shared = shared.clone();
            spawn("semask-http", Box::new(move || accept_loop(listener, &shared)))?
        };
        if addr.ip().is_unspecified() {
            log::warn!("browser view at http://{addr}/ is reachable from other machines");
        }
        log::info!(
            "browser view: open http://{}/ (at most {} connections)",
            display_host(addr),
            limits.max_clients
        );
        Ok(BrowserSink {
            addr,
            shared,
            acceptor: Some(acceptor),
            encoder: Some(encoder),
            fps: FpsMeter::default(),
            counts: Counts::default(),
            last_written: Vec::new(),
            json: Vec::new(),
        })
    }

    /// The address served (with the port chosen when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A live count of the JPEGs encoded (only while clients wait for them), which outlives
    /// the sink: for benchmarks and the allocation test.
    pub fn jpegs_encoded(&self) -> Arc<AtomicU64> {
        self.shared.jpegs_encoded.clone()
    }

    /// Stops the server: every thread ends, every connection is closed.
    fn shut_down(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for handle in [self.acceptor.take(), self.encoder.take()].into_iter().flatten() {
            let _ = handle.join();
        }
    }
}

/// The address to type into a browser (`localhost` for the unspecified address).
fn display_host(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() { format!("localhost:{}", addr.port()) } else { addr.to_string() }
}

impl Sink for BrowserSink {
    fn describe(&self) -> String {
        format!("browser view -> http://{}/", display_host(self.addr))
    }

    fn needs(&self) -> Needs {
        Needs { color: false, overlay: true }
    }

    fn write(&mut self, frame: &Frame) -> Result<(), SinkError> {
        self.shared.overlay.publish(|image| image.copy_from(&frame.overlay));
        Ok(())
    }

    fn record(&mut self, event: &FrameEvent<'_>) -> Result<(), SinkError> {
        let frame = event.frame();
        match frame.status {
            FrameStatus::Ok => {
                self.fps.tick();
                self.counts.written += 1;
            }
            FrameStatus::Failed => self.counts.failed += 1,
            FrameStatus::Dropped => self.counts.dropped += 1,
        }
        if frame.status == FrameStatus::Ok {
            self.last_written.clear();
            super::stats::write_frame_json(&mut self.last_written, frame)
                .expect("writing into a Vec cannot fail");
        }
        let (fps, counts) = (self.fps.fps(), self.counts);
        let json = &mut self.json;
        json.clear();
        write!(
            json,
            "{{\"fps\": {fps:.2}, \"written\": {}, \"failed\": {}, \"dropped\": {}, \"last\": ",
            counts.written, counts.failed, counts.dropped
        )
        .expect("writing into a Vec cannot fail");
        json.extend_from_slice(if self.last_written.is_empty() { b"null" } else { &self.last_written });
        json.push(b'}');
        self.shared.stats.publish(|value| std::mem::swap(value, json));
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.shut_down();
        Ok(())
    }
}

impl Drop for BrowserSink {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Encodes the newest overlay while a client waits for JPEGs.
fn encode_loop(shared: &Shared) {
    let (mut image, mut jpeg, mut done) = (Rgb8Image::default(), Vec::new(), 0u64);
    loop {
        {
            let mut slot = shared.overlay.lock();
            loop {
                if shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                if slot.seq > done && shared.jpeg_demand.load(Ordering::Relaxed) > 0 {
                    break;
                }
                slot = shared.overlay.ready.wait_timeout(slot, POLL).unwrap_or_else(|e| e.into_inner()).0;
            }
            image.copy_from(&slot.value);
            done = slot.seq;
        }
        if let Err(e) = super::jpeg::encode(&image, &mut jpeg) {
            log::warn!("browser view: cannot encode frame {done} as JPEG: {e}");
            continue;
        }
        shared.jpegs_encoded.fetch_add(1, Ordering::Relaxed);
        let seq = done;
        let mut slot = shared.jpeg.lock();
        std::mem::swap(&mut slot.value, &mut jpeg);
        slot.seq = seq;
        drop(slot);
        shared.jpeg.ready.notify_all();
    }
}

/// Takes connections until the run ends, then closes them all.
fn accept_loop(listener: TcpListener, shared: &Arc<Shared>) {
    let mut handlers: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id = 1u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let (socket, peer) = match listener.accept() {
            Ok(connection) => connection,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => {
                log::warn!("browser view: a connection failed: {e}");
                std::thread::sleep(POLL);
                continue;
            }
        };
        handlers.retain(|h| !h.is_finished());
        if let Err(e) = accept(socket, peer, next_id, shared, &mut handlers) {
            log::debug!("browser view: connection from {peer}: {e}");
        }
        next_id += 1;
    }
    // A client blocked in a write wakes with an error when its socket shuts.
    for client in shared.clients().iter() {
        let _ = client.socket.shutdown(std::net::Shutdown::Both);
    }
    for handle in handlers {
        let _ = handle.join();
    }
}

/// Registers a connection and starts its thread, or turns it away when the server is full.
fn accept(
    mut socket: TcpStream,
    peer: SocketAddr,
    id: u64,
    shared: &Arc<Shared>,
    handlers: &mut Vec<JoinHandle<()>>,
) -> io::Result<()> {
    socket.set_nonblocking(false)?;
    socket.set_nodelay(true)?;
    socket.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    socket.set_write_timeout(Some(shared.limits.stall_timeout))?;
    let client = {
        let mut clients = shared.clients();
        let max = shared.limits.max_clients;
        if clients.len() >= max {
            drop(clients);
            shared.refused.fetch_add(1, Ordering::Relaxed);
            log::warn!("browser view: turned away {peer}: {max} connections are being served");
            // Read the request first: closing with it unread would reset the connection, and
            // the client would see an error instead of the answer.
            socket.set_read_timeout(Some(Duration::from_millis(200)))?;
            socket.set_write_timeout(Some(Duration::from_secs(1)))?;
            let _ = read_request(&mut socket);
            return respond(
                &mut socket,
                "503 Service Unavailable",
                "text/plain",
                b"too many viewers; try later\n",
            );
        }
        let client = Arc::new(Client {
            id,
            peer,
            path: Mutex::new(String::new()),
            since: Instant::now(),
            follows: Mutex::new(None),
            sent: AtomicU64::new(0),
            socket: socket.try_clone()?,
        });
        clients.push(client.clone());
        client
    };
    let thread_shared = shared.clone();
    let spawned = std::thread::Builder::new().name(format!("semask-http-{id}")).spawn(move || {
        let result = serve(&mut socket, &client, &thread_shared);
        thread_shared.clients().retain(|c| c.id != client.id);
        let (sent, missed) = (client.sent.load(Ordering::Relaxed), client.missed(&thread_shared));
        let path = client.path.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let why = match result {
            Ok(()) => "done".to_string(),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                format!("stalled for {:?}, disconnected", thread_shared.limits.stall_timeout)
            }
            Err(e) => e.to_string(),
        };
        if sent + missed > 1 {
            log::info!("browser client {peer} {path}: {why}; {sent} frames sent, {missed} missed");
        } else {
            log::debug!("browser client {peer} {path}: {why}");
        }
    });
    match spawned {
        Ok(handle) => handlers.push(handle),
        Err(e) => {
            shared.clients().retain(|c| c.id != id);
            return Err(e);
        }
    }
    Ok(())
}

/// Answers one request.
fn serve(socket: &mut TcpStream, client: &Client, shared: &Shared) -> io::Result<()> {
    let path = match read_request(socket)? {
        Request::Get(path) => path,
        Request::Other(method) => {
            return respond(
                socket,
                "405 Method Not Allowed",
                "text/plain",
                format!("{method}: only GET\n").as_bytes(),
            );
        }
    };
    *client.path.lock().unwrap_or_else(|e| e.into_inner()) = path.clone();
    match path.as_str() {
        "/" | "/index.html" => respond(socket, "200 OK", "text/html; charset=utf-8", shared.page.as_bytes()),
        "/stream.mjpg" => stream_jpegs(socket, client, shared),
        "/events" => stream_stats(socket, client, shared),
        "/frame.jpg" => newest_jpeg(socket, shared),
        "/stats.json" => {
            let latest: serde_json::Value = {
                let slot = shared.stats.lock();
                if slot.seq == 0 { serde_json::Value::Null } else { serde_json::from_slice(&slot.value)? }
            };
            let clients: Vec<serde_json::Value> =
                shared.clients().iter().map(|c| c.to_json(shared)).collect();
            let body = serde_json::json!({
                "latest": latest,
                "clients": clients,
                "max_clients": shared.limits.max_clients,
                "refused": shared.refused.load(Ordering::Relaxed),
                "jpegs_encoded": shared.jpegs_encoded.load(Ordering::Relaxed),
            });
            respond(socket, "200 OK", "application/json", body.to_string().as_bytes())
        }
        _ => respond(socket, "404 Not Found", "text/plain", b"not found; see / for the view\n"),
    }
}

enum Request {
    Get(String),
    Other(String),
}

/// Reads the request head (bounded in size and time) and returns its method and path.
fn read_request(socket: &mut TcpStream) -> io::Result<Request> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > MAX_REQUEST {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "request head too large"));
        }
        let n = socket.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a whole request"));
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let path = target.split(['?', '#']).next().unwrap_or("/").to_string();
    Ok(if method == "GET" { Request::Get(path) } else { Request::Other(method.to_string()) })
}

fn respond(socket: &mut TcpStream, status: &str, content_type: &str, body: &[u8]) -> io::Result<()> {
    write!(
        socket,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    socket.write_all(body)?;
    socket.flush()
}

/// Whether the client closed its end (or the connection broke), seen without reading what it
/// may have sent: a client that left while nothing new came must not hold its slot.
fn peer_left(socket: &TcpStream) -> bool {
    if socket.set_nonblocking(true).is_err() {
        return true;
    }
    let peeked = socket.peek(&mut [0u8; 1]);
    let _ = socket.set_nonblocking(false);
    match peeked {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    }
}

/// Marks a client as waiting for JPEGs while it lives.
struct JpegDemand<'a>(&'a Shared);

impl<'a> JpegDemand<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.jpeg_demand.fetch_add(1, Ordering::Relaxed);
        shared.overlay.ready.notify_all();
        JpegDemand(shared)
    }
}

impl Drop for JpegDemand<'_> {
    fn drop(&mut self) {
        self.0.jpeg_demand.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends the newest frames as a multipart MJPEG stream until the client or the run ends.
fn stream_jpegs(socket: &mut TcpStream, client: &Client, shared: &Shared) -> io::Result<()> {
    socket.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\
          Cache-Control: no-store\r\nConnection: close\r\n\r\n",
    )?;
    let mut jpeg = Vec::new();
    // The newest JPEG at once, if there is one; then each new one.
    let mut last = shared.jpeg.lock().seq.saturating_sub(1);
    client.follow(Follows::Frames, shared.overlay.lock().seq);
    loop {
        // Demand only while waiting: a client stuck in a write (not reading) costs no encoding.
        let demand = JpegDemand::new(shared);
        let Some(slot) = shared.jpeg.wait_newer(last, || shared.stopped() || peer_left(socket)) else {
            break;
        };
        drop(demand);
        last = slot.seq;
        jpeg.clear();
        if jpeg.capacity() < slot.value.len() {
            // With room to spare: JPEG sizes vary from frame to frame.
            jpeg.reserve(slot.value.len() * 3 / 2);
        }
        jpeg.extend_from_slice(&slot.value);
        drop(slot);
        write!(socket, "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", jpeg.len())?;
        socket.write_all(&jpeg)?;
        socket.write_all(b"\r\n")?;
        client.sent.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Sends each new statistics object as a server-sent event until the client or the run ends.
fn stream_stats(socket: &mut TcpStream, client: &Client, shared: &Shared) -> io::Result<()> {
    socket.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
          Connection: close\r\n\r\nretry: 2000\n\n",
    )?;
    let mut event = Vec::new();
    let mut last = shared.stats.lock().seq;
    client.follow(Follows::Stats, last);
    last = last.saturating_sub(1);
    while let Some(slot) = shared.stats.wait_newer(last, || shared.stopped() || peer_left(socket)) {
        last = slot.seq;
        event.clear();
        event.extend_from_slice(b"data: ");
        event.extend_from_slice(&slot.value);
        event.extend_from_slice(b"\n\n");
        drop(slot);
        socket.write_all(&event)?;
        client.sent.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Answers with the newest overlay as JPEG, waiting briefly for one to be encoded.
fn newest_jpeg(socket: &mut TcpStream, shared: &Shared) -> io::Result<()> {
    let _demand = JpegDemand::new(shared);
    let deadline = Instant::now() + Duration::from_secs(5);
    let give_up = || shared.stopped() || Instant::now() >= deadline;
    let Some(frame) = shared.overlay.wait_newer(0, give_up).map(|slot| slot.seq) else {
        return respond(socket, "503 Service Unavailable", "text/plain", b"no frame yet; try again\n");
    };
    let jpeg = match shared.jpeg.wait_newer(frame - 1, give_up) {
        Some(slot) => slot.value.clone(),
        None => {
            return respond(socket, "503 Service Unavailable", "text/plain", b"no frame yet; try again\n");
        }
    };
    respond(socket, "200 OK", "image/jpeg", &jpeg)
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The page: the stream, the legend and the live figures.
fn page(classes: &ClassTable) -> String {
    let legend: String = classes
        .names()
        .iter()
        .zip(classes.palette())
        .map(|(name, [r, g, b])| {
            format!(
                "<li><span class=\"swatch\" style=\"background:rgb({r},{g},{b})\"></span>{}</li>",
                escape(name)
            )
        })
        .collect();
    PAGE.replace("{legend}", &legend)
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>semask-edge live view</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; background: #111; color: #eee; display: flex; flex-wrap: wrap; }
main { flex: 1 1 640px; padding: 8px; }
main img { width: 100%; height: auto; background: #222; display: block; }
aside { flex: 0 0 260px; padding: 8px 12px; }
h1 { font-size: 16px; margin: 4px 0 8px; }
#fps { font-size: 40px; font-weight: bold; }
table { border-collapse: collapse; width: 100%; } td { padding: 1px 4px; } td.ms { text-align: right; font-variant-numeric: tabular-nums; }
ul { list-style: none; padding: 0; margin: 0; columns: 2; } li { white-space: nowrap; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 6px; vertical-align: -1px; border: 1px solid #555; }
#state { color: #f80; }
</style></head>
<body>
<main><img id="view" src="/stream.mjpg" alt="live overlay"></main>
<aside>
<h1>semask-edge</h1>
<div><span id="fps">-</span> FPS</div>
<div id="state">waiting for frames</div>
<table id="stages"></table>
<p id="counts"></p>
<h1>Classes</h1>
<ul>{legend}</ul>
</aside>
<script>
const events = new EventSource('/events');
events.onmessage = (e) => {
  const s = JSON.parse(e.data);
  document.getElementById('counts').textContent = s.written + ' written, ' + s.dropped + ' dropped, ' + s.failed + ' failed';
  if (!s.last) return;
  document.getElementById('fps').textContent = s.fps.toFixed(1);
  document.getElementById('state').textContent = 'frame ' + s.last.frame + ' (' + s.last.source + ')';
  const rows = Object.entries(s.last.stages_ms).map(([k, v]) => '<tr><td>' + k + '</td><td class="ms">' + v.toFixed(1) + ' ms</td></tr>');
  rows.push('<tr><td><b>end to end</b></td><td class="ms"><b>' + s.last.end_to_end_ms.toFixed(1) + ' ms</b></td></tr>');
  document.getElementById('stages').innerHTML = rows.join('');
};
events.onerror = () => { document.getElementById('state').textContent = 'disconnected: the run ended or the server is unreachable'; };
</script>
</body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_class_names_and_shows_their_colours() {
        let classes = ClassTable::new(vec!["a<b".into(), "car".into()], vec![[1, 2, 3], [4, 5, 6]]).unwrap();
        let page = page(&classes);
        assert!(page.contains("a&lt;b") && !page.contains("a<b"));
        assert!(page.contains("rgb(4,5,6)\"></span>car"));
        assert!(page.contains("/stream.mjpg") && page.contains("/events"));
    }
}
