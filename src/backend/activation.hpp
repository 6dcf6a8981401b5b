// What a product's epilogue applies after its bias (backend::Backend::linear).
#pragma once

namespace ifw::backend {

enum class Activation {
  kNone,
  // The exact GELU, x * Phi(x) with the error function: Whisper's.
  kGelu,
};

}  // namespace ifw::backend
