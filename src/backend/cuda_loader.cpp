// The engine's side of the CUDA backend in a build with the toolkit: asks the NVIDIA driver
// (libcuda, small) whether there is a GPU, and only then loads the module with the backend and
// cuBLAS (backend/cuda_module.hpp). A CPU run maps neither, and a machine without the CUDA
// libraries runs on the CPU, saying why.
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <typeinfo>
#include <vector>

#include <cuda.h>
#include <dlfcn.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <ifw/error.hpp>

#include "backend/backend.hpp"
#include "backend/cuda_module.hpp"
#include "backend/cuda_module_token.hpp"
#include "backend/devices.hpp"

namespace ifw::backend {
namespace {

namespace fs = std::filesystem;

// What the driver says, asked once per process.
struct DriverProbe {
  int gpus = 0;
  int version = 0;    // cuDriverGetVersion: 12040 is 12.4
  std::string error;  // why no GPU can be used (empty: `gpus` of them)
};

std::string driver_error_text(void* library, CUresult result) {
  const char* text = nullptr;
  if (auto describe =
          reinterpret_cast<decltype(&cuGetErrorString)>(::dlsym(library, "cuGetErrorString"));
      describe != nullptr && describe(result, &text) == CUDA_SUCCESS && text != nullptr) {
    return text;
  }
  return fmt::format("CUDA driver error {}", static_cast<int>(result));
}

DriverProbe ask_driver() {
  DriverProbe probe;
  // Stays loaded: the CUDA runtime in the module uses this same library (and unloading a driver
  // after cuInit is not supported).
  void* library = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    probe.error = fmt::format("no NVIDIA driver ({})", ::dlerror());
    return probe;
  }
  const auto init = reinterpret_cast<decltype(&cuInit)>(::dlsym(library, "cuInit"));
  const auto count =
      reinterpret_cast<decltype(&cuDeviceGetCount)>(::dlsym(library, "cuDeviceGetCount"));
  const auto version =
      reinterpret_cast<decltype(&cuDriverGetVersion)>(::dlsym(library, "cuDriverGetVersion"));
  if (init == nullptr || count == nullptr || version == nullptr) {
    probe.error =
        "the NVIDIA driver's libcuda.so.1 lacks cuInit, cuDeviceGetCount or "
        "cuDriverGetVersion";
    return probe;
  }
  version(&probe.version);
  if (const CUresult r = init(0); r != CUDA_SUCCESS) {
    probe.error = fmt::format("no usable GPU: {}", driver_error_text(library, r));
    return probe;
  }
  if (const CUresult r = count(&probe.gpus); r != CUDA_SUCCESS) {
    probe.error = fmt::format("no usable GPU: {}", driver_error_text(library, r));
    probe.gpus = 0;
  } else if (probe.gpus == 0) {
    probe.error = "no GPU visible";
  }
  return probe;
}

const DriverProbe& driver() {
  static const DriverProbe probe = ask_driver();
  return probe;
}

const char* overriding_path() {
  const char* path = std::getenv("IFW_CUDA_MODULE");
  return path != nullptr && *path != '\0' ? path : nullptr;
}

// Where the module may be: IFW_CUDA_MODULE when set; else beside the program (a build folder, a
// copied bundle), where `cmake --install` puts it relative to the program (<libdir>/ifw), and,
// for programs in the build tree (the tests, in build/<preset>/tests), where the build put it.
std::vector<fs::path> module_candidates() {
  std::error_code ec;
  // Absolute, so that dlopen opens this file rather than searching the library path for a name.
  if (const char* path = overriding_path(); path != nullptr) return {fs::absolute(path, ec)};
  const fs::path program = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return {};
  std::vector<fs::path> paths = {
      program.parent_path() / cuda_module::kFileName,
      (program.parent_path() / IFW_INSTALLED_MODULE_DIR / cuda_module::kFileName)
          .lexically_normal()};
  // /proc/self/exe has no symbolic links; the build folder's name as CMake saw it may.
  const fs::path build = fs::weakly_canonical(fs::path(IFW_BUILD_DIR), ec);
  const fs::path relative = program.lexically_normal().lexically_relative(build);
  if (!relative.empty() && *relative.begin() != ".." && program.parent_path() != build) {
    paths.push_back(build / cuda_module::kFileName);
  }
  return paths;
}

struct LoadedModule {
  const cuda_module::Api* api = nullptr;
  std::string path;
  std::string error;
};

LoadedModule load_module() {
  LoadedModule loaded;
  const std::vector<fs::path> candidates = module_candidates();
  if (candidates.empty()) {
    loaded.error = fmt::format(
        "{} not found: the program's own path (/proc/self/exe) is "
        "unknown; set IFW_CUDA_MODULE to the module's path",
        cuda_module::kFileName);
    return loaded;
  }
  for (const fs::path& path : candidates) {
    loaded.path = path.string();
    std::error_code ec;
    if (!fs::exists(path, ec)) continue;
    // RTLD_LOCAL keeps the module's own symbols to itself; its undefined ones (the engine's,
    // spdlog's, fmt's) resolve against this program. Never unloaded: tensors it made free
    // their memory through it, and the CUDA runtime's exit handlers live in it.
    void* library = ::dlopen(loaded.path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) {
      loaded.error = fmt::format("{} could not be loaded: {}", loaded.path, ::dlerror());
      return loaded;
    }
    const auto entry =
        reinterpret_cast<cuda_module::EntryPoint>(::dlsym(library, cuda_module::kEntryPoint));
    const cuda_module::Api* api = entry != nullptr ? entry() : nullptr;
    if (api == nullptr) {
      loaded.error =
          fmt::format("{} is not ifw's CUDA module (no {})", loaded.path, cuda_module::kEntryPoint);
      return loaded;
    }
    const auto text = [](const char* s) { return s != nullptr ? s : "?"; };
    if (api->interface != cuda_module::kInterface || api->ifw_version == nullptr ||
        std::strcmp(api->ifw_version, IFW_VERSION) != 0 || api->build_token == nullptr ||
        std::strcmp(api->build_token, IFW_CUDA_MODULE_TOKEN) != 0) {
      loaded.error = fmt::format(
          "{} was built for another ifw (version {}, interface {}, headers {:.12}; this program: "
          "{}, interface {}, headers {:.12}); use the module built with this program",
          loaded.path, text(api->ifw_version), api->interface, text(api->build_token), IFW_VERSION,
          cuda_module::kInterface, IFW_CUDA_MODULE_TOKEN);
      return loaded;
    }
    loaded.api = api;
    spdlog::debug("cuda: backend module {}", loaded.path);
    return loaded;
  }
  if (overriding_path() != nullptr) {
    loaded.error = fmt::format("IFW_CUDA_MODULE={}: no such file", loaded.path);
    return loaded;
  }
  std::string looked;
  for (const fs::path& path : candidates)
    looked += (looked.empty() ? "" : ", ") + path.string();
  loaded.error = fmt::format("{} not found ({}); set IFW_CUDA_MODULE to its path",
                             cuda_module::kFileName, looked);
  return loaded;
}

const LoadedModule& module() {
  static const LoadedModule loaded = [] {
    LoadedModule m = load_module();
    if (m.api == nullptr && driver().gpus > 0) {
      spdlog::warn("cuda: {} GPU(s) found, but the CUDA backend cannot be used: {}", driver().gpus,
                   m.error);
    }
    return m;
  }();
  return loaded;
}

const cuda_module::Api& require_module() {
  const LoadedModule& m = module();
  if (m.api == nullptr) {
    throw Error(ErrorKind::kUnsupported,
                fmt::format("the CUDA backend cannot be used: {}", m.error));
  }
  return *m.api;
}

// What the module takes from the engine lives in dtype.cpp, tensor.cpp and token_choice.cpp (the
// Backend type). A static library gives a program only the objects it uses: referring to one
// symbol of each here puts them in every program that can load the module (all link this file),
// so that loading cannot fail on a symbol the program happened not to need.
struct EnginePartsTheModuleUses {
  std::string_view (*dtype_name)(DType) noexcept;
  std::int64_t (*element_count)(const Shape&);
  const std::type_info* backend_type;
};
[[gnu::used]] const EnginePartsTheModuleUses kEnginePartsTheModuleUses{
    &backend::dtype_name, &backend::element_count, &typeid(Backend)};

std::string version_text(int version) {
  return fmt::format("{}.{}", version / 1000, version % 1000 / 10);
}

}  // namespace

DeviceReport describe_devices() {
  const DriverProbe& probe = driver();
  if (probe.error.empty() && module().api != nullptr) return module().api->describe_devices();
  DeviceReport report;
  report.cuda_built = true;
  report.cuda_runtime = fmt::format("runtime {}, driver {}", IFW_CUDA_RUNTIME,
                                    probe.version == 0 ? "none" : version_text(probe.version));
  report.cuda_status = probe.error.empty()
                           ? fmt::format("the CUDA backend cannot be used: {}", module().error)
                           : probe.error;
  return report;
}

DeviceMemory device_memory(int index) {
  return require_module().device_memory(index);
}

std::unique_ptr<Backend> make_cuda_backend(int index, DType dtype) {
  // The driver's own words first: without one, the CUDA runtime reports an "insufficient driver".
  if (const DriverProbe& probe = driver(); !probe.error.empty()) {
    throw Error(ErrorKind::kUnsupported, fmt::format("cuda:{}: {}", index, probe.error));
  }
  return require_module().make_backend(index, dtype);
}

CudaModuleStatus load_cuda_module() {
  const LoadedModule& m = module();
  return {m.api != nullptr, m.path, m.error};
}

std::uint64_t cuda_step_graph_launches() {
  return module().api != nullptr ? module().api->step_graph_launches() : 0;
}

}  // namespace ifw::backend
