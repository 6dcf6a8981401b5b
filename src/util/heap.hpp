// The C heap tuned for processes that run for hours with a steady working set.
#pragma once

namespace ifw::util {

// glibc raises its mmap threshold each time a large block is freed, after which blocks of tens of
// megabytes (activations, KV caches, mel windows) come from the main heap, where a small block
// left between them pins the pages: resident memory then creeps up window after window. A fixed
// threshold keeps every large block in its own mapping, returned to the system when freed. Call
// once, first thing in main(); without glibc it does nothing.
void tune_heap_for_long_runs();

// Hands freed heap pages back to the system (glibc's malloc_trim); called between batches, so
// that what one batch needed briefly does not stay resident for the rest of a long file.
void release_free_heap_memory();

}  // namespace ifw::util
