// Whisper's tokenizer: byte-level BPE with the GPT-2 pre-tokenizer, plus Whisper's special tokens
// (end of text, start of transcript, languages, tasks, timestamps). Loaded from tokenizer.json,
// from vocab.json + merges.txt (+ added_tokens.json), or from a *.tiktoken file.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/tokenizer/bpe.hpp"
#include "model/tokenizer/pretokenizer.hpp"

namespace ifw::model {

struct WhisperSpecialTokens {
  TokenId end_of_text = -1;
  TokenId start_of_transcript = -1;
  TokenId translate = -1;
  TokenId transcribe = -1;
  TokenId no_timestamps = -1;
  std::optional<TokenId> start_of_lm;
  std::optional<TokenId> start_of_prev;
  std::optional<TokenId> no_speech;  // "<|nospeech|>", called "<|nocaptions|>" in older files
  TokenId timestamp_begin = -1;      // "<|0.00|>"; timestamp k is timestamp_begin + k (0.02 s each)
  int timestamp_count = 0;
  std::vector<std::pair<std::string, TokenId>> languages;  // ("en", 50259), in id order
};

// Everything a loader reads from its files, before the checks that every format shares.
struct TokenizerParts {
  std::string source;                      // files it came from, for messages
  std::map<TokenId, std::string> regular;  // id -> byte string
  std::map<TokenId, std::string> special;  // id -> content, e.g. "<|en|>"
  Bpe::Ranking ranking = Bpe::Ranking::kTokenRank;
  std::vector<std::pair<std::string, std::string>> merges;  // byte strings, in rank order
  bool whole_piece_first = true;
  std::string split_pattern{kGpt2SplitPattern};
  bool add_prefix_space = false;
};

class Tokenizer {
 public:
  static Tokenizer from_tokenizer_json(const std::filesystem::path& file);
  static Tokenizer from_vocab_and_merges(
      const std::filesystem::path& vocab_json, const std::filesystem::path& merges_txt,
      const std::optional<std::filesystem::path>& added_tokens_json);
  // openai/whisper's format; Whisper's special tokens follow the ranks. num_languages: 99 for
  // models before large-v3, 100 from large-v3 on.
  static Tokenizer from_tiktoken(const std::filesystem::path& file, int num_languages);
  // Checks the parts shared by every format and builds the tokenizer.
  static Tokenizer from_parts(TokenizerParts parts);

  // Plain text to ids. Special-token strings in the text ("<|en|>") are encoded as the text they
  // are, never as control tokens. Throws ifw::Error (kInvalidArgument) for invalid UTF-8.
  std::vector<TokenId> encode(std::string_view text) const;

  // Ids to text. Bytes that do not form whole UTF-8 characters (a sequence cut inside one)
  // become U+FFFD, never raw bytes. Throws ifw::Error for an id outside the vocabulary.
  std::string decode(std::span<const TokenId> ids, bool skip_special_tokens = true) const;
  // The concatenated bytes, which may end inside a character (for streaming, see TextStream).
  std::string decode_bytes(std::span<const TokenId> ids, bool skip_special_tokens = true) const;

  int size() const { return static_cast<int>(tokens_.size()); }
  bool is_special(TokenId id) const;
  bool is_timestamp(TokenId id) const;
  std::optional<double> timestamp_seconds(TokenId id) const;
  // A regular token's bytes, or a special token's content.
  const std::string& token_bytes(TokenId id) const;
  std::optional<TokenId> special_token(std::string_view content) const;
  std::optional<TokenId> language_token(std::string_view code) const;
  std::optional<std::string> language_code(TokenId id) const;
  const WhisperSpecialTokens& specials() const { return specials_; }
  // openai/whisper's rule: the multilingual vocabularies have at least 51865 tokens.
  bool multilingual() const { return size() >= 51865; }
  // Symbols Whisper suppresses by default (suppress_tokens = "-1"), computed as openai/whisper
  // does: brackets, music signs, speaker-turn dashes ...
  std::vector<TokenId> non_speech_tokens() const;
  const std::string& source() const { return source_; }

 private:
  struct Token {
    std::string bytes;
    bool special = false;
  };
  Tokenizer(std::string source, std::vector<Token> tokens, Bpe bpe, PreTokenizer pre_tokenizer);
  void find_special_tokens();

  std::string source_;
  std::vector<Token> tokens_;
  std::map<std::string, TokenId, std::less<>> special_by_content_;
  Bpe bpe_;
  PreTokenizer pre_tokenizer_;
  WhisperSpecialTokens specials_;
};

// "<|en|>", "<|0.00|>", "<|endoftext|>": the spelling of Whisper's control tokens.
bool looks_like_control_token(std::string_view text);

// Decodes a stream of ids into text as they arrive, holding back a character until its last byte
// has come, so that no piece of output is ever garbage.
class TextStream {
 public:
  explicit TextStream(const Tokenizer& tokenizer, bool skip_special_tokens = true)
      : tokenizer_(tokenizer), skip_special_(skip_special_tokens) {}
  std::string push(TokenId id);  // text completed by this token (possibly empty)
  std::string finish();          // the rest; an unfinished character becomes U+FFFD

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;
};

// Chooses the tokenizer files of a model folder: tokenizer.json, else vocab.json + merges.txt
// (+ added_tokens.json), else a single *.tiktoken file (its language count from `vocab_size`).
Tokenizer load_folder_tokenizer(const std::filesystem::path& model_dir, int vocab_size);

}  // namespace ifw::model
