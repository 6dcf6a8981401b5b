// Scaled dot-product attention on the CPU, split over (batch item, head, block of queries).
#pragma once

#include "backend/backend.hpp"
#include "backend/cpu/blas.hpp"
#include "util/thread_pool.hpp"

namespace ifw::backend::cpu {

void attention(const AttentionArgs& args, util::ThreadPool& pool, const Blas& blas);

}  // namespace ifw::backend::cpu
