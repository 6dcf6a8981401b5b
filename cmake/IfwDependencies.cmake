# Every third-party library comes from the system (Debian packages, see scripts/install-deps.sh).
# The engine (IFW_ENGINE_ONLY: what a GPU host builds, see docs/GPU.md) needs only the first group,
# found without pkg-config; the whole `ifw` command adds FFmpeg, libcurl, OpenSSL, cpp-httplib.
find_package(Threads REQUIRED)
find_package(ZLIB REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(CLI11 REQUIRED)

# A C library by its header and library name, as an imported target ifw::<name>.
function(ifw_find_c_library name header library)
  find_path(${name}_INCLUDE_DIR ${header})
  find_library(${name}_LIBRARY ${library})
  if(NOT ${name}_INCLUDE_DIR OR NOT ${name}_LIBRARY)
    message(FATAL_ERROR "ifw: ${header} / lib${library} not found (scripts/install-deps.sh "
                        "installs them; a GPU host gets them from scripts/make-gpu-bundle.sh)")
  endif()
  add_library(ifw::${name} UNKNOWN IMPORTED)
  set_target_properties(ifw::${name} PROPERTIES IMPORTED_LOCATION "${${name}_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${${name}_INCLUDE_DIR}")
endfunction()
ifw_find_c_library(fftw3f fftw3.h fftw3f)
ifw_find_c_library(pcre2 pcre2.h pcre2-8)
# OpenBLAS is loaded at run time (backend/cpu/blas.cpp): only its header is needed.
find_path(OPENBLAS_INCLUDE_DIRS cblas.h
          PATH_SUFFIXES x86_64-linux-gnu/openblas-pthread aarch64-linux-gnu/openblas-pthread
                        openblas-pthread openblas)
if(NOT OPENBLAS_INCLUDE_DIRS)
  message(FATAL_ERROR "ifw: OpenBLAS's cblas.h not found (libopenblas-dev)")
endif()

if(NOT IFW_ENGINE_ONLY)
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(CURL REQUIRED IMPORTED_TARGET libcurl)
  find_package(OpenSSL REQUIRED)
  pkg_check_modules(FFMPEG REQUIRED IMPORTED_TARGET libavformat libavcodec libavutil libswresample)
  pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
  find_package(LibArchive REQUIRED)  # ZIP downloads of job results
  find_package(SQLite3 REQUIRED)     # the server's jobs (libsqlite3-dev)
endif()

if(IFW_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
if(IFW_BUILD_BENCH)
  find_package(benchmark REQUIRED)
endif()
