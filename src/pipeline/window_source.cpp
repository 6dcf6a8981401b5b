#include "pipeline/window_source.hpp"

#include <algorithm>
#include <utility>

#include <ifw/audio.hpp>

namespace ifw::pipeline {
namespace {

class ChunkedWindows final : public WindowSource {
 public:
  ChunkedWindows(Chunker::Reader read, const VoiceActivity* vad)
      : chunker_([read = std::move(read), this](std::span<float> out) {
          const std::size_t n = read(out);
          read_ += static_cast<std::int64_t>(n);
          return n;
        }),
        vad_(vad) {}

  std::optional<AudioWindow> next() override {
    while (!exhausted_) {
      std::optional<AudioWindow> w = chunker_.next();
      if (!w) {
        exhausted_ = true;
        break;
      }
      if (w->last) exhausted_ = true;
      if (vad_ == nullptr) return w;
      // Silence before the speech is dropped; a window without speech is skipped.
      const std::size_t start = vad_->first_speech(w->samples, 0);
      if (start >= w->samples.size()) continue;
      w->samples.erase(w->samples.begin(), w->samples.begin() + static_cast<std::ptrdiff_t>(start));
      w->start_sample += static_cast<std::int64_t>(start);
      return w;
    }
    return std::nullopt;
  }
  void done(std::int64_t, std::size_t, int) override {}
  bool exhausted() const override { return exhausted_; }
  std::int64_t samples_read() const override { return read_; }

 private:
  std::int64_t read_ = 0;
  Chunker chunker_;
  const VoiceActivity* vad_;
  bool exhausted_ = false;
};

class SeekingWindows final : public WindowSource {
 public:
  SeekingWindows(Chunker::Reader read, const VoiceActivity* vad)
      : read_(std::move(read)), vad_(vad) {}

  std::optional<AudioWindow> next() override {
    if (in_flight_ || exhausted_) return std::nullopt;
    for (;;) {
      fill();
      drop_before(seek_);
      if (vad_ != nullptr) {
        const std::size_t start =
            vad_->first_speech(buffer_, static_cast<std::size_t>(seek_ - buffer_start_));
        if (start >= buffer_.size() && !eof_) {
          seek_ = buffer_start_ +
                  static_cast<std::int64_t>(buffer_.size());  // all silent so far: read on
          continue;
        }
        seek_ = buffer_start_ + static_cast<std::int64_t>(start);
      }
      break;
    }
    const auto offset = static_cast<std::size_t>(seek_ - buffer_start_);
    if (offset >= buffer_.size()) {
      exhausted_ = true;
      return std::nullopt;
    }
    AudioWindow w;
    w.start_sample = seek_;
    const std::size_t n = std::min(kWindowSamples, buffer_.size() - offset);
    w.samples.assign(buffer_.begin() + static_cast<std::ptrdiff_t>(offset),
                     buffer_.begin() + static_cast<std::ptrdiff_t>(offset + n));
    w.last = eof_ && offset + n >= buffer_.size();
    in_flight_ = true;
    return w;
  }

  void done(std::int64_t start_sample, std::size_t length, int frames_consumed) override {
    in_flight_ = false;
    const std::int64_t consumed = std::max<std::int64_t>(frames_consumed, 1) * kHopLength;
    seek_ =
        std::min(start_sample + std::min<std::int64_t>(consumed, static_cast<std::int64_t>(length)),
                 buffer_start_ + static_cast<std::int64_t>(buffer_.size()));
    if (eof_ && seek_ >= buffer_start_ + static_cast<std::int64_t>(buffer_.size()))
      exhausted_ = true;
  }
  bool exhausted() const override { return exhausted_ && !in_flight_; }
  std::int64_t samples_read() const override {
    return buffer_start_ + static_cast<std::int64_t>(buffer_.size());
  }

 private:
  // At least a window from seek_ on (or the rest of the file) in the buffer.
  void fill() {
    const auto needed = static_cast<std::size_t>(seek_ - buffer_start_) + kWindowSamples;
    while (!eof_ && buffer_.size() < needed) {
      const std::size_t old = buffer_.size();
      buffer_.resize(needed);
      const std::size_t got = read_(std::span<float>(buffer_.data() + old, needed - old));
      buffer_.resize(old + got);
      if (got == 0) eof_ = true;
    }
  }
  void drop_before(std::int64_t sample) {
    const auto n = static_cast<std::size_t>(std::clamp<std::int64_t>(
        sample - buffer_start_, 0, static_cast<std::int64_t>(buffer_.size())));
    buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(n));
    buffer_start_ += static_cast<std::int64_t>(n);
  }

  Chunker::Reader read_;
  const VoiceActivity* vad_;
  std::vector<float> buffer_;
  std::int64_t buffer_start_ = 0;
  std::int64_t seek_ = 0;
  bool eof_ = false;
  bool in_flight_ = false;
  bool exhausted_ = false;
};

}  // namespace

std::unique_ptr<WindowSource> chunked_windows(Chunker::Reader read, const VoiceActivity* vad) {
  return std::make_unique<ChunkedWindows>(std::move(read), vad);
}

std::unique_ptr<WindowSource> seeking_windows(Chunker::Reader read, const VoiceActivity* vad) {
  return std::make_unique<SeekingWindows>(std::move(read), vad);
}

}  // namespace ifw::pipeline
