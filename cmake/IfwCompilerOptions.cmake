# Warnings and sanitizers for ifw's own targets (never for third-party code).
add_library(ifw_warnings INTERFACE)
target_compile_options(ifw_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
  -Wold-style-cast -Woverloaded-virtual -Wimplicit-fallthrough>)
if(IFW_WERROR)
  target_compile_options(ifw_warnings INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
endif()

if(IFW_SANITIZE)
  message(STATUS "ifw: building with sanitizers: ${IFW_SANITIZE}")
  # C and C++ only: nvcc does not take these (the CUDA backend is off in sanitizer builds).
  add_compile_options(
    "$<$<COMPILE_LANGUAGE:C,CXX>:-fsanitize=${IFW_SANITIZE};-fno-omit-frame-pointer;-fno-sanitize-recover=all>")
  add_link_options(-fsanitize=${IFW_SANITIZE})
endif()
