//! Paths to the shared fixtures and the Python reference scripts, for the tests of every crate
//! in the workspace (the training crate includes this file with `#[path]`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root: the first folder at or above this crate holding `tests/reference/`.
pub fn workspace_root() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .find(|dir| dir.join("tests/reference").is_dir())
        .unwrap_or_else(|| panic!("no tests/reference/ at or above {}", crate_dir.display()))
        .to_path_buf()
}

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    workspace_root().join("tests/fixtures").join(rel)
}

/// The Python interpreter with the test requirements (`SEMASK_PYTHON`, default `python3`).
pub fn python() -> String {
    std::env::var("SEMASK_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs `tests/reference/<script>` with `args`; panics with the fix when the Python
/// requirements are missing.
pub fn run_reference(script: &str, args: &[&str]) -> String {
    let path = workspace_root().join("tests/reference").join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (set SEMASK_PYTHON?): {e}", python()));
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("ModuleNotFoundError") {
        panic!(
            "the Python reference needs its packages: python3 -m pip install -r tests/requirements.txt\n{err}"
        );
    }
    assert!(out.status.success(), "{script} failed:\n{err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
