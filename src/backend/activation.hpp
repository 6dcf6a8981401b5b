// What a product's epilogue applies after its bias (backend::Backend::linear).
#pragma once

namespace ifw::backend {

enum class Activation {
  kNone,
  // The exact GELU, x * Phi(x) with the error function: Whisper's.
  kGelu,
  // GELU by its tanh approximation, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): at most
  // 4.7e-4 from the exact form (near x = -2.7), which cuBLASLt computes inside a product
  // (IFW_GELU=tanh: engine::feed_forward_activation).
  kGeluTanh,
};

}  // namespace ifw::backend
