//! A speed peer in another process (onnxruntime, PyTorch), driven over stdin/stdout so that a
//! bench can interleave rounds of ours and theirs on the same machine state. Shared by the
//! benches of both crates (`#[path]` include).
//!
//! Protocol: the peer prints one JSON line with `"ready": true` when loaded; then answers each
//! request line (e.g. `run 10`, `train 3`) with one JSON line `{"times_ms": [...]}`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

pub struct Peer {
    name: String,
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    /// The peer's `ready` line (versions, threads).
    pub hello: serde_json::Value,
}

impl Peer {
    /// Starts `command` and waits for its `ready` line. `name` is for messages.
    pub fn start(name: &str, mut command: Command) -> Peer {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {name} peer {command:?}: {e}"));
        let input = child.stdin.take().expect("piped stdin");
        let mut output = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        output.read_line(&mut line).unwrap_or_default();
        let hello: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert!(
            hello["ready"] == true,
            "the {name} peer did not start (are its Python packages installed? see the bench's doc): {line:?}"
        );
        Peer { name: name.into(), child, input, output, hello }
    }

    /// Sends `request` and returns the times the peer measured, in ms.
    pub fn times(&mut self, request: &str) -> Vec<f64> {
        writeln!(self.input, "{request}").unwrap_or_else(|e| panic!("{} peer: {e}", self.name));
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("the {} peer failed on {request:?}: {line:?}", self.name));
        v["times_ms"]
            .as_array()
            .unwrap_or_else(|| panic!("the {} peer answered {request:?} with {line:?}", self.name))
            .iter()
            .map(|t| t.as_f64().expect("a number"))
            .collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Closing stdin ends the peer's request loop.
        let _ = self.input.flush();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `p`-th percentile (nearest rank) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The Python interpreter of the peers (`SEMASK_PYTHON`, default `python3`).
pub fn python() -> String {
    std::env::var("SEMASK_PYTHON").unwrap_or_else(|_| "python3".into())
}
