/* The C API between semask-edge (Rust, src/backend/tensorrt/ffi.rs) and TensorRT (C++).
 *
 * The shim is compiled into the binary but links nothing: it opens libnvinfer, libnvonnxparser,
 * libcudart and libcuda with dlopen when asked (semask_trt_open), so a binary built with the
 * `tensorrt` feature starts on machines without TensorRT or without a GPU and says why.
 *
 * Conventions: functions that can fail return NULL or a non-zero int32_t and write a one-line
 * reason into `error` (`error_len` bytes, always NUL-terminated). Every handle is freed by its
 * own function; an engine must be freed before the semask_trt it came from. Nothing here
 * throws across the boundary.
 *
 * Keep in step with ffi.rs (same order, same types).
 */
#ifndef SEMASK_TRT_SHIM_H
#define SEMASK_TRT_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Severity as TensorRT's ILogger::Severity: 0 internal error, 1 error, 2 warning, 3 info,
 * 4 verbose. May be called from TensorRT's threads. */
typedef void (*semask_trt_log_fn)(void *user, int32_t severity, const char *message);

typedef struct semask_trt semask_trt;
typedef struct semask_trt_engine semask_trt_engine;

/* What was loaded and which GPU is used. */
typedef struct {
    int32_t header_version;       /* NV_TENSORRT_VERSION the shim was compiled with */
    int32_t library_version;      /* getInferLibVersion() of the loaded libnvinfer */
    int32_t parser_available;     /* libnvonnxparser found (needed to build, not to run) */
    int32_t cuda_runtime_version; /* cudaRuntimeGetVersion(), e.g. 12060 */
    int32_t cuda_driver_version;  /* cudaDriverGetVersion() */
    int32_t device;
    char device_name[256];
    int32_t compute_major;
    int32_t compute_minor;
    int32_t integrated;           /* 1: the GPU shares memory with the CPU (Jetson) */
    int32_t dla_cores;
    uint64_t total_memory;
    char nvinfer_path[512];       /* the file dlopen found */
} semask_trt_info;

enum {
    SEMASK_TRT_FP32 = 0,
    SEMASK_TRT_FP16 = 1,
    /* The fp32 graph, kINT8 and an IInt8EntropyCalibrator2 (TensorRT 8.5-10.x). */
    SEMASK_TRT_INT8_CALIBRATED = 2,
    /* A Q/DQ graph (TensorRT 8.5+; the only int8 on 11.x). */
    SEMASK_TRT_INT8_QDQ = 3
};

typedef struct {
    int32_t precision;
    uint64_t workspace_bytes;        /* 0: TensorRT's default */
    int32_t optimization_level;      /* -1: TensorRT's default (3); 0-5 from TensorRT 8.6 */
    int32_t dla_core;                /* -1: GPU only; else this DLA core, GPU fallback on */
    int32_t keep_sensitive_fp32;     /* LayerNorm, Softmax, GELU (Erf) in fp32 under fp16/int8 flags */
    const void *timing_cache;        /* nullable: a serialized timing cache to start from */
    uint64_t timing_cache_len;
    const char *keep_output;         /* nullable: the one network output to keep (others unmarked) */
} semask_trt_build_options;

/* Implicit int8 calibration. TensorRT reads the cache first; when there is none (or it is
 * rejected) it asks for batches and hands back a new cache. */
typedef struct {
    void *user;
    uint64_t input_count; /* floats per batch (1 x 3 x H x W) */
    /* Fills `input` with the next pre-processed frame; 1, or 0 when there is none left. */
    int32_t (*next_batch)(void *user, float *input, uint64_t count);
    /* The cache bytes (NULL: none). Valid until the build ends. */
    const void *(*read_cache)(void *user, uint64_t *len);
    void (*write_cache)(void *user, const void *data, uint64_t len);
} semask_trt_calibrator;

/* Bytes allocated by the shim; free with semask_trt_blob_free. */
typedef struct {
    void *data;
    uint64_t len;
} semask_trt_blob;

/* One input or output of an engine. dtype is nvinfer1::DataType (0 fp32, 1 fp16, 2 int8,
 * 3 int32, ...). */
typedef struct {
    char name[256];
    int32_t is_input;
    int32_t dtype;
    int32_t rank;
    int64_t dims[8];
} semask_trt_tensor;

int32_t semask_trt_header_version(void);

/* Loads the libraries (from `lib_dir` first when not NULL, then the loader's path) and opens
 * CUDA device `device`. */
semask_trt *semask_trt_open(const char *lib_dir, int32_t device, semask_trt_log_fn log, void *user,
                            char *error, size_t error_len);
void semask_trt_close(semask_trt *trt);
void semask_trt_get_info(const semask_trt *trt, semask_trt_info *info);

/* Parses `onnx` (its external data next to `model_path`, nullable) and builds a serialized
 * engine into `engine`; the timing cache after the build goes to `timing_cache`. */
int32_t semask_trt_build(semask_trt *trt, const void *onnx, uint64_t onnx_len, const char *model_path,
                         const semask_trt_build_options *options, const semask_trt_calibrator *calibrator,
                         semask_trt_blob *engine, semask_trt_blob *timing_cache, char *error,
                         size_t error_len);
void semask_trt_blob_free(semask_trt_blob *blob);

/* Deserializes an engine and prepares one execution context, one CUDA stream and the buffers
 * of every input and output (pinned host memory, mapped for zero copy on integrated GPUs). */
semask_trt_engine *semask_trt_engine_load(semask_trt *trt, const void *plan, uint64_t plan_len, char *error,
                                          size_t error_len);
int32_t semask_trt_engine_tensor_count(const semask_trt_engine *engine);
void semask_trt_engine_tensor(const semask_trt_engine *engine, int32_t index, semask_trt_tensor *tensor);
/* The host buffer of tensor `index`: volume x element size bytes, written (inputs) or read
 * (outputs) around semask_trt_engine_run. */
void *semask_trt_engine_host_buffer(const semask_trt_engine *engine, int32_t index);
/* Inputs to the GPU, enqueueV3, outputs back, then waits. `gpu_ms` (nullable): the time
 * between CUDA events around enqueueV3, as trtexec reports it. */
int32_t semask_trt_engine_run(semask_trt_engine *engine, float *gpu_ms, char *error, size_t error_len);
void semask_trt_engine_free(semask_trt_engine *engine);

#ifdef __cplusplus
}
#endif

#endif /* SEMASK_TRT_SHIM_H */
