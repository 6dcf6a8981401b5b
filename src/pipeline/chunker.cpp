#include "pipeline/chunker.hpp"

#include <algorithm>
#include <limits>

#include <ifw/audio.hpp>

namespace ifw::pipeline {
namespace {

constexpr std::size_t kQuietFrame = kSampleRate / 50;  // 20 ms

}  // namespace

Chunker::Chunker(Reader read, ChunkerOptions options) : read_(std::move(read)), options_(options) {}

std::size_t Chunker::quietest_point(const std::vector<float>& samples, std::size_t begin,
                                    std::size_t end) {
  end = std::min(end, samples.size());
  if (end <= begin + kQuietFrame) return end;
  std::size_t best = end;
  double best_energy = std::numeric_limits<double>::infinity();
  // Energy of 20 ms frames; the cut goes in the middle of the quietest (latest on ties).
  for (std::size_t f = begin; f + kQuietFrame <= end; f += kQuietFrame / 2) {
    double energy = 0.0;
    for (std::size_t i = f; i < f + kQuietFrame; ++i)
      energy += static_cast<double>(samples[i]) * samples[i];
    if (energy <= best_energy) {
      best_energy = energy;
      best = f + kQuietFrame / 2;
    }
  }
  return best;
}

std::optional<AudioWindow> Chunker::next() {
  const auto window = static_cast<std::size_t>(options_.window_seconds * kSampleRate);
  const auto search = static_cast<std::size_t>(options_.search_seconds * kSampleRate);
  // Fill up to one window plus a frame of lookahead (to know whether audio follows).
  while (!eof_ && buffer_.size() < window + kQuietFrame) {
    const std::size_t old = buffer_.size();
    buffer_.resize(window + kQuietFrame);
    const std::size_t got = read_(std::span<float>(buffer_.data() + old, buffer_.size() - old));
    buffer_.resize(old + got);
    if (got == 0) eof_ = true;
  }
  if (buffer_.empty()) return std::nullopt;

  AudioWindow w;
  w.start_sample = buffer_start_;
  std::size_t cut;
  if (buffer_.size() <= window) {
    cut = buffer_.size();  // the rest of the file fits
    w.last = eof_;
  } else {
    cut = quietest_point(buffer_, window - std::min(search, window), window);
  }
  w.samples.assign(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(cut));
  buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(cut));
  buffer_start_ += static_cast<std::int64_t>(cut);
  if (buffer_.empty() && eof_) w.last = true;
  return w;
}

}  // namespace ifw::pipeline
