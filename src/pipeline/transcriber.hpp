// Transcribing files: each file cut into windows at quiet points, windows of all files decoded
// together in batches, their segments merged per file. Memory stays proportional to the batch,
// not to the length of the audio; every file is handed over as soon as it is finished.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <ifw/transcript.hpp>

#include "engine/whisper_model.hpp"
#include "model/model_folder.hpp"
#include "pipeline/cancellation.hpp"

namespace ifw::pipeline {

enum class TimestampMode { kNone, kSegment, kWord };

struct TranscribeOptions {
  std::string task = "transcribe";      // or "translate"
  std::optional<std::string> language;  // code ("en") or name ("english"); detected when absent
  TimestampMode timestamps = TimestampMode::kSegment;
  bool word_timings = false;  // time every word (for word output or readable subtitles)
  int batch_size = 8;
  int max_new_tokens = 224;  // per window (openai/whisper: half the text context)
  std::string prompt;        // text that conditions every window (names, spelling)
  double temperature = 0.0;
  // A window is skipped as silence when its no-speech probability is above the first and its
  // average log-probability below the second (openai/whisper's rule).
  double no_speech_threshold = 0.6;
  double logprob_threshold = -1.0;
};

struct ProgressEvent {
  enum class Kind { kFileStarted, kWindowDone, kFileDone, kFileFailed };
  Kind kind;
  int file = 0;  // index in the list of paths
  std::string path;
  int windows_done = 0;
  int windows_total = 0;     // estimated from the file's duration until its end is reached
  double audio_done = 0.0;   // seconds of this file's audio decoded
  double audio_total = 0.0;  // its duration (0 when unknown)
  std::string message;       // for failures
};

struct FileResult {
  int file = 0;
  std::string path;
  Transcript transcript;
  bool ok = true;     // false: the file could not be (fully) transcribed
  std::string error;  // why, when not ok
};

class Transcriber {
 public:
  // Checks the options against the model (language, task); throws ifw::Error (kInvalidArgument).
  Transcriber(const model::ModelFolder& folder, const engine::WhisperModel& model,
              TranscribeOptions options);

  // Transcribes every path ("-" is standard input). `on_result` receives each file as soon as it
  // is done, failed, or (after cancellation) stopped with what was finished marked partial.
  void run(const std::vector<std::string>& paths, const CancellationToken& cancel,
           const std::function<void(const ProgressEvent&)>& on_progress,
           const std::function<void(FileResult&&)>& on_result);

 private:
  struct File;
  struct Item;
  void process_batch(std::vector<Item>& batch,
                     const std::function<void(const ProgressEvent&)>& on_progress);

  const model::ModelFolder& folder_;
  const engine::WhisperModel& model_;
  TranscribeOptions options_;
  std::optional<model::TokenId> language_token_;  // fixed by the options, or per file
  std::vector<model::TokenId> prompt_prefix_;     // <|startofprev|> and the prompt's tokens
  const CancellationToken* cancel_ = nullptr;     // of the current run
};

}  // namespace ifw::pipeline
