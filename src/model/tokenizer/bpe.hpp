// Byte-pair encoding of one pre-tokenized piece: repeatedly merge the adjacent pair of lowest rank
// (leftmost first on ties) until no pair can merge.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "util/string_hash.hpp"

namespace ifw::model {

using TokenId = std::int32_t;

using BytesToId = util::StringMap<TokenId>;

class Bpe {
 public:
  // How the rank of a pair is found.
  enum class Ranking {
    kMergeList,  // tokenizer.json / merges.txt: the pair's position in the merge list
    kTokenRank,  // tiktoken: the rank (= id) of the merged byte string, if it is a token
  };

  // left + right -> result; a merge's rank is its position in the list.
  struct MergeRule {
    TokenId left;
    TokenId right;
    TokenId result;
  };

  Bpe() = default;
  // `vocab`: byte string -> id of every regular token; all 256 single bytes must be present
  // (loaders check this and name the file). `merges`: for kMergeList, in rank order, without
  // duplicate pairs; ignored for kTokenRank.
  // `whole_piece_first`: a piece that is itself a token is emitted as is (tiktoken always does;
  // tokenizer.json says so with "ignore_merges").
  Bpe(BytesToId vocab, Ranking ranking, const std::vector<MergeRule>& merges,
      bool whole_piece_first);

  void encode(std::string_view piece, std::vector<TokenId>& out) const;
  const BytesToId& vocab() const { return vocab_; }

 private:
  struct Merge {
    std::uint32_t rank;
    TokenId result;
  };
  static std::uint64_t pair_key(TokenId a, TokenId b) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) |
           static_cast<std::uint32_t>(b);
  }

  BytesToId vocab_;
  Ranking ranking_ = Ranking::kTokenRank;
  std::unordered_map<std::uint64_t, Merge> merges_;
  TokenId byte_ids_[256] = {};
  bool whole_piece_first_ = true;
};

}  // namespace ifw::model
