#include "pipeline/transcriber.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <memory>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <ifw/audio.hpp>
#include <ifw/error.hpp>

#include "audio/audio_decoder.hpp"
#include "decode/greedy.hpp"
#include "decode/language_detection.hpp"
#include "decode/segments.hpp"
#include "decode/token_timestamps.hpp"
#include "decode/window_stats.hpp"
#include "model/languages.hpp"
#include "pipeline/chunker.hpp"
#include "pipeline/words.hpp"

namespace ifw::pipeline {
namespace {

constexpr int kEncoderFrames = kFramesPerWindow / 2;  // 1500 positions, 20 ms each
constexpr int kSamplesPerFrame = kHopLength;          // 10 ms mel frames

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string strip(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\n") - b + 1);
}

}  // namespace

struct Transcriber::File {
  int index = 0;
  std::string path;
  std::unique_ptr<audio::AudioDecoder> decoder;
  std::unique_ptr<Chunker> chunker;
  Transcript transcript;
  std::optional<model::TokenId> language_token;
  bool input_done = false;
  bool finished = false;
  int windows_read = 0;
  int windows_done = 0;
  double duration_hint = -1.0;
  std::int64_t samples_read = 0;
  std::string error;  // a failure while reading; the file is finished with what was done

  int windows_estimate() const {
    const int by_duration =
        duration_hint > 0 ? static_cast<int>(std::ceil(duration_hint / kWindowSeconds)) : 0;
    return std::max({windows_read + (input_done ? 0 : 1), by_duration, windows_done});
  }
};

struct Transcriber::Item {
  File* file = nullptr;
  AudioWindow window;
};

Transcriber::Transcriber(const model::ModelFolder& folder, const engine::WhisperModel& model,
                         TranscribeOptions options)
    : folder_(folder), model_(model), options_(std::move(options)) {
  const model::Tokenizer& tok = folder_.tokenizer();
  if (options_.task != "transcribe" && options_.task != "translate") {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("task \"{}\": use transcribe or translate", options_.task));
  }
  if (!tok.multilingual() && options_.task == "translate") {
    throw Error(ErrorKind::kInvalidArgument, "this model is English-only: it cannot translate");
  }
  if (options_.language) {
    std::string code = lower(strip(*options_.language));
    if (const auto by_name = model::language_index_by_name(code)) {
      code = std::string(model::whisper_languages()[static_cast<std::size_t>(*by_name)].code);
    }
    if (!tok.multilingual()) {
      if (code != "en") {
        throw Error(ErrorKind::kInvalidArgument,
                    fmt::format("language \"{}\": this model is English-only", *options_.language));
      }
    } else {
      language_token_ = tok.language_token(code);
      if (!language_token_) {
        throw Error(
            ErrorKind::kInvalidArgument,
            fmt::format("language \"{}\" is not one of this model's {} languages (codes such as "
                        "en, de, zh, or names such as english)",
                        *options_.language, tok.specials().languages.size()));
      }
    }
    options_.language = code;
  } else if (!tok.multilingual()) {
    options_.language = "en";
  }
  if (options_.batch_size < 1 || options_.batch_size > 256) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("batch size {}: use 1 to 256", options_.batch_size));
  }
  if (options_.max_new_tokens < 1 ||
      options_.max_new_tokens > model_.config().max_target_positions) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("max new tokens {}: use 1 to {}", options_.max_new_tokens,
                            model_.config().max_target_positions));
  }
  if (options_.temperature < 0.0 || options_.temperature > 10.0 ||
      !std::isfinite(options_.temperature)) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("temperature {}: use 0 to 10", options_.temperature));
  }
  if (const std::string prompt = strip(options_.prompt); !prompt.empty()) {
    // openai/whisper: <|startofprev|> then the prompt's last (text context / 2 - 1) tokens.
    const auto& sp = tok.specials();
    if (!sp.start_of_prev)
      throw Error(ErrorKind::kUnsupported,
                  "this model's vocabulary has no <|startofprev|> for a prompt");
    std::vector<model::TokenId> ids = tok.encode(" " + prompt);
    const auto keep = static_cast<std::size_t>(model_.config().max_target_positions / 2 - 1);
    if (ids.size() > keep) ids.erase(ids.begin(), ids.end() - static_cast<std::ptrdiff_t>(keep));
    prompt_prefix_.push_back(*sp.start_of_prev);
    prompt_prefix_.insert(prompt_prefix_.end(), ids.begin(), ids.end());
  }
}

void Transcriber::run(const std::vector<std::string>& paths, const CancellationToken& cancel,
                      const std::function<void(const ProgressEvent&)>& on_progress,
                      const std::function<void(FileResult&&)>& on_result) {
  cancel_ = &cancel;
  std::vector<std::unique_ptr<File>> open;  // started and not yet handed over
  std::size_t next_path = 0;

  const auto finish = [&](File& f) {
    if (f.finished) return;
    f.finished = true;
    FileResult r;
    r.file = f.index;
    r.path = f.path;
    r.transcript = std::move(f.transcript);
    r.transcript.task = options_.task;
    r.transcript.duration = static_cast<double>(f.samples_read) / kSampleRate;
    if (r.transcript.language.empty() && options_.language)
      r.transcript.language = *options_.language;
    // Audio that stops well before the length the container states was cut short.
    const double decoded = static_cast<double>(f.samples_read) / kSampleRate;
    const double tolerance = std::max(
        1.0, f.duration_hint * (f.decoder && f.decoder->duration_is_estimate() ? 0.25 : 0.02));
    if (f.decoder && !cancel_->cancelled() && f.error.empty() && f.duration_hint > 0 &&
        f.duration_hint - decoded > tolerance) {
      f.error = fmt::format(
          "{}: the audio ends at {:.1f} s but the file says it lasts {:.1f} s (truncated or "
          "damaged); the transcript covers what could be decoded",
          f.path, decoded, f.duration_hint);
    }
    if (f.decoder && f.decoder->damaged_packets() > 0 && f.error.empty()) {
      f.error = fmt::format(
          "{}: {} damaged or truncated part(s) of the audio could not be decoded; the "
          "transcript covers what could",
          f.path, f.decoder->damaged_packets());
    }
    if (!f.error.empty()) {
      r.ok = false;
      r.error = f.error;
      r.transcript.partial = true;
    }
    for (std::size_t i = 0; i < r.transcript.segments.size(); ++i)
      r.transcript.segments[i].id = static_cast<int>(i);
    f.chunker.reset();  // reads through the decoder: goes first
    f.decoder.reset();
    on_progress({r.ok ? ProgressEvent::Kind::kFileDone : ProgressEvent::Kind::kFileFailed, f.index,
                 f.path, f.windows_done, f.windows_done, r.transcript.duration,
                 r.transcript.duration, r.error});
    on_result(std::move(r));
  };

  const auto open_next = [&]() -> File* {
    while (next_path < paths.size()) {
      auto f = std::make_unique<File>();
      f->index = static_cast<int>(next_path);
      f->path = paths[next_path++];
      try {
        f->decoder = std::make_unique<audio::AudioDecoder>(f->path);
      } catch (const Error& e) {
        on_progress({ProgressEvent::Kind::kFileFailed, f->index, f->path, 0, 0, 0, 0, e.what()});
        FileResult r;
        r.file = f->index;
        r.path = f->path;
        r.ok = false;
        r.error = e.what();
        on_result(std::move(r));
        continue;
      }
      f->duration_hint = f->decoder->duration_seconds();
      audio::AudioDecoder* decoder = f->decoder.get();
      f->chunker =
          std::make_unique<Chunker>([decoder](std::span<float> out) { return decoder->read(out); });
      if (options_.language) f->transcript.language = *options_.language;
      on_progress({ProgressEvent::Kind::kFileStarted, f->index, f->path, 0, f->windows_estimate(),
                   0, std::max(f->duration_hint, 0.0), ""});
      open.push_back(std::move(f));
      return open.back().get();
    }
    return nullptr;
  };

  File* current = nullptr;
  while (!cancel.cancelled()) {
    std::vector<Item> batch;
    while (static_cast<int>(batch.size()) < options_.batch_size) {
      if (current == nullptr || current->input_done) {
        current = open_next();
        if (current == nullptr) break;
      }
      std::optional<AudioWindow> w;
      try {
        w = current->chunker->next();
      } catch (const Error& e) {
        current->error = e.what();  // keep what was decoded so far
        current->input_done = true;
        continue;
      }
      if (!w) {
        current->input_done = true;
        continue;
      }
      ++current->windows_read;
      current->samples_read = w->start_sample + static_cast<std::int64_t>(w->samples.size());
      if (w->last) current->input_done = true;
      batch.push_back({current, std::move(*w)});
    }
    if (!batch.empty()) process_batch(batch, on_progress);
    // Hand over every file whose last window is done.
    for (auto& f : open) {
      if (f->input_done && f->windows_done == f->windows_read) finish(*f);
    }
    std::erase_if(open, [](const auto& f) { return f->finished; });
    if (batch.empty() && open.empty() && next_path >= paths.size()) break;
  }
  if (cancel.cancelled()) {
    // Stopped: what each started file has finished is kept, marked partial.
    for (auto& f : open) {
      f->transcript.partial = true;
      if (f->error.empty())
        f->error = fmt::format("{}: cancelled after {} of its windows", f->path, f->windows_done);
      finish(*f);
    }
  }
}

void Transcriber::process_batch(std::vector<Item>& batch,
                                const std::function<void(const ProgressEvent&)>& on_progress) {
  const model::Tokenizer& tok = folder_.tokenizer();
  const auto& sp = tok.specials();
  const auto& gen = folder_.generation();
  const int n = static_cast<int>(batch.size());
  const int n_mels = model_.config().num_mel_bins;
  const std::size_t per_window = static_cast<std::size_t>(n_mels) * kFramesPerWindow;

  std::vector<float> mels(per_window * static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    const auto mel = log_mel_spectrogram(batch[static_cast<std::size_t>(i)].window.samples, n_mels);
    std::copy(mel.begin(), mel.end(),
              mels.begin() + static_cast<std::ptrdiff_t>(per_window * static_cast<std::size_t>(i)));
  }
  const backend::Tensor states = model_.encode(mels, n);

  // A file's language, when not given, is detected on its first window (as openai/whisper).
  for (int i = 0; i < n; ++i) {
    File& f = *batch[static_cast<std::size_t>(i)].file;
    if (language_token_ || f.language_token || !tok.multilingual()) continue;
    const auto probs =
        decode::detect_language(model_, states.rows(i, 1), sp.start_of_transcript, sp.languages)[0];
    f.language_token = tok.language_token(probs.front().code);
    f.transcript.language = probs.front().code;
    spdlog::debug("{}: detected language {} ({:.2f})", f.path, probs.front().code,
                  probs.front().probability);
  }

  const bool timestamps = options_.timestamps != TimestampMode::kNone;
  decode::DecodingRules rules;
  rules.suppress_tokens.assign(gen.suppress_tokens->begin(), gen.suppress_tokens->end());
  rules.begin_suppress_tokens.assign(gen.begin_suppress_tokens->begin(),
                                     gen.begin_suppress_tokens->end());
  rules.timestamps = timestamps;
  rules.end_of_text = sp.end_of_text;
  rules.no_timestamps = sp.no_timestamps;
  rules.timestamp_begin = sp.timestamp_begin;
  rules.max_initial_timestamp_index = gen.max_initial_timestamp_index;

  decode::GreedyOptions o;
  for (int i = 0; i < n; ++i) {
    const File& f = *batch[static_cast<std::size_t>(i)].file;
    std::vector<model::TokenId> p = prompt_prefix_;
    p.push_back(sp.start_of_transcript);
    if (tok.multilingual()) {
      p.push_back(language_token_ ? *language_token_ : *f.language_token);
      p.push_back(options_.task == "translate" ? sp.translate : sp.transcribe);
    }
    if (!timestamps) p.push_back(sp.no_timestamps);
    o.item_prompts.push_back(std::move(p));
  }
  o.max_new_tokens = options_.max_new_tokens;
  o.rules = &rules;
  o.end_tokens = *gen.eos_token_ids;
  o.no_speech_token = sp.no_speech;
  o.start_of_transcript = sp.start_of_transcript;
  if (options_.word_timings) o.alignment_heads = *gen.alignment_heads;
  o.temperature = options_.temperature;
  o.stop = [this] { return cancel_ != nullptr && cancel_->cancelled(); };
  const auto results = decode::greedy_decode(model_, states, o);
  if (!results.empty() && results.front().stopped) return;  // cancelled: this batch is not kept

  for (int i = 0; i < n; ++i) {
    Item& item = batch[static_cast<std::size_t>(i)];
    File& f = *item.file;
    const decode::GreedyResult& r = results[static_cast<std::size_t>(i)];
    std::vector<model::TokenId> tokens = r.tokens;
    if (r.ended && !tokens.empty()) tokens.pop_back();  // the end of text closes, it is not text

    const int start_frame = static_cast<int>(item.window.start_sample / kSamplesPerFrame);
    const int frames =
        static_cast<int>((item.window.samples.size() + kSamplesPerFrame - 1) / kSamplesPerFrame);
    const double window_start = static_cast<double>(item.window.start_sample) / kSampleRate;
    const double window_end =
        window_start + static_cast<double>(item.window.samples.size()) / kSampleRate;
    const double avg_logprob = decode::average_logprob(r.sum_logprob, tokens.size());
    const std::string window_text = tok.decode(tokens);
    const double compression = decode::compression_ratio(window_text);
    const bool silent =
        r.no_speech_prob > options_.no_speech_threshold && avg_logprob < options_.logprob_threshold;

    if (!silent && !strip(window_text).empty()) {
      decode::WindowSegments split;
      if (timestamps) {
        split = decode::split_segments(tokens, sp.timestamp_begin, start_frame, frames);
      } else {
        split.segments.push_back({window_start, window_end, tokens});
      }
      std::vector<Word> words;
      if (options_.word_timings && !r.alignment.empty()) {
        const auto times = decode::pass_token_timestamps(
            r.alignment, r.prompt_length, kEncoderFrames, model_.config().median_filter_width);
        std::vector<double> token_times;
        for (std::size_t k = 0; k < tokens.size(); ++k) {
          token_times.push_back(window_start +
                                times[static_cast<std::size_t>(r.prompt_length) + k]);
        }
        words = words_from_tokens(tok, tokens, token_times,
                                  splits_on_characters(f.transcript.language));
      }
      std::size_t next_word = 0;
      for (const decode::Segment& s : split.segments) {
        Segment seg;
        seg.seek = start_frame;
        seg.start = std::clamp(s.start, window_start, window_end);
        seg.end = std::clamp(s.end, seg.start, window_end);
        seg.tokens.assign(s.tokens.begin(), s.tokens.end());
        seg.text = tok.decode(s.tokens);
        seg.temperature = options_.temperature;
        seg.avg_logprob = avg_logprob;
        seg.compression_ratio = compression;
        seg.no_speech_prob = r.no_speech_prob;
        // The words that start within this segment, held inside its bounds.
        while (next_word < words.size() &&
               (words[next_word].start < seg.end || &s == &split.segments.back())) {
          Word w = words[next_word++];
          w.start = std::clamp(w.start, seg.start, seg.end);
          w.end = std::clamp(w.end, w.start, seg.end);
          seg.words.push_back(std::move(w));
        }
        if (strip(seg.text).empty()) continue;
        f.transcript.segments.push_back(std::move(seg));
      }
    }
    ++f.windows_done;
    on_progress({ProgressEvent::Kind::kWindowDone, f.index, f.path, f.windows_done,
                 f.windows_estimate(), window_end, std::max(f.duration_hint, 0.0), ""});
  }
}

}  // namespace ifw::pipeline
