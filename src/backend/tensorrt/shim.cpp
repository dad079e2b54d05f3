// TensorRT behind the small C API of shim.h, for TensorRT 8.5, 8.6, 10.x and 11.x.
//
// Nothing here is linked against TensorRT or CUDA: the libraries are opened with dlopen and
// their few C entry points (createInferBuilder_INTERNAL, createInferRuntime_INTERNAL,
// getInferLibVersion, createNvOnnxParser_INTERNAL, the CUDA runtime) are called through
// pointers from dlsym. Everything else in TensorRT's API is virtual calls on the objects those
// return, which need the headers only. So the header's inline helpers that call the entry points
// directly (nvinfer1::createInferBuilder, ...) must never be used here: `nm -u` on the object
// lists no TensorRT or CUDA symbol (scripts/check-tensorrt.sh checks it).
//
// Version differences are each one #if on NV_TENSORRT_MAJOR/MINOR, commented with the version
// that made the change.

#include "shim.h"

#include <NvInfer.h>
#include <NvInferVersion.h>
#include <NvOnnxParser.h>
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#if NV_TENSORRT_MAJOR < 8 || (NV_TENSORRT_MAJOR == 8 && NV_TENSORRT_MINOR < 5)
#error "semask-edge needs TensorRT 8.5 or newer (the named-tensor API and enqueueV3 arrived in 8.5)"
#endif

using namespace nvinfer1;

namespace {

void set_error(char *error, size_t error_len, const char *format, ...) {
    if (error == nullptr || error_len == 0) return;
    va_list args;
    va_start(args, format);
    std::vsnprintf(error, error_len, format, args);
    va_end(args);
}

// TensorRT's version integer: major*1000+minor*100+patch up to 9.x, major*10000+... from 10.0.
struct Version {
    int major, minor, patch;
    static Version from_int(int v) {
        if (v >= 10000) return {v / 10000, (v / 100) % 100, v % 100};
        return {v / 1000, (v / 100) % 10, v % 100};
    }
};

class Logger : public ILogger {
  public:
    Logger(semask_trt_log_fn fn, void *user) : fn_(fn), user_(user) {}
    void log(Severity severity, AsciiChar const *msg) noexcept override {
        if (fn_ != nullptr) fn_(user_, static_cast<int32_t>(severity), msg);
    }

  private:
    semask_trt_log_fn fn_;
    void *user_;
};

// Entry points found with dlsym.
struct Api {
    void *(*create_builder)(void *, int32_t) = nullptr;
    void *(*create_runtime)(void *, int32_t) = nullptr;
    int32_t (*lib_version)() = nullptr;
    void *(*create_parser)(void *, void *, int) = nullptr;

    decltype(&::cudaGetDeviceCount) cudaGetDeviceCount = nullptr;
    decltype(&::cudaSetDevice) cudaSetDevice = nullptr;
    decltype(&::cudaDeviceGetAttribute) cudaDeviceGetAttribute = nullptr;
    decltype(&::cudaMalloc) cudaMalloc = nullptr;
    decltype(&::cudaFree) cudaFree = nullptr;
    decltype(&::cudaHostAlloc) cudaHostAlloc = nullptr;
    decltype(&::cudaFreeHost) cudaFreeHost = nullptr;
    decltype(&::cudaHostGetDevicePointer) cudaHostGetDevicePointer = nullptr;
    decltype(&::cudaStreamCreate) cudaStreamCreate = nullptr;
    decltype(&::cudaStreamDestroy) cudaStreamDestroy = nullptr;
    decltype(&::cudaStreamSynchronize) cudaStreamSynchronize = nullptr;
    decltype(&::cudaMemcpyAsync) cudaMemcpyAsync = nullptr;
    decltype(&::cudaMemcpy) cudaMemcpy = nullptr;
    decltype(&::cudaEventCreate) cudaEventCreate = nullptr;
    decltype(&::cudaEventDestroy) cudaEventDestroy = nullptr;
    decltype(&::cudaEventRecord) cudaEventRecord = nullptr;
    decltype(&::cudaEventElapsedTime) cudaEventElapsedTime = nullptr;
    decltype(&::cudaGetErrorString) cudaGetErrorString = nullptr;
    decltype(&::cudaRuntimeGetVersion) cudaRuntimeGetVersion = nullptr;
    decltype(&::cudaDriverGetVersion) cudaDriverGetVersion = nullptr;

    // Driver API, for the device name and memory (cudaGetDeviceProperties changed its struct
    // and symbol with CUDA 12; these have not changed).
    CUresult (*cuInit)(unsigned int) = nullptr;
    CUresult (*cuDeviceGet)(CUdevice *, int) = nullptr;
    CUresult (*cuDeviceGetName)(char *, int, CUdevice) = nullptr;
    CUresult (*cuDeviceTotalMem)(size_t *, CUdevice) = nullptr;
};

// dlopen of the first of `names` that loads, from `dir` first; the path found goes to `found`.
// When none loads, `why` gets dlerror() of the first name on the loader's path.
void *open_first(const char *dir, const std::vector<std::string> &names, std::string *found, std::string *why) {
    for (int pass = 0; pass < 2; ++pass) {
        if (pass == 0 && (dir == nullptr || dir[0] == '\0')) continue;
        for (const std::string &name : names) {
            std::string path = pass == 0 ? std::string(dir) + "/" + name : name;
            void *handle = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
            if (handle != nullptr) {
                if (found != nullptr) *found = path;
                return handle;
            }
            const char *reason = dlerror();
            if (why != nullptr && why->empty() && reason != nullptr && (pass == 1 || name == names.front())) {
                *why = reason;
            }
        }
    }
    return nullptr;
}

// "not found" when the loader has no such file, else what stopped it (a missing dependency).
std::string load_failure(const std::string &name, const std::string &why) {
    if (why.find("No such file") != std::string::npos || why.empty()) return name + " not found";
    return name + " cannot be loaded (" + why + ")";
}

template <typename F> bool bind(void *lib, const char *name, F *out) {
    *out = reinterpret_cast<F>(dlsym(lib, name));
    return *out != nullptr;
}

struct Libraries {
    void *nvinfer = nullptr;
    void *parser = nullptr;
    void *cudart = nullptr;
    void *cuda = nullptr;
    ~Libraries() {
        // The CUDA runtime and TensorRT keep global state past their last object: unloading
        // them while the process runs has crashed at exit on some drivers, so they stay
        // mapped. The handles only count references.
    }
};

// Element size of a TensorRT data type (0 for types this runtime does not exchange).
size_t element_size(DataType type) {
    switch (type) {
    case DataType::kFLOAT:
    case DataType::kINT32:
        return 4;
    case DataType::kHALF:
        return 2;
    case DataType::kINT8:
    case DataType::kBOOL:
    case DataType::kUINT8:
        return 1;
    default:
        return 0;
    }
}

}  // namespace

struct semask_trt {
    Api api;
    Libraries libs;
    std::unique_ptr<Logger> logger;
    std::unique_ptr<IRuntime> runtime;
    semask_trt_info info{};

    // "cudaErrorNoDevice: no CUDA-capable device is detected"
    std::string cuda_error(cudaError_t status) const {
        return api.cudaGetErrorString != nullptr ? api.cudaGetErrorString(status) : "unknown CUDA error";
    }
};

extern "C" int32_t semask_trt_header_version(void) { return NV_TENSORRT_VERSION; }

extern "C" semask_trt *semask_trt_open(const char *lib_dir, int32_t device, semask_trt_log_fn log, void *user,
                                       char *error, size_t error_len) {
    try {
        auto trt = std::make_unique<semask_trt>();
        Api &api = trt->api;
        std::string found, why;
        const std::string major = std::to_string(NV_TENSORRT_MAJOR);

        // TensorRT first (is it installed at all?), then the CUDA runtime and the driver.
        trt->libs.nvinfer = open_first(lib_dir, {"libnvinfer.so." + major, "libnvinfer.so"}, &found, &why);
        if (trt->libs.nvinfer == nullptr) {
            set_error(error, error_len,
                      "%s (TensorRT %d.x, which this binary was built for); set TENSORRT_LIB_DIR or LD_LIBRARY_PATH",
                      load_failure("libnvinfer.so." + major, why).c_str(), NV_TENSORRT_MAJOR);
            return nullptr;
        }
        std::snprintf(trt->info.nvinfer_path, sizeof(trt->info.nvinfer_path), "%s", found.c_str());
        trt->libs.parser = open_first(lib_dir, {"libnvonnxparser.so." + major, "libnvonnxparser.so"}, nullptr, nullptr);
        bool ok = bind(trt->libs.nvinfer, "createInferBuilder_INTERNAL", &api.create_builder) &&
                  bind(trt->libs.nvinfer, "createInferRuntime_INTERNAL", &api.create_runtime) &&
                  bind(trt->libs.nvinfer, "getInferLibVersion", &api.lib_version);
        if (!ok) {
            set_error(error, error_len, "%s lacks TensorRT's entry points (%s)", found.c_str(), dlerror());
            return nullptr;
        }
        if (trt->libs.parser != nullptr && !bind(trt->libs.parser, "createNvOnnxParser_INTERNAL", &api.create_parser)) {
            trt->libs.parser = nullptr;
        }
        // The library must be the major version of these headers (TensorRT's ABI), and 8.5+.
        semask_trt_info &info = trt->info;
        info.header_version = NV_TENSORRT_VERSION;
        info.library_version = api.lib_version();
        info.parser_available = api.create_parser != nullptr;
        Version lib = Version::from_int(info.library_version);
        if (lib.major < 8 || (lib.major == 8 && lib.minor < 5)) {
            set_error(error, error_len, "TensorRT %d.%d is older than 8.5 (%s)", lib.major, lib.minor, found.c_str());
            return nullptr;
        }
        if (lib.major != NV_TENSORRT_MAJOR) {
            set_error(error, error_len,
                      "%s is TensorRT %d.%d.%d, but this binary was built with TensorRT %d.%d headers; rebuild "
                      "with TENSORRT_ROOT pointing at the installed version",
                      found.c_str(), lib.major, lib.minor, lib.patch, NV_TENSORRT_MAJOR, NV_TENSORRT_MINOR);
            return nullptr;
        }

        why.clear();
        trt->libs.cudart = open_first(
            lib_dir, {"libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so"}, nullptr, &why);
        if (trt->libs.cudart == nullptr) {
            set_error(error, error_len,
                      "the CUDA runtime (libcudart.so.13, .12 or .11.0) was not found; add its folder to "
                      "LD_LIBRARY_PATH");
            return nullptr;
        }
        why.clear();
        trt->libs.cuda = open_first(lib_dir, {"libcuda.so.1", "libcuda.so"}, nullptr, &why);
        if (trt->libs.cuda == nullptr) {
            set_error(error, error_len, "no NVIDIA driver: %s", load_failure("libcuda.so.1", why).c_str());
            return nullptr;
        }
        void *rt = trt->libs.cudart;
        ok = bind(rt, "cudaGetDeviceCount", &api.cudaGetDeviceCount) && bind(rt, "cudaSetDevice", &api.cudaSetDevice) &&
             bind(rt, "cudaDeviceGetAttribute", &api.cudaDeviceGetAttribute) &&
             bind(rt, "cudaMalloc", &api.cudaMalloc) && bind(rt, "cudaFree", &api.cudaFree) &&
             bind(rt, "cudaHostAlloc", &api.cudaHostAlloc) && bind(rt, "cudaFreeHost", &api.cudaFreeHost) &&
             bind(rt, "cudaHostGetDevicePointer", &api.cudaHostGetDevicePointer) &&
             bind(rt, "cudaStreamCreate", &api.cudaStreamCreate) &&
             bind(rt, "cudaStreamDestroy", &api.cudaStreamDestroy) &&
             bind(rt, "cudaStreamSynchronize", &api.cudaStreamSynchronize) &&
             bind(rt, "cudaMemcpyAsync", &api.cudaMemcpyAsync) && bind(rt, "cudaMemcpy", &api.cudaMemcpy) &&
             bind(rt, "cudaEventCreate", &api.cudaEventCreate) &&
             bind(rt, "cudaEventDestroy", &api.cudaEventDestroy) && bind(rt, "cudaEventRecord", &api.cudaEventRecord) &&
             bind(rt, "cudaEventElapsedTime", &api.cudaEventElapsedTime) &&
             bind(rt, "cudaGetErrorString", &api.cudaGetErrorString) &&
             bind(rt, "cudaRuntimeGetVersion", &api.cudaRuntimeGetVersion) &&
             bind(rt, "cudaDriverGetVersion", &api.cudaDriverGetVersion);
        if (!ok) {
            set_error(error, error_len, "the CUDA runtime lacks an entry point (%s)", dlerror());
            return nullptr;
        }
        void *drv = trt->libs.cuda;
        ok = bind(drv, "cuInit", &api.cuInit) && bind(drv, "cuDeviceGet", &api.cuDeviceGet) &&
             bind(drv, "cuDeviceGetName", &api.cuDeviceGetName) && bind(drv, "cuDeviceTotalMem_v2", &api.cuDeviceTotalMem);
        if (!ok) {
            set_error(error, error_len, "libcuda.so.1 lacks an entry point (%s)", dlerror());
            return nullptr;
        }

        int count = 0;
        cudaError_t status = api.cudaGetDeviceCount(&count);
        if (status != cudaSuccess || count == 0) {
            set_error(error, error_len, "no CUDA device (%s)",
                      status != cudaSuccess ? trt->cuda_error(status).c_str() : "cudaGetDeviceCount found 0");
            return nullptr;
        }
        if (device < 0 || device >= count) {
            set_error(error, error_len, "CUDA device %d does not exist (this machine has %d)", device, count);
            return nullptr;
        }
        status = api.cudaSetDevice(device);
        if (status != cudaSuccess) {
            set_error(error, error_len, "cannot use CUDA device %d: %s", device, trt->cuda_error(status).c_str());
            return nullptr;
        }
        info.device = device;
        api.cudaRuntimeGetVersion(&info.cuda_runtime_version);
        api.cudaDriverGetVersion(&info.cuda_driver_version);
        api.cudaDeviceGetAttribute(&info.compute_major, cudaDevAttrComputeCapabilityMajor, device);
        api.cudaDeviceGetAttribute(&info.compute_minor, cudaDevAttrComputeCapabilityMinor, device);
        api.cudaDeviceGetAttribute(&info.integrated, cudaDevAttrIntegrated, device);
        CUdevice cu_device = 0;
        size_t total = 0;
        if (api.cuInit(0) == CUDA_SUCCESS && api.cuDeviceGet(&cu_device, device) == CUDA_SUCCESS) {
            api.cuDeviceGetName(info.device_name, sizeof(info.device_name), cu_device);
            api.cuDeviceTotalMem(&total, cu_device);
        }
        info.total_memory = total;

        trt->logger = std::make_unique<Logger>(log, user);
        trt->runtime.reset(static_cast<IRuntime *>(api.create_runtime(trt->logger.get(), NV_TENSORRT_VERSION)));
        if (!trt->runtime) {
            set_error(error, error_len, "TensorRT could not create its runtime (see the messages above)");
            return nullptr;
        }
        info.dla_cores = trt->runtime->getNbDLACores();
        return trt.release();
    } catch (const std::exception &e) {
        set_error(error, error_len, "%s", e.what());
    } catch (...) {
        set_error(error, error_len, "unknown C++ exception while loading TensorRT");
    }
    return nullptr;
}

extern "C" void semask_trt_close(semask_trt *trt) { delete trt; }

extern "C" void semask_trt_get_info(const semask_trt *trt, semask_trt_info *info) { *info = trt->info; }

extern "C" void semask_trt_blob_free(semask_trt_blob *blob) {
    if (blob != nullptr) {
        std::free(blob->data);
        blob->data = nullptr;
        blob->len = 0;
    }
}

namespace {

bool copy_blob(IHostMemory *memory, semask_trt_blob *out) {
    out->data = std::malloc(memory->size() > 0 ? memory->size() : 1);
    if (out->data == nullptr) return false;
    std::memcpy(out->data, memory->data(), memory->size());
    out->len = memory->size();
    return true;
}

#if NV_TENSORRT_MAJOR < 11
// TensorRT 11.0 removed implicit quantization (IInt8Calibrator, BuilderFlag::kINT8): on 8.5-10.x
// this calibrator hands TensorRT the frames and the cache that Rust keeps.
class Calibrator : public IInt8EntropyCalibrator2 {
  public:
    Calibrator(semask_trt *trt, const semask_trt_calibrator *source) : trt_(trt), source_(source) {}
    ~Calibrator() override {
        if (device_ != nullptr) trt_->api.cudaFree(device_);
    }

    // 10.0 deprecated getBatchSize (implicit batch is gone; it must still return 1).
    int32_t getBatchSize() const noexcept override { return 1; }

    bool getBatch(void *bindings[], char const *names[], int32_t nbBindings) noexcept override {
        (void)names;
        if (nbBindings != 1) return false;
        try {
            host_.resize(source_->input_count);
        } catch (...) {
            return false;
        }
        if (source_->next_batch(source_->user, host_.data(), host_.size()) == 0) return false;
        size_t bytes = host_.size() * sizeof(float);
        if (device_ == nullptr && trt_->api.cudaMalloc(&device_, bytes) != cudaSuccess) {
            device_ = nullptr;
            return false;
        }
        if (trt_->api.cudaMemcpy(device_, host_.data(), bytes, cudaMemcpyHostToDevice) != cudaSuccess) return false;
        bindings[0] = device_;
        return true;
    }

    void const *readCalibrationCache(std::size_t &length) noexcept override {
        uint64_t len = 0;
        const void *data = source_->read_cache != nullptr ? source_->read_cache(source_->user, &len) : nullptr;
        length = static_cast<std::size_t>(len);
        return data;
    }

    void writeCalibrationCache(void const *ptr, std::size_t length) noexcept override {
        if (source_->write_cache != nullptr) source_->write_cache(source_->user, ptr, length);
    }

  private:
    semask_trt *trt_;
    const semask_trt_calibrator *source_;
    std::vector<float> host_;
    void *device_ = nullptr;
};
#endif

#if NV_TENSORRT_MAJOR < 11
// Late 10.x releases (10.12+) deprecate weakly typed networks (kFP16/kINT8 builder flags, layer
// precisions, calibrators), which 11.0 removed: on 8.5-10.x they are still the way to get fp16
// and calibrated int8 from an fp32 graph, so their deprecation warnings are silenced here and in
// semask_trt_build, and only there.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
// Layers whose range or accuracy int8 and fp16 break on Swin: LayerNorm (one layer from 8.6; a
// reduce/pow/sqrt chain in 8.5), Softmax and the Erf of GELU. Kept in fp32 with a precision
// constraint. (11.0 is strongly typed: precisions come from the graph, which keeps them fp32.)
bool is_sensitive(ILayer *layer) {
    switch (layer->getType()) {
#if NV_TENSORRT_MAJOR > 8 || NV_TENSORRT_MINOR >= 6
    case LayerType::kNORMALIZATION:  // added in 8.6
#endif
    case LayerType::kSOFTMAX:
    case LayerType::kREDUCE:
        return true;
    case LayerType::kUNARY: {
        UnaryOperation op = static_cast<IUnaryLayer *>(layer)->getOperation();
        return op == UnaryOperation::kERF || op == UnaryOperation::kSQRT;
    }
    case LayerType::kELEMENTWISE:
        return static_cast<IElementWiseLayer *>(layer)->getOperation() == ElementWiseOperation::kPOW;
    default:
        return false;
    }
}

int32_t keep_sensitive_fp32(INetworkDefinition *network) {
    int32_t pinned = 0;
    for (int32_t i = 0; i < network->getNbLayers(); ++i) {
        ILayer *layer = network->getLayer(i);
        if (!is_sensitive(layer)) continue;
        layer->setPrecision(DataType::kFLOAT);
        for (int32_t o = 0; o < layer->getNbOutputs(); ++o) layer->setOutputType(o, DataType::kFLOAT);
        ++pinned;
    }
    return pinned;
}
#pragma GCC diagnostic pop
#endif

}  // namespace

extern "C" int32_t semask_trt_build(semask_trt *trt, const void *onnx, uint64_t onnx_len, const char *model_path,
                                    const semask_trt_build_options *options, const semask_trt_calibrator *calibrator,
                                    semask_trt_blob *engine, semask_trt_blob *timing_cache, char *error,
                                    size_t error_len) {
    try {
        *engine = semask_trt_blob{nullptr, 0};
        *timing_cache = semask_trt_blob{nullptr, 0};
        if (trt->api.create_parser == nullptr) {
            set_error(error, error_len,
                      "libnvonnxparser.so.%d not found: it is needed to build engines from ONNX (running a "
                      "prebuilt engine does not need it)",
                      NV_TENSORRT_MAJOR);
            return 1;
        }
        trt->api.cudaSetDevice(trt->info.device);
        std::unique_ptr<IBuilder> builder(
            static_cast<IBuilder *>(trt->api.create_builder(trt->logger.get(), NV_TENSORRT_VERSION)));
        if (!builder) {
            set_error(error, error_len, "TensorRT could not create a builder (see the messages above)");
            return 1;
        }
#if NV_TENSORRT_MAJOR < 10
        // Before 10.0, explicit batch (the only form ONNX models take) had to be asked for.
        uint32_t flags = 1U << static_cast<uint32_t>(NetworkDefinitionCreationFlag::kEXPLICIT_BATCH);
#else
        uint32_t flags = 0;
#endif
        std::unique_ptr<INetworkDefinition> network(builder->createNetworkV2(flags));
        std::unique_ptr<nvonnxparser::IParser> parser(static_cast<nvonnxparser::IParser *>(
            trt->api.create_parser(network.get(), trt->logger.get(), NV_ONNX_PARSER_VERSION)));
        if (!network || !parser) {
            set_error(error, error_len, "TensorRT could not create a network and its ONNX parser");
            return 1;
        }
        if (!parser->parse(onnx, static_cast<size_t>(onnx_len), model_path)) {
            std::string all;
            for (int32_t i = 0; i < parser->getNbErrors(); ++i) {
                nvonnxparser::IParserError const *e = parser->getError(i);
                char one[1024];
#if NV_TENSORRT_MAJOR >= 10
                // 10.0 added the failing node's name and operator to parser errors.
                std::snprintf(one, sizeof(one), "node %d (%s, %s): %s", e->node(), e->nodeName(), e->nodeOperator(),
                              e->desc());
#else
                std::snprintf(one, sizeof(one), "node %d: %s", e->node(), e->desc());
#endif
                if (!all.empty()) all += "; ";
                all += one;
            }
            set_error(error, error_len, "the ONNX parser refused the model: %s", all.c_str());
            return 1;
        }

        if (options->keep_output != nullptr) {
            // Only the logits are computed: other outputs of the export (logits_up, sem_logits of
            // the official one) would cost time and memory for nothing.
            bool kept = false;
            for (int32_t i = network->getNbOutputs() - 1; i >= 0; --i) {
                ITensor *output = network->getOutput(i);
                if (std::strcmp(output->getName(), options->keep_output) == 0) {
                    kept = true;
                } else {
                    network->unmarkOutput(*output);
                }
            }
            if (!kept) {
                set_error(error, error_len, "the network has no output named %s", options->keep_output);
                return 1;
            }
        }

        std::unique_ptr<IBuilderConfig> config(builder->createBuilderConfig());
        if (options->workspace_bytes > 0) {
            config->setMemoryPoolLimit(MemoryPoolType::kWORKSPACE, static_cast<size_t>(options->workspace_bytes));
        }
        if (options->optimization_level >= 0) {
#if NV_TENSORRT_MAJOR > 8 || NV_TENSORRT_MINOR >= 6
            config->setBuilderOptimizationLevel(options->optimization_level);  // added in 8.6
#else
            trt->logger->log(ILogger::Severity::kWARNING,
                             "TensorRT 8.5 has no builder optimisation level: the option is ignored");
#endif
        }
        if (options->dla_core >= 0) {
            if (options->dla_core >= trt->info.dla_cores) {
                set_error(error, error_len, "DLA core %d does not exist (this device has %d)", options->dla_core,
                          trt->info.dla_cores);
                return 1;
            }
            config->setDefaultDeviceType(DeviceType::kDLA);
            config->setDLACore(options->dla_core);
            config->setFlag(BuilderFlag::kGPU_FALLBACK);
        }

#if NV_TENSORRT_MAJOR < 11
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"  // see keep_sensitive_fp32
        std::unique_ptr<Calibrator> calibrator_impl;
        switch (options->precision) {
        case SEMASK_TRT_FP32:
            break;
        case SEMASK_TRT_FP16:
            config->setFlag(BuilderFlag::kFP16);
            break;
        case SEMASK_TRT_INT8_CALIBRATED:
            if (calibrator == nullptr) {
                set_error(error, error_len, "implicit int8 needs calibration data (calib.cache or tensors/)");
                return 1;
            }
            calibrator_impl = std::make_unique<Calibrator>(trt, calibrator);
            config->setFlag(BuilderFlag::kINT8);
            config->setInt8Calibrator(calibrator_impl.get());
            break;
        case SEMASK_TRT_INT8_QDQ:
            // Before 11.0 a Q/DQ network still needs the int8 builder flag.
            config->setFlag(BuilderFlag::kINT8);
            break;
        default:
            set_error(error, error_len, "unknown precision %d", options->precision);
            return 1;
        }
        bool flagged = options->precision == SEMASK_TRT_FP16 || options->precision == SEMASK_TRT_INT8_CALIBRATED;
        if (options->keep_sensitive_fp32 && flagged) {
            int32_t pinned = keep_sensitive_fp32(network.get());
            config->setFlag(BuilderFlag::kPREFER_PRECISION_CONSTRAINTS);
            char note[160];
            std::snprintf(note, sizeof(note), "semask-edge: %d LayerNorm/Softmax/GELU layers kept in fp32", pinned);
            trt->logger->log(ILogger::Severity::kINFO, note);
        }
#pragma GCC diagnostic pop
#else
        // 11.0: networks are strongly typed; fp16 and int8 come from the graph (an fp16 export,
        // Q/DQ nodes). Implicit calibration no longer exists.
        (void)calibrator;
        if (options->precision == SEMASK_TRT_INT8_CALIBRATED) {
            set_error(error, error_len,
                      "TensorRT 11 removed calibrated (implicit) int8: use the Q/DQ model (model.qdq.onnx from "
                      "semask-train quantize)");
            return 1;
        }
#endif

        std::unique_ptr<ITimingCache> cache(config->createTimingCache(
            options->timing_cache, options->timing_cache != nullptr ? static_cast<size_t>(options->timing_cache_len) : 0));
        if (cache) config->setTimingCache(*cache, false);

        std::unique_ptr<IHostMemory> plan(builder->buildSerializedNetwork(*network, *config));
        if (!plan || plan->size() == 0) {
            set_error(error, error_len, "TensorRT could not build the engine (its messages above say why)");
            return 1;
        }
        if (!copy_blob(plan.get(), engine)) {
            set_error(error, error_len, "out of memory copying the engine");
            return 1;
        }
        if (ITimingCache const *used = config->getTimingCache()) {
            std::unique_ptr<IHostMemory> serialized(used->serialize());
            if (serialized) copy_blob(serialized.get(), timing_cache);
        }
        return 0;
    } catch (const std::exception &e) {
        set_error(error, error_len, "%s", e.what());
    } catch (...) {
        set_error(error, error_len, "unknown C++ exception while building the engine");
    }
    semask_trt_blob_free(engine);
    semask_trt_blob_free(timing_cache);
    return 1;
}

struct semask_trt_engine {
    semask_trt *trt = nullptr;
    std::unique_ptr<ICudaEngine> engine;
    std::unique_ptr<IExecutionContext> context;
    cudaStream_t stream = nullptr;
    cudaEvent_t start = nullptr, stop = nullptr;
    struct Io {
        semask_trt_tensor info{};
        size_t bytes = 0;
        void *host = nullptr;    // pinned (mapped on integrated GPUs)
        void *device = nullptr;  // cudaMalloc'd, or the mapped alias of `host`
        bool zero_copy = false;
    };
    std::vector<Io> io;

    ~semask_trt_engine() {
        const Api &api = trt->api;
        api.cudaSetDevice(trt->info.device);
        if (stream != nullptr) api.cudaStreamSynchronize(stream);
        context.reset();
        engine.reset();
        for (Io &t : io) {
            if (t.device != nullptr && !t.zero_copy) api.cudaFree(t.device);
            if (t.host != nullptr) api.cudaFreeHost(t.host);
        }
        if (start != nullptr) api.cudaEventDestroy(start);
        if (stop != nullptr) api.cudaEventDestroy(stop);
        if (stream != nullptr) api.cudaStreamDestroy(stream);
    }
};

extern "C" semask_trt_engine *semask_trt_engine_load(semask_trt *trt, const void *plan, uint64_t plan_len, char *error,
                                                     size_t error_len) {
    try {
        const Api &api = trt->api;
        api.cudaSetDevice(trt->info.device);
        auto e = std::make_unique<semask_trt_engine>();
        e->trt = trt;
        e->engine.reset(trt->runtime->deserializeCudaEngine(plan, static_cast<size_t>(plan_len)));
        if (!e->engine) {
            set_error(error, error_len,
                      "TensorRT cannot deserialize this engine (built by another TensorRT version or for another "
                      "GPU, or corrupt)");
            return nullptr;
        }
        e->context.reset(e->engine->createExecutionContext());
        if (!e->context) {
            set_error(error, error_len, "TensorRT could not create an execution context (out of GPU memory?)");
            return nullptr;
        }
        cudaError_t status = api.cudaStreamCreate(&e->stream);
        if (status == cudaSuccess) status = api.cudaEventCreate(&e->start);
        if (status == cudaSuccess) status = api.cudaEventCreate(&e->stop);
        if (status != cudaSuccess) {
            set_error(error, error_len, "cannot create a CUDA stream: %s", trt->cuda_error(status).c_str());
            return nullptr;
        }
        int32_t count = e->engine->getNbIOTensors();
        for (int32_t i = 0; i < count; ++i) {
            semask_trt_engine::Io t;
            char const *name = e->engine->getIOTensorName(i);
            std::snprintf(t.info.name, sizeof(t.info.name), "%s", name);
            t.info.is_input = e->engine->getTensorIOMode(name) == TensorIOMode::kINPUT;
            DataType type = e->engine->getTensorDataType(name);
            t.info.dtype = static_cast<int32_t>(type);
            Dims dims = e->engine->getTensorShape(name);
            t.info.rank = dims.nbDims;
            size_t volume = 1;
            for (int32_t d = 0; d < dims.nbDims && d < 8; ++d) {
                t.info.dims[d] = dims.d[d];
                if (dims.d[d] < 0) {
                    set_error(error, error_len,
                              "tensor %s has a dynamic shape; build the engine with static shapes (semask-edge "
                              "build-engine does)",
                              name);
                    return nullptr;
                }
                volume *= static_cast<size_t>(dims.d[d]);
            }
            size_t size = element_size(type);
            if (size == 0) {
                set_error(error, error_len, "tensor %s has data type %d, which semask-edge does not exchange", name,
                          t.info.dtype);
                return nullptr;
            }
            t.bytes = volume * size;
            // On an integrated GPU (Jetson) host and device memory are the same: mapped pinned
            // memory avoids both copies, as jetson-utils' cudaAllocMapped does.
            t.zero_copy = trt->info.integrated != 0;
            unsigned int host_flags = t.zero_copy ? cudaHostAllocMapped : cudaHostAllocDefault;
            status = api.cudaHostAlloc(&t.host, t.bytes > 0 ? t.bytes : 1, host_flags);
            if (status == cudaSuccess) {
                status = t.zero_copy ? api.cudaHostGetDevicePointer(&t.device, t.host, 0)
                                     : api.cudaMalloc(&t.device, t.bytes > 0 ? t.bytes : 1);
            }
            e->io.push_back(t);
            if (status != cudaSuccess) {
                set_error(error, error_len, "cannot allocate %zu bytes for tensor %s: %s", t.bytes, name,
                          trt->cuda_error(status).c_str());
                return nullptr;
            }
            if (!e->context->setTensorAddress(name, e->io.back().device)) {
                set_error(error, error_len, "TensorRT refused the buffer of tensor %s", name);
                return nullptr;
            }
        }
        return e.release();
    } catch (const std::exception &ex) {
        set_error(error, error_len, "%s", ex.what());
    } catch (...) {
        set_error(error, error_len, "unknown C++ exception while loading the engine");
    }
    return nullptr;
}

extern "C" int32_t semask_trt_engine_tensor_count(const semask_trt_engine *engine) {
    return static_cast<int32_t>(engine->io.size());
}

extern "C" void semask_trt_engine_tensor(const semask_trt_engine *engine, int32_t index, semask_trt_tensor *tensor) {
    *tensor = engine->io.at(static_cast<size_t>(index)).info;
}

extern "C" void *semask_trt_engine_host_buffer(const semask_trt_engine *engine, int32_t index) {
    return engine->io.at(static_cast<size_t>(index)).host;
}

extern "C" int32_t semask_trt_engine_run(semask_trt_engine *engine, float *gpu_ms, char *error, size_t error_len) {
    const Api &api = engine->trt->api;
    auto failed = [&](const char *what, cudaError_t status) {
        set_error(error, error_len, "%s: %s", what, engine->trt->cuda_error(status).c_str());
        return 1;
    };
    cudaError_t status = api.cudaSetDevice(engine->trt->info.device);
    if (status != cudaSuccess) return failed("cudaSetDevice", status);
    for (const auto &t : engine->io) {
        if (!t.info.is_input || t.zero_copy) continue;
        status = api.cudaMemcpyAsync(t.device, t.host, t.bytes, cudaMemcpyHostToDevice, engine->stream);
        if (status != cudaSuccess) return failed("copying the input to the GPU", status);
    }
    api.cudaEventRecord(engine->start, engine->stream);
    if (!engine->context->enqueueV3(engine->stream)) {
        set_error(error, error_len, "enqueueV3 failed (TensorRT's messages above say why)");
        return 1;
    }
    api.cudaEventRecord(engine->stop, engine->stream);
    for (const auto &t : engine->io) {
        if (t.info.is_input || t.zero_copy) continue;
        status = api.cudaMemcpyAsync(t.host, t.device, t.bytes, cudaMemcpyDeviceToHost, engine->stream);
        if (status != cudaSuccess) return failed("copying the outputs from the GPU", status);
    }
    status = api.cudaStreamSynchronize(engine->stream);
    if (status != cudaSuccess) return failed("running the engine", status);
    if (gpu_ms != nullptr) {
        status = api.cudaEventElapsedTime(gpu_ms, engine->start, engine->stop);
        if (status != cudaSuccess) *gpu_ms = -1.0f;
    }
    return 0;
}

extern "C" void semask_trt_engine_free(semask_trt_engine *engine) { delete engine; }
