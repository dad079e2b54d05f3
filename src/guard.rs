//! Third-party code that can panic on hostile data runs inside [`catch_panic`]: the `mp4`
//! demuxer (it divides by a timescale read from the file), image decoders, tract's ONNX
//! importer and optimiser. A panic there becomes an error about that one file or frame, and
//! the run goes on or stops cleanly instead of dying with a backtrace.
//!
//! The default panic hook would still print `thread '…' panicked at …` on stderr; while a
//! guard is active on the current thread, the hook installed here keeps the message for the
//! error instead. Panics outside guards (bugs of ours) are printed as before.
//!
//! Panics are not the only way hostile data kills a process: an allocation that fails aborts.
//! Those are prevented by checking declared sizes first ([`crate::limits`]).

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::sync::Once;

thread_local! {
    /// Number of [`catch_panic`] calls active on this thread.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The message of the last panic caught on this thread.
    static MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

fn install_hook() {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            if DEPTH.with(Cell::get) > 0 {
                MESSAGE.with(|m| *m.borrow_mut() = Some(describe(info)));
            } else {
                default(info);
            }
        }));
    });
}

fn describe(info: &PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    match info.location() {
        Some(at) => format!("{text} (at {}:{})", at.file(), at.line()),
        None => text,
    }
}

/// Runs `f`; a panic inside it is returned as `Err(message)`.
///
/// `f` must leave nothing half-updated that the caller reuses after an error: callers drop or
/// reset what `f` touched (a decoder, a buffer) when this fails.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    DEPTH.with(|d| d.set(d.get() + 1));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get() - 1));
    result.map_err(|payload| {
        MESSAGE.with(|m| m.borrow_mut().take()).unwrap_or_else(|| {
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        let divisor = std::hint::black_box(0u64);
        let err = catch_panic(|| 10 / divisor).unwrap_err();
        assert!(err.contains("divide by zero"), "{err}");
        assert_eq!(catch_panic(|| 4 + 1), Ok(5));
        // Nested guards, and the thread is usable afterwards.
        let inner = catch_panic(|| catch_panic(|| panic!("inner")).unwrap_err()).unwrap();
        assert!(inner.contains("inner"), "{inner}");
    }
}
