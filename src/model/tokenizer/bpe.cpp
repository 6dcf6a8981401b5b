#include "model/tokenizer/bpe.hpp"

#include <cassert>
#include <optional>
#include <queue>

namespace ifw::model {

Bpe::Bpe(BytesToId vocab, Ranking ranking, const std::vector<MergeRule>& merges,
         bool whole_piece_first)
    : vocab_(std::move(vocab)), ranking_(ranking), whole_piece_first_(whole_piece_first) {
  for (int b = 0; b < 256; ++b) {
    const auto it = vocab_.find(std::string(1, static_cast<char>(b)));
    assert(it != vocab_.end() && "loaders check that every byte is a token");
    byte_ids_[b] = it->second;
  }
  if (ranking_ == Ranking::kMergeList) {
    merges_.reserve(merges.size());
    for (std::size_t rank = 0; rank < merges.size(); ++rank) {
      const MergeRule& m = merges[rank];
      merges_.emplace(pair_key(m.left, m.right), Merge{static_cast<std::uint32_t>(rank), m.result});
    }
  }
}

void Bpe::encode(std::string_view piece, std::vector<TokenId>& out) const {
  if (piece.empty()) return;
  if (whole_piece_first_) {
    if (const auto it = vocab_.find(piece); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  struct Symbol {
    std::uint32_t start;
    std::uint32_t len;  // 0 once merged into its left neighbour
    std::int32_t prev;
    std::int32_t next;
    TokenId id;
  };
  struct Candidate {
    std::uint32_t rank;
    std::int32_t left;
    std::uint32_t left_len;
    std::uint32_t right_len;
    TokenId result;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };

  const auto n = static_cast<std::int32_t>(piece.size());
  std::vector<Symbol> symbols(static_cast<std::size_t>(n));
  for (std::int32_t i = 0; i < n; ++i) {
    symbols[static_cast<std::size_t>(i)] = {
        static_cast<std::uint32_t>(i), 1, i - 1, i + 1 < n ? i + 1 : -1,
        byte_ids_[static_cast<unsigned char>(piece[static_cast<std::size_t>(i)])]};
  }
  const auto rank_of = [&](const Symbol& l, const Symbol& r) -> std::optional<Merge> {
    if (ranking_ == Ranking::kMergeList) {
      const auto it = merges_.find(pair_key(l.id, r.id));
      if (it == merges_.end()) return std::nullopt;
      return it->second;
    }
    const auto it = vocab_.find(piece.substr(l.start, l.len + r.len));
    if (it == vocab_.end()) return std::nullopt;
    return Merge{static_cast<std::uint32_t>(it->second), it->second};
  };

  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  const auto consider = [&](std::int32_t left) {
    if (left < 0) return;
    const Symbol& l = symbols[static_cast<std::size_t>(left)];
    if (l.next < 0) return;
    const Symbol& r = symbols[static_cast<std::size_t>(l.next)];
    if (const auto m = rank_of(l, r)) heap.push({m->rank, left, l.len, r.len, m->result});
  };
  for (std::int32_t i = 0; i + 1 < n; ++i)
    consider(i);

  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& l = symbols[static_cast<std::size_t>(c.left)];
    // Stale when either side has changed since the candidate was pushed (symbols only grow).
    if (l.len != c.left_len || l.next < 0) continue;
    Symbol& r = symbols[static_cast<std::size_t>(l.next)];
    if (r.len != c.right_len) continue;
    l.len += r.len;
    l.id = c.result;
    l.next = r.next;
    if (r.next >= 0) symbols[static_cast<std::size_t>(r.next)].prev = c.left;
    r.len = 0;
    consider(l.prev);
    consider(c.left);
  }
  for (std::int32_t i = 0; i >= 0; i = symbols[static_cast<std::size_t>(i)].next) {
    out.push_back(symbols[static_cast<std::size_t>(i)].id);
  }
}

}  // namespace ifw::model
