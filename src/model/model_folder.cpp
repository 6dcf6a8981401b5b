#include "model/model_folder.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <ifw/error.hpp>

namespace ifw::model {
namespace {

std::filesystem::path checked_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) {
    throw Error(ErrorKind::kNotFound, fmt::format("{}: no such model folder", dir.string()));
  }
  if (!std::filesystem::is_directory(dir, ec)) {
    throw Error(
        ErrorKind::kInvalidModel,
        fmt::format("{}: is a file; expected a model folder holding config.json", dir.string()));
  }
  if (!std::filesystem::exists(dir / "config.json", ec)) {
    throw Error(
        ErrorKind::kInvalidModel,
        fmt::format("{}: not a Whisper model folder: config.json is missing", dir.string()));
  }
  return dir;
}

WhisperConfig read_config(const std::filesystem::path& dir) {
  return load_whisper_config(dir / "config.json");
}

Tokenizer read_tokenizer(const std::filesystem::path& dir, const WhisperConfig& config) {
  return load_folder_tokenizer(dir, config.vocab_size);
}

}  // namespace

ModelFolder::ModelFolder(const std::filesystem::path& dir) try
    : dir_(checked_dir(dir)),
      config_(read_config(dir_)),
      tokenizer_(read_tokenizer(dir_, config_)),
      weights_(WeightFiles::open_folder(dir_)) {
  std::error_code ec;
  const auto config_file = (dir_ / "config.json").string();

  // Preprocessor: absent means Whisper's standard front end with the config's bin count.
  const auto pre_file = dir_ / "preprocessor_config.json";
  if (std::filesystem::exists(pre_file, ec)) {
    preprocessor_ = load_preprocessor_config(pre_file);
    if (preprocessor_.feature_size != config_.num_mel_bins) {
      throw Error(
          ErrorKind::kInvalidModel,
          fmt::format("{}: feature_size is {} but {} says num_mel_bins is {}", pre_file.string(),
                      preprocessor_.feature_size, config_file, config_.num_mel_bins));
    }
  } else {
    preprocessor_.feature_size = config_.num_mel_bins;
  }
  if (config_.max_source_positions * 2 != preprocessor_.nb_max_frames) {
    throw Error(ErrorKind::kUnsupported,
                fmt::format("{}: max_source_positions is {}; a 30 s window of {} frames needs {}",
                            config_file, config_.max_source_positions, preprocessor_.nb_max_frames,
                            preprocessor_.nb_max_frames / 2));
  }

  // Tokenizer and config must describe the same vocabulary.
  const std::string& tok = tokenizer_.source();
  if (tokenizer_.size() != config_.vocab_size) {
    throw Error(ErrorKind::kInvalidModel,
                fmt::format("{} has {} tokens but {} says vocab_size is {}", tok, tokenizer_.size(),
                            config_file, config_.vocab_size));
  }
  const WhisperSpecialTokens& sp = tokenizer_.specials();
  if (config_.decoder_start_token_id != sp.start_of_transcript) {
    throw Error(
        ErrorKind::kInvalidModel,
        fmt::format("{}: decoder_start_token_id is {} but {} has <|startoftranscript|> = {}",
                    config_file, config_.decoder_start_token_id, tok, sp.start_of_transcript));
  }
  if (config_.eos_token_id != sp.end_of_text) {
    throw Error(ErrorKind::kInvalidModel,
                fmt::format("{}: eos_token_id is {} but {} has <|endoftext|> = {}", config_file,
                            config_.eos_token_id, tok, sp.end_of_text));
  }

  const auto gen_file = dir_ / "generation_config.json";
  const bool has_gen = std::filesystem::exists(gen_file, ec);
  if (has_gen) generation_ = load_generation_config(gen_file);
  resolve_generation(has_gen);

  try {
    checkpoint_ = std::make_unique<Checkpoint>(weights_, config_);
  } catch (const Error& e) {
    throw Error(e.kind(), fmt::format("{}: {}", dir_.string(), e.what()));
  }
} catch (const nlohmann::json::exception& e) {
  // Every JSON access is meant to be checked; should one slip, the user still learns which
  // folder is at fault instead of seeing a bare library message.
  throw Error(ErrorKind::kInvalidModel,
              fmt::format("{}: malformed JSON content: {}", dir.string(), e.what()));
}

void ModelFolder::resolve_generation(bool has_file) {
  const std::string source =
      has_file ? (dir_ / "generation_config.json").string() : (dir_ / "config.json").string();
  const std::string& tok = tokenizer_.source();
  const WhisperSpecialTokens& sp = tokenizer_.specials();
  GenerationConfig& g = generation_;
  const auto fail = [&](const std::string& message) {
    throw Error(ErrorKind::kInvalidModel, source + ": " + message);
  };
  const auto agree = [&](const char* field, std::optional<int>& value, int expected,
                         const char* token) {
    if (!value) {
      value = expected;
    } else if (*value != expected) {
      fail(fmt::format("{} is {} but {} has {} = {}", field, *value, tok, token, expected));
    }
  };
  agree("decoder_start_token_id", g.decoder_start_token_id, sp.start_of_transcript,
        "<|startoftranscript|>");
  if (!g.eos_token_ids) g.eos_token_ids = std::vector<int>{sp.end_of_text};
  if (std::find(g.eos_token_ids->begin(), g.eos_token_ids->end(), sp.end_of_text) ==
      g.eos_token_ids->end()) {
    fail(fmt::format("eos_token_id does not include {}'s <|endoftext|> = {}", tok, sp.end_of_text));
  }
  for (const int id : *g.eos_token_ids) {
    if (id >= config_.vocab_size) {
      fail(fmt::format("eos_token_id {} is outside the vocabulary of {} tokens", id,
                       config_.vocab_size));
    }
  }
  agree("no_timestamps_token_id", g.no_timestamps_token_id, sp.no_timestamps, "<|notimestamps|>");
  if (sp.start_of_prev) {
    agree("prev_sot_token_id", g.prev_sot_token_id, *sp.start_of_prev, "<|startofprev|>");
  }
  if (!g.pad_token_id) g.pad_token_id = config_.pad_token_id;

  for (const auto& [name, id] : g.lang_to_id) {
    const auto actual = tokenizer_.special_token(name);
    if (!actual || !tokenizer_.language_code(*actual)) {
      fail(fmt::format("lang_to_id names {}, which {} has no language token for", name, tok));
    }
    if (*actual != id)
      fail(fmt::format("lang_to_id maps {} to {} but {} has it at {}", name, id, tok, *actual));
  }
  if (g.lang_to_id.empty()) {
    for (const auto& [code, id] : sp.languages)
      g.lang_to_id.emplace(fmt::format("<|{}|>", code), id);
  }
  for (const auto& [task, id] : g.task_to_id) {
    const int expected = task == "transcribe"  ? sp.transcribe
                         : task == "translate" ? sp.translate
                                               : -1;
    if (expected < 0) fail(fmt::format("task_to_id names unknown task \"{}\"", task));
    if (id != expected)
      fail(fmt::format("task_to_id maps {} to {} but {} has it at {}", task, id, tok, expected));
  }
  g.task_to_id.emplace("transcribe", sp.transcribe);
  g.task_to_id.emplace("translate", sp.translate);
  if (g.is_multilingual && *g.is_multilingual != tokenizer_.multilingual()) {
    fail(fmt::format(
        "is_multilingual is {} but {} is {} vocabulary of {} tokens", *g.is_multilingual, tok,
        tokenizer_.multilingual() ? "a multilingual" : "an English-only", tokenizer_.size()));
  }
  g.is_multilingual = tokenizer_.multilingual();

  if (!g.suppress_tokens) g.suppress_tokens = config_.suppress_tokens;
  if (!g.suppress_tokens) {
    g.suppress_tokens = tokenizer_.non_speech_tokens();  // openai/whisper's suppress_tokens="-1"
    suppress_tokens_default_ = true;
  }
  if (!g.begin_suppress_tokens) g.begin_suppress_tokens = config_.begin_suppress_tokens;
  if (!g.begin_suppress_tokens) {
    g.begin_suppress_tokens = std::vector<int>{tokenizer_.encode(" ").front(), sp.end_of_text};
  }
  for (const auto* list : {&*g.suppress_tokens, &*g.begin_suppress_tokens}) {
    for (const int id : *list) {
      if (id >= config_.vocab_size) {
        fail(fmt::format("{} holds {}, outside the vocabulary of {} tokens",
                         list == &*g.suppress_tokens ? "suppress_tokens" : "begin_suppress_tokens",
                         id, config_.vocab_size));
      }
    }
  }

  if (!g.alignment_heads) {
    // openai/whisper's default: every head of the last half of the decoder layers.
    std::vector<AlignmentHead> heads;
    for (int layer = config_.decoder_layers / 2; layer < config_.decoder_layers; ++layer) {
      for (int head = 0; head < config_.decoder_attention_heads; ++head)
        heads.push_back({layer, head});
    }
    g.alignment_heads = std::move(heads);
    alignment_heads_default_ = true;
  }
  for (const AlignmentHead& h : *g.alignment_heads) {
    if (h.layer >= config_.decoder_layers || h.head >= config_.decoder_attention_heads) {
      fail(
          fmt::format("alignment head [{}, {}] does not exist: the decoder has {} layers of {} "
                      "heads",
                      h.layer, h.head, config_.decoder_layers, config_.decoder_attention_heads));
    }
  }
  if (g.max_initial_timestamp_index >= sp.timestamp_count) {
    fail(fmt::format("max_initial_timestamp_index {} is past the last timestamp token",
                     g.max_initial_timestamp_index));
  }
}

}  // namespace ifw::model
