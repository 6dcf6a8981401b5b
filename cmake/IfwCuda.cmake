# The CUDA backend is built when the toolkit is present and never required (IFW_CUDA=AUTO).
set(IFW_HAVE_CUDA OFF)
if(NOT IFW_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # Ampere and Hopper data-centre cards (8.6/8.9 cards run the 8.0 code); the kernels need
      # compute 8.0 or newer. Override with -DCMAKE_CUDA_ARCHITECTURES=...
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    enable_language(CUDA)
    # Debian 12's CMake (3.25.1) sets a property on CUDA::nvToolsExt without checking that the
    # library was found, and toolkits since CUDA 12.9 no longer ship it (NVTX is header-only now):
    # configuring then fails. ifw does not use it; a stand-in target keeps the module going.
    if(NOT TARGET CUDA::nvToolsExt)
      add_library(CUDA::nvToolsExt INTERFACE IMPORTED)
    endif()
    find_package(CUDAToolkit)
  endif()
  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND)
    set(IFW_HAVE_CUDA ON)
    # Programs export their symbols so that the CUDA backend module they load (libifw-cuda.so,
    # src/backend/cuda_module.hpp) uses their engine, spdlog and fmt instead of copies of its own.
    set(CMAKE_ENABLE_EXPORTS ON)
    message(STATUS "ifw: CUDA toolkit ${CUDAToolkit_VERSION} found: building the CUDA backend")
  elseif(IFW_CUDA STREQUAL "ON")
    message(FATAL_ERROR "ifw: IFW_CUDA=ON but no usable CUDA toolkit (nvcc and cudart) was found")
  else()
    message(STATUS "ifw: no CUDA toolkit found: building the CPU backend only")
  endif()
endif()
