#include "util/heap.hpp"

#include <cstdlib>  // a libc header first, so that __GLIBC__ is defined below

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace ifw::util {

void tune_heap_for_long_runs() {
#if defined(__GLIBC__)
  // Setting either value by hand turns off glibc's dynamic threshold (see the header).
  ::mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  ::mallopt(M_TRIM_THRESHOLD, 16 * 1024 * 1024);
#endif
}

void release_free_heap_memory() {
#if defined(__GLIBC__)
  ::malloc_trim(0);
#endif
}

}  // namespace ifw::util
