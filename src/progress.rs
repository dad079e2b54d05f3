//! The progress bar of every long command of both binaries (`run`, `bench`, `semask-train
//! train/eval/quantize`): one style, on stderr, hidden when stderr is not a terminal so that
//! logs and pipes stay clean. Library functions do not take a bar: they take a callback per
//! step, and the binaries tick a bar from it.

use std::io::IsTerminal;

/// A bar counting `unit`s up to `len` (a spinner-like counter when the length is unknown),
/// or a hidden one when `visible` is false or stderr is not a terminal.
pub fn bar(len: Option<u64>, unit: &str, visible: bool) -> indicatif::ProgressBar {
    if !visible || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::no_length(),
    };
    let template = format!("{{bar:40}} {{pos}}/{{len}} {unit}, {{per_sec}}, eta {{eta}} {{msg}}");
    bar.set_style(
        indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
