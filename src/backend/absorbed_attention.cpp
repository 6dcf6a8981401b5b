#include <fmt/format.h>

#include <ifw/error.hpp>

#include "backend/backend.hpp"

namespace ifw::backend {
namespace {

template <typename... Args>
void require(bool ok, fmt::format_string<Args...> message, Args&&... args) {
  if (!ok) {
    throw Error(ErrorKind::kInvalidArgument,
                "absorbed attention: " + fmt::format(message, std::forward<Args>(args)...));
  }
}

}  // namespace

void check_absorbed_attention(const AbsorbedAttentionArgs& a) {
  require(a.batch >= 0 && a.heads >= 1 && a.head_dim >= 1 && a.query_len >= 1,
          "{} rows of {} queries, {} heads of {}", a.batch, a.query_len, a.heads, a.head_dim);
  require(a.states.rank() == 3, "states of shape {} (items, positions, width)",
          shape_string(a.states.shape()));
  const std::int64_t items = a.states.dim(0), positions = a.states.dim(1), d = a.states.dim(2);
  const std::int64_t width = static_cast<std::int64_t>(a.heads) * a.head_dim;
  require(items >= 1 && positions >= 1, "states of shape {}", shape_string(a.states.shape()));
  for (const Tensor* w : {&a.k_w, &a.v_w}) {
    require(w->rank() == 2 && w->dim(0) == width && w->dim(1) == d,
            "weights of shape {} for {} heads of {} over states {} wide", shape_string(w->shape()),
            a.heads, a.head_dim, d);
  }
  require(a.key_bias.dtype() == DType::kF32 && a.key_bias.numel() == a.heads * d,
          "a {} key bias of {} values for {} heads of states {} wide",
          dtype_name(a.key_bias.dtype()), a.key_bias.numel(), a.heads, d);
  require(a.q.column >= 0 && a.q.column + width <= a.q.ld && a.out.column >= 0 &&
              a.out.column + width <= a.out.ld,
          "queries or outputs narrower than {} heads of {}", a.heads, a.head_dim);
  const std::int64_t rows = static_cast<std::int64_t>(a.batch) * a.query_len;
  require(a.q.tensor.numel() >= rows * a.q.ld && a.out.tensor.numel() >= rows * a.out.ld,
          "fewer than {} rows of queries or outputs", rows);
  require(a.item_index.empty() || a.item_index.size() == static_cast<std::size_t>(a.batch),
          "{} states items for {} rows", a.item_index.size(), a.batch);
  for (const int item : a.item_index)
    require(item >= 0 && item < items, "no states item {} among {}", item, items);
  if (!a.capture_heads.empty()) {
    for (const int h : a.capture_heads)
      require(h >= 0 && h < a.heads, "no head {} to capture among {}", h, a.heads);
    require(a.capture.size() == static_cast<std::size_t>(rows) * a.capture_heads.size() *
                                    static_cast<std::size_t>(positions),
            "a capture buffer of {} values", a.capture.size());
  }
}

void Backend::absorbed_attention(const AbsorbedAttentionArgs& args) {
  (void)args;
  throw Error(ErrorKind::kUnsupported,
              fmt::format("absorbed attention is not supported by {}", description()));
}

}  // namespace ifw::backend
