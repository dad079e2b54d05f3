//! The shim's C API (shim.h) and the Rust types that own its handles: [`Library`] (TensorRT and
//! CUDA loaded, one GPU opened) and [`Engine`] (a deserialized engine with its context, stream
//! and buffers). Every handle is freed by `Drop`, on every path; an [`Engine`] keeps its
//! [`Library`] alive, because TensorRT's runtime must outlive the engines it made.
//!
//! TensorRT's log messages arrive through [`log_message`] and go to `log` at the matching level.

use std::ffi::{CStr, CString, c_char, c_void};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use super::{BuildPrecision, TrtVersion};

/// Opaque shim handles.
#[repr(C)]
struct RawTrt {
    _private: [u8; 0],
}
#[repr(C)]
struct RawEngine {
    _private: [u8; 0],
}

#[repr(C)]
struct RawInfo {
    header_version: i32,
    library_version: i32,
    parser_available: i32,
    cuda_runtime_version: i32,
    cuda_driver_version: i32,
    device: i32,
    device_name: [c_char; 256],
    compute_major: i32,
    compute_minor: i32,
    integrated: i32,
    dla_cores: i32,
    total_memory: u64,
    nvinfer_path: [c_char; 512],
}

#[repr(C)]
struct RawBuildOptions {
    precision: i32,
    workspace_bytes: u64,
    optimization_level: i32,
    dla_core: i32,
    keep_sensitive_fp32: i32,
    timing_cache: *const c_void,
    timing_cache_len: u64,
    keep_output: *const c_char,
}

#[repr(C)]
struct RawCalibrator {
    user: *mut c_void,
    input_count: u64,
    next_batch: extern "C" fn(*mut c_void, *mut f32, u64) -> i32,
    read_cache: extern "C" fn(*mut c_void, *mut u64) -> *const c_void,
    write_cache: extern "C" fn(*mut c_void, *const c_void, u64),
}

#[repr(C)]
struct RawBlob {
    data: *mut c_void,
    len: u64,
}

#[repr(C)]
struct RawTensor {
    name: [c_char; 256],
    is_input: i32,
    dtype: i32,
    rank: i32,
    dims: [i64; 8],
}

type LogFn = extern "C" fn(*mut c_void, i32, *const c_char);

unsafe extern "C" {
    fn semask_trt_header_version() -> i32;
    fn semask_trt_open(
        lib_dir: *const c_char,
        device: i32,
        log: LogFn,
        user: *mut c_void,
        error: *mut c_char,
        error_len: usize,
    ) -> *mut RawTrt;
    fn semask_trt_close(trt: *mut RawTrt);
    fn semask_trt_get_info(trt: *const RawTrt, info: *mut RawInfo);
    fn semask_trt_build(
        trt: *mut RawTrt,
        onnx: *const c_void,
        onnx_len: u64,
        model_path: *const c_char,
        options: *const RawBuildOptions,
        calibrator: *const RawCalibrator,
        engine: *mut RawBlob,
        timing_cache: *mut RawBlob,
        error: *mut c_char,
        error_len: usize,
    ) -> i32;
    fn semask_trt_blob_free(blob: *mut RawBlob);
    fn semask_trt_engine_load(
        trt: *mut RawTrt,
        plan: *const c_void,
        plan_len: u64,
        error: *mut c_char,
        error_len: usize,
    ) -> *mut RawEngine;
    fn semask_trt_engine_tensor_count(engine: *const RawEngine) -> i32;
    fn semask_trt_engine_tensor(engine: *const RawEngine, index: i32, tensor: *mut RawTensor);
    fn semask_trt_engine_host_buffer(engine: *const RawEngine, index: i32) -> *mut c_void;
    fn semask_trt_engine_run(
        engine: *mut RawEngine,
        gpu_ms: *mut f32,
        error: *mut c_char,
        error_len: usize,
    ) -> i32;
    fn semask_trt_engine_free(engine: *mut RawEngine);
}

/// A buffer the shim writes a one-line reason into.
struct ErrorBuffer([c_char; 1024]);

impl ErrorBuffer {
    fn new() -> Self {
        ErrorBuffer([0; 1024])
    }

    fn ptr(&mut self) -> *mut c_char {
        self.0.as_mut_ptr()
    }

    fn message(&self) -> String {
        fixed_str(&self.0)
    }
}

/// A NUL-terminated string in a fixed C array (the shim always terminates it).
fn fixed_str(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// TensorRT's `ILogger` messages, into `log` (target `tensorrt`).
extern "C" fn log_message(_user: *mut c_void, severity: i32, message: *const c_char) {
    if message.is_null() {
        return;
    }
    // SAFETY: TensorRT passes a NUL-terminated string valid for the duration of the call.
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy();
    let level = match severity {
        0 | 1 => log::Level::Error,
        2 => log::Level::Warn,
        3 => log::Level::Info,
        _ => log::Level::Debug,
    };
    log::log!(target: "tensorrt", level, "TensorRT: {text}");
}

/// The TensorRT headers this binary was built with.
pub fn header_version() -> TrtVersion {
    // SAFETY: no arguments, returns a constant.
    TrtVersion::from_int(unsafe { semask_trt_header_version() })
}

/// What was loaded, and the GPU.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrtInfo {
    pub headers: TrtVersion,
    pub library: TrtVersion,
    pub library_path: String,
    pub onnx_parser: bool,
    pub cuda_runtime: i32,
    pub cuda_driver: i32,
    pub device: i32,
    pub gpu: String,
    pub compute_capability: (i32, i32),
    /// The GPU shares memory with the CPU (Jetson): buffers are mapped, not copied.
    pub integrated: bool,
    pub dla_cores: i32,
    pub total_memory: u64,
}

/// TensorRT and CUDA, loaded, with one GPU opened.
pub struct Library {
    raw: NonNull<RawTrt>,
    info: TrtInfo,
    /// The shim's builder and runtime calls are made one at a time.
    lock: Mutex<()>,
}

// SAFETY: the handle is an owned heap object of the shim that no other code refers to; every
// call through it takes `lock`, so TensorRT never sees two calls at once from this process.
unsafe impl Send for Library {}
// SAFETY: as above, shared access is serialised by `lock`.
unsafe impl Sync for Library {}

/// Builder settings, as the shim takes them.
#[derive(Debug, Clone)]
pub struct BuildRequest<'a> {
    pub precision: BuildPrecision,
    pub workspace_bytes: u64,
    pub optimization_level: Option<u32>,
    pub dla_core: Option<u32>,
    pub keep_sensitive_fp32: bool,
    pub timing_cache: Option<&'a [u8]>,
    pub keep_output: &'a str,
}

/// Where an implicit int8 build gets its frames and its cache.
pub trait CalibrationFeed {
    /// Floats per frame (1 x 3 x H x W).
    fn input_count(&self) -> usize;
    /// Fills `input` with the next frame; false when there are no more.
    fn next_batch(&mut self, input: &mut [f32]) -> bool;
    /// The cache TensorRT should use, if one fits.
    fn cache(&self) -> Option<&[u8]>;
    /// The cache TensorRT wrote after calibrating.
    fn store_cache(&mut self, bytes: &[u8]);
}

/// `*mut c_void` in the calibrator callbacks.
struct FeedRef<'a>(&'a mut dyn CalibrationFeed);

extern "C" fn feed_next_batch(user: *mut c_void, input: *mut f32, count: u64) -> i32 {
    // SAFETY: `user` is the `FeedRef` that `Library::build` keeps alive for the whole build, and
    // `input` points to `count` floats owned by the shim's calibrator for this call.
    let (feed, input) =
        unsafe { (&mut *(user as *mut FeedRef<'_>), std::slice::from_raw_parts_mut(input, count as usize)) };
    // A panic must not unwind into C++.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| feed.0.next_batch(input))).unwrap_or(false)
        as i32
}

extern "C" fn feed_read_cache(user: *mut c_void, len: *mut u64) -> *const c_void {
    // SAFETY: as in `feed_next_batch`; `len` is the shim's out-parameter.
    let feed = unsafe { &*(user as *const FeedRef<'_>) };
    match feed.0.cache() {
        Some(bytes) => {
            // SAFETY: `len` is valid for a write; the bytes outlive the build (owned by the feed).
            unsafe { *len = bytes.len() as u64 };
            bytes.as_ptr() as *const c_void
        }
        None => {
            // SAFETY: as above.
            unsafe { *len = 0 };
            std::ptr::null()
        }
    }
}

extern "C" fn feed_write_cache(user: *mut c_void, data: *const c_void, len: u64) {
    // SAFETY: as in `feed_next_batch`; `data` holds `len` bytes for the duration of the call.
    let (feed, bytes) = unsafe {
        (&mut *(user as *mut FeedRef<'_>), std::slice::from_raw_parts(data as *const u8, len as usize))
    };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| feed.0.store_cache(bytes)));
}

/// Takes a shim blob's bytes and frees it.
fn take_blob(mut blob: RawBlob) -> Vec<u8> {
    let bytes = if blob.data.is_null() {
        Vec::new()
    } else {
        // SAFETY: the shim allocated `len` bytes at `data`.
        unsafe { std::slice::from_raw_parts(blob.data as *const u8, blob.len as usize) }.to_vec()
    };
    // SAFETY: the blob came from the shim and is freed once.
    unsafe { semask_trt_blob_free(&mut blob) };
    bytes
}

impl Library {
    /// Loads TensorRT (from `lib_dir` first, then the loader's path) and opens CUDA device
    /// `device`. `Err` says why TensorRT cannot be used here.
    pub fn open(lib_dir: Option<&Path>, device: i32) -> Result<Library, String> {
        let dir = match lib_dir {
            Some(d) => {
                Some(CString::new(d.as_os_str().as_encoded_bytes()).map_err(|_| "NUL in TENSORRT_LIB_DIR")?)
            }
            None => None,
        };
        let mut error = ErrorBuffer::new();
        // SAFETY: every pointer is valid for the call (`dir` outlives it, the error buffer has
        // its stated length), and `log_message` matches the callback type.
        let raw = unsafe {
            semask_trt_open(
                dir.as_ref().map_or(std::ptr::null(), |d| d.as_ptr()),
                device,
                log_message,
                std::ptr::null_mut(),
                error.ptr(),
                1024,
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| error.message())?;
        let mut info = std::mem::MaybeUninit::<RawInfo>::uninit();
        // SAFETY: `raw` is a live handle; the shim fills the whole struct.
        let info = unsafe {
            semask_trt_get_info(raw.as_ptr(), info.as_mut_ptr());
            info.assume_init()
        };
        let info = TrtInfo {
            headers: TrtVersion::from_int(info.header_version),
            library: TrtVersion::from_int(info.library_version),
            library_path: fixed_str(&info.nvinfer_path),
            onnx_parser: info.parser_available != 0,
            cuda_runtime: info.cuda_runtime_version,
            cuda_driver: info.cuda_driver_version,
            device: info.device,
            gpu: fixed_str(&info.device_name),
            compute_capability: (info.compute_major, info.compute_minor),
            integrated: info.integrated != 0,
            dla_cores: info.dla_cores,
            total_memory: info.total_memory,
        };
        Ok(Library { raw, info, lock: Mutex::new(()) })
    }

    pub fn info(&self) -> &TrtInfo {
        &self.info
    }

    /// Builds a serialized engine from ONNX bytes (`model_path` locates external data). Returns
    /// the engine and the timing cache after the build.
    pub fn build(
        &self,
        onnx: &[u8],
        model_path: Option<&Path>,
        request: &BuildRequest<'_>,
        feed: Option<&mut dyn CalibrationFeed>,
    ) -> Result<(Vec<u8>, Vec<u8>), String> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let model_path = model_path
            .map(|p| {
                CString::new(p.as_os_str().as_encoded_bytes())
                    .map_err(|_| "NUL in the model path".to_string())
            })
            .transpose()?;
        let keep_output = CString::new(request.keep_output).map_err(|_| "NUL in the output name")?;
        let options = RawBuildOptions {
            precision: request.precision as i32,
            workspace_bytes: request.workspace_bytes,
            optimization_level: request.optimization_level.map_or(-1, |l| l as i32),
            dla_core: request.dla_core.map_or(-1, |c| c as i32),
            keep_sensitive_fp32: request.keep_sensitive_fp32 as i32,
            timing_cache: request.timing_cache.map_or(std::ptr::null(), |c| c.as_ptr() as *const c_void),
            timing_cache_len: request.timing_cache.map_or(0, |c| c.len() as u64),
            keep_output: keep_output.as_ptr(),
        };
        let mut feed_ref = feed.map(FeedRef);
        let calibrator = feed_ref.as_mut().map(|f| RawCalibrator {
            input_count: f.0.input_count() as u64,
            user: f as *mut FeedRef<'_> as *mut c_void,
            next_batch: feed_next_batch,
            read_cache: feed_read_cache,
            write_cache: feed_write_cache,
        });
        let (mut engine, mut timing) =
            (RawBlob { data: std::ptr::null_mut(), len: 0 }, RawBlob { data: std::ptr::null_mut(), len: 0 });
        let mut error = ErrorBuffer::new();
        // SAFETY: all pointers are valid for the call: `onnx`, the C strings, `options`, the
        // calibrator and its `user` (the feed outlives the call), the out-blobs and the error
        // buffer of its stated length; `self.raw` is live.
        let status = unsafe {
            semask_trt_build(
                self.raw.as_ptr(),
                onnx.as_ptr() as *const c_void,
                onnx.len() as u64,
                model_path.as_ref().map_or(std::ptr::null(), |p| p.as_ptr()),
                &options,
                calibrator.as_ref().map_or(std::ptr::null(), |c| c as *const RawCalibrator),
                &mut engine,
                &mut timing,
                error.ptr(),
                1024,
            )
        };
        let (engine, timing) = (take_blob(engine), take_blob(timing));
        if status != 0 {
            return Err(error.message());
        }
        Ok((engine, timing))
    }

    /// Deserializes `plan` and prepares it to run.
    pub fn load(self: &Arc<Self>, plan: &[u8]) -> Result<Engine, String> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut error = ErrorBuffer::new();
        // SAFETY: `plan` is valid for the call, `self.raw` is live, the buffer has its length.
        let raw = unsafe {
            semask_trt_engine_load(
                self.raw.as_ptr(),
                plan.as_ptr() as *const c_void,
                plan.len() as u64,
                error.ptr(),
                1024,
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| error.message())?;
        // SAFETY: `raw` is a live engine; indices are below the count it reports.
        let tensors = unsafe {
            (0..semask_trt_engine_tensor_count(raw.as_ptr()))
                .map(|i| {
                    let mut t = std::mem::MaybeUninit::<RawTensor>::uninit();
                    semask_trt_engine_tensor(raw.as_ptr(), i, t.as_mut_ptr());
                    let t = t.assume_init();
                    TensorDesc {
                        name: fixed_str(&t.name),
                        is_input: t.is_input != 0,
                        dtype: DataType::from_raw(t.dtype),
                        dims: t.dims[..t.rank.clamp(0, 8) as usize].to_vec(),
                    }
                })
                .collect()
        };
        Ok(Engine { raw, tensors, _library: Arc::clone(self) })
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        // SAFETY: the handle is live and freed once; engines hold an Arc, so none is left.
        unsafe { semask_trt_close(self.raw.as_ptr()) };
    }
}

/// Element types engines exchange with the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    F32,
    F16,
    /// Another type (`nvinfer1::DataType` value).
    Other(i32),
}

impl DataType {
    fn from_raw(v: i32) -> DataType {
        match v {
            0 => DataType::F32,
            1 => DataType::F16,
            other => DataType::Other(other),
        }
    }
}

/// An input or output of an engine.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorDesc {
    pub name: String,
    pub is_input: bool,
    pub dtype: DataType,
    pub dims: Vec<i64>,
}

/// A deserialized engine, ready to run.
pub struct Engine {
    raw: NonNull<RawEngine>,
    tensors: Vec<TensorDesc>,
    _library: Arc<Library>,
}

// SAFETY: the engine's CUDA stream, buffers and TensorRT context belong to the process; the shim
// selects the device on every call, so the engine may move to another thread. It is used
// through `&mut self` only, one call at a time.
unsafe impl Send for Engine {}

impl Engine {
    pub fn tensors(&self) -> &[TensorDesc] {
        &self.tensors
    }

    /// The pinned host buffer of tensor `index`: the same address for the engine's whole life.
    /// Writing through it while a run is in flight is the caller's to avoid (runs are
    /// synchronous, so holding `&mut` of the owner suffices).
    pub fn host_buffer(&self, index: usize) -> *mut u8 {
        assert!(index < self.tensors.len(), "tensor index out of range");
        // SAFETY: live engine, index checked; the shim only reads its table.
        unsafe { semask_trt_engine_host_buffer(self.raw.as_ptr(), index as i32) as *mut u8 }
    }

    /// Runs once (inputs from their host buffers, outputs to theirs); returns the GPU time of
    /// `enqueueV3` in milliseconds, measured with CUDA events.
    pub fn run(&mut self) -> Result<f32, String> {
        let mut gpu_ms = 0f32;
        let mut error = ErrorBuffer::new();
        // SAFETY: live engine, valid out-pointers.
        let status = unsafe { semask_trt_engine_run(self.raw.as_ptr(), &mut gpu_ms, error.ptr(), 1024) };
        if status != 0 { Err(error.message()) } else { Ok(gpu_ms) }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // SAFETY: the handle is live and freed once, before the library (held by `_library`).
        unsafe { semask_trt_engine_free(self.raw.as_ptr()) };
    }
}
