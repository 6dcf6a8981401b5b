// Transcribing files: each file cut into windows at quiet points, windows of all files decoded
// together in batches, their segments merged per file. Memory stays proportional to the batch,
// not to the length of the audio; every file is handed over as soon as it is finished.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <ifw/error.hpp>
#include <ifw/transcript.hpp>

#include "audio/log_mel.hpp"
#include "audio/read_ahead.hpp"
#include "decode/logits_rules.hpp"
#include "engine/whisper_model.hpp"
#include "model/model_folder.hpp"
#include "pipeline/cancellation.hpp"
#include "pipeline/job_source.hpp"
#include "pipeline/voice_activity.hpp"
#include "util/thread_pool.hpp"

namespace ifw::pipeline {

struct AudioWindow;

enum class TimestampMode { kNone, kSegment, kWord };

enum class Strategy {
  kBatched,     // independent windows cut at quiet points, decoded many at a time (fast)
  kSequential,  // openai/whisper's loop: each window starts where the last ended, previous text as
                // prompt
};

struct TranscribeOptions {
  std::string task = "transcribe";      // or "translate"
  std::optional<std::string> language;  // code ("en") or name ("english"); detected when absent
  TimestampMode timestamps = TimestampMode::kSegment;
  bool word_timings = false;  // time every word (for word output or readable subtitles)
  Strategy strategy = Strategy::kBatched;
  bool voice_activity = false;  // skip silent stretches (energy-based)
  int batch_size = 8;
  // When even one window does not fit in the device's memory, or the device fails (a fault that
  // leaves it unusable to the process): load the model on the CPU and go on there (logged with
  // the reason) rather than fail.
  bool cpu_fallback = true;
  int max_new_tokens = 224;                // per window (openai/whisper: half the text context)
  std::string prompt;                      // text that conditions the windows (names, spelling)
  bool condition_on_previous_text = true;  // sequential: the last window's text as prompt
  // Temperature fallback (openai/whisper): a window whose text is too repetitive (compression
  // ratio above the threshold) or too unlikely (average log-probability below the threshold) is
  // decoded again at the next temperature, sampling best_of candidates.
  double temperature = 0.0;
  double temperature_increment = 0.2;  // 0: no fallback
  int best_of = 5;
  double compression_ratio_threshold = 2.4;
  // A window is skipped as silence when its no-speech probability is above the first and its
  // average log-probability below the second (openai/whisper's rule).
  double no_speech_threshold = 0.6;
  double logprob_threshold = -1.0;
  std::uint64_t seed = 0;  // for sampling
  // How many jobs are open at once. 0: a new one only once the open ones have no window ready
  // (the command line: files finish in order, few decoders open). Above 0: every job that has
  // come, up to this many — a short request starts at once beside a long one (the server).
  // Either way batches take one window per open job in turn.
  int max_open_jobs = 0;
  // Threads decoding one file's audio ahead of the model, segments at once (0: up to 8 beside a
  // GPU, one on the CPU, whose cores are the model's).
  int decode_threads = 0;
  // Whether the next batch's windows are read and their log-mel features computed on other
  // threads while a batch runs (batched strategy). Unset: beside a GPU, which would otherwise
  // wait for them; not on the CPU, whose cores are the model's.
  std::optional<bool> prepare_ahead;
};

struct ProgressEvent {
  enum class Kind { kFileStarted, kWindowDone, kFileDone, kFileFailed };
  Kind kind;
  int file = 0;  // the job's id (its place in the list of paths)
  std::string path;
  int windows_done = 0;
  int windows_total = 0;     // estimated from the file's duration until its end is reached
  double audio_done = 0.0;   // seconds of this file's audio decoded
  double audio_total = 0.0;  // its duration (0 when unknown)
  std::string message;       // for failures
  std::string text;          // kWindowDone: the text this window added (its segments' texts)
  // kWindowDone: which window (its first sample), how far its text reached, the segments it
  // added, and whether it was taken from the job's ResumeState rather than decoded. What a job
  // store keeps so that a restarted job need not decode the window again.
  std::int64_t window_start = -1;
  int frames_consumed = 0;
  std::vector<Segment> segments;
  bool restored = false;
  std::string language;  // the file's language once known (given or detected)
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
  // The same for jobs with options of their own; windows of different jobs still share batches.
  // A job whose options do not suit the model fails alone (its result says why).
  void run(const std::vector<Job>& jobs, const CancellationToken& cancel,
           const std::function<void(const ProgressEvent&)>& on_progress,
           const std::function<void(FileResult&&)>& on_result);
  // The same for jobs that keep coming (a server's requests): waits for them while idle, and
  // returns once the source is finished and every job is handed over, or when cancelled. A run
  // waiting for jobs sees only the source: close it too when cancelling (JobQueue::close).
  void run(JobSource& jobs, const CancellationToken& cancel,
           const std::function<void(const ProgressEvent&)>& on_progress,
           const std::function<void(FileResult&&)>& on_result);

  // Windows read, and their features computed, ahead of their batch (prepare_ahead) so far; the
  // most that waited at once (at most a batch: what bounds their memory); how long batches
  // waited for them in all (ms).
  std::int64_t windows_read_ahead() const { return windows_read_ahead_; }
  std::int64_t most_windows_ahead() const { return most_windows_ahead_; }
  double waited_for_windows_ahead_ms() const { return waited_ahead_ms_; }
  // Whether the model's device failed during a run (what runs since runs on the CPU). Any thread.
  bool device_failed() const { return device_failed_.load(); }
  // Host memory of the CPU copy of the model loaded for a fallback (0: none). Any thread.
  std::size_t cpu_copy_bytes() const { return cpu_copy_bytes_.load(); }

 private:
  struct File;
  struct Item;
  struct Decoded;
  struct Ahead;
  // A job's options checked against the model, with their tokens.
  struct ResolvedJob {
    std::string task;
    std::optional<std::string> language;           // code
    std::optional<model::TokenId> language_token;  // set when given, or once detected
    std::vector<model::TokenId> prompt_tokens;
    double temperature = 0.0;
    bool word_timings = false;
  };
  ResolvedJob resolve(const JobOptions& job) const;  // throws ifw::Error (kInvalidArgument)
  static ProgressEvent event(ProgressEvent::Kind kind, const File& f);
  // A window the job's ResumeState has: its segments taken as they are. False when it has not.
  bool restore(File& f, const Item& item,
               const std::function<void(const ProgressEvent&)>& on_progress);
  void process_batch(std::vector<Item>& batch,
                     const std::function<void(const ProgressEvent&)>& on_progress);
  // process_batch, in halves (and smaller batches from then on) when the device runs out of
  // memory. Decoder buffers the model kept from earlier batches (step graphs) may be what filled
  // the device: without them the same batch is tried once more (`retry`) before it is halved.
  void process_batch_fitting(std::vector<Item>& batch,
                             const std::function<void(const ProgressEvent&)>& on_progress,
                             bool retry = true);
  // Decodes every window at the lowest temperature that gives acceptable text.
  std::vector<Decoded> decode_with_fallback(const backend::Tensor& states,
                                            const std::vector<Item>& batch);
  bool decode_group(const backend::Tensor& states, const std::vector<Item>& batch,
                    const std::vector<std::int64_t>& group, double temperature, std::size_t step,
                    const decode::DecodingRules& rules, std::vector<Decoded>& out,
                    std::vector<std::int64_t>& still);
  std::vector<model::TokenId> prompt_for(const File& file) const;

  // Log-mel features of the batch's windows that have none yet, window by window on mel_pool_'s
  // threads. A window whose samples are refused leaves the batch and fails its file.
  void compute_features(std::vector<Item>& batch);
  // The features of `items`, into one buffer in their order, on `pool` (null or a single item:
  // on this thread); their samples are dropped then.
  void features_for(std::span<Item* const> items, util::ThreadPool* pool) const;
  // Starts reading the next batch's windows from `open` (in the order a batch takes them, from
  // `turn`) and computing their features, on other threads; take_ahead() waits for that and
  // hands the windows to their files.
  void start_ahead(Ahead& ahead, const std::vector<std::unique_ptr<File>>& open, std::size_t turn);
  void read_ahead(Ahead& ahead, int wanted) const;
  void take_ahead(Ahead& ahead);

  // The run goes on on the CPU (out of device memory for one window, or a failed device).
  void fall_back_to_cpu();
  // After `e`, a device failure: the CPU for good, logged (false: no fallback, `e` stands).
  bool leave_the_failed_device(const Error& e);
  // The model's backend's cached memory back to the device; a failed device found here is left
  // as one found during a batch.
  void release_cached_memory();
  // With nothing open and nothing waiting (a server between requests): back to the caller's model
  // and the full batch after a fallback or a halving, since what did not fit then (another model's
  // memory, a long request's) may fit now. The CPU copy stays loaded for a later fallback. Never
  // back to a device that failed.
  void return_to_the_device();
  // How a file's audio is read ahead (threads, how far), from the device, the batch and the
  // number of files open with it.
  audio::ReadAheadOptions read_ahead_options(int open_files) const;

  const model::ModelFolder& folder_;
  const engine::WhisperModel* device_model_;  // the caller's
  const engine::WhisperModel* model_;         // the caller's, or the CPU fallback's
  TranscribeOptions options_;
  std::unique_ptr<backend::Backend> fallback_backend_;
  std::unique_ptr<engine::WhisperModel> fallback_model_;
  // Made with the first batch of several windows: the CPU backend's thread count, or up to 16
  // cores beside a GPU (a batch of 64 windows is ~0.5 s of features on one core, as long as a
  // GPU takes to decode it).
  std::unique_ptr<util::ThreadPool> mel_pool_;
  std::unique_ptr<util::ThreadPool> ahead_pool_;               // the ahead task's (up to 16 cores)
  std::shared_ptr<const audio::LogMelSpectrogram> extractor_;  // the model's mel bins
  std::int64_t windows_read_ahead_ = 0;
  std::int64_t most_windows_ahead_ = 0;
  double waited_ahead_ms_ = 0.0;
  int batch_limit_ = 256;                   // lowered when a batch did not fit in device memory
  std::atomic<bool> device_failed_{false};  // the caller's model's device: for good
  std::atomic<std::size_t> cpu_copy_bytes_{0};
  ResolvedJob default_job_;  // the run's options, for jobs without their own
  VoiceActivity voice_activity_;
  const CancellationToken* cancel_ = nullptr;  // of the current run
};

}  // namespace ifw::pipeline
