#include "audio/read_ahead.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include <ifw/audio.hpp>

namespace ifw::audio {
namespace {

constexpr std::int64_t kNone = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kChunk = 10 * kSampleRate;  // read in pieces, a stop checked between them
// A segment's decoder starts a second early; the last half second before the boundary (the codec
// has settled by then) and the first second after it are compared with the segment before.
constexpr std::int64_t kPreroll = kSampleRate;
constexpr std::int64_t kCheckBefore = kSampleRate / 2;
constexpr std::int64_t kCheckAfter = kSampleRate;
// A seek that lands this much earlier than asked (a container without an index) is not used.
constexpr std::int64_t kMaxEarly = 30 * kSampleRate;
// Matching starts differ by the codec's rounding only (measured: below 1e-4 relative for MP3, AAC,
// Opus, Vorbis, FLAC); a start one sample off differs by far more.
constexpr double kTolerance = 2e-3;
// Mean square below which a stretch is silence (-100 dBFS): any offset would match it.
constexpr double kSilence = 1e-10;
// Checks failing in a row before seeking is given up for the file (its seeks are not exact).
constexpr int kFailuresToGiveUp = 3;

struct Segment {
  std::int64_t first = 0;                 // stream position of samples[0]
  std::vector<float> samples;             // up to the next segment's start and kCheckAfter beyond
  std::unique_ptr<AudioDecoder> decoder;  // positioned after `samples` (parallel reading)
  bool end = false;                       // the audio ends after `samples`
  bool usable = true;                     // false: the seek failed or landed too far away
  int damaged = 0;                        // damaged packets in the segment proper
  int damaged_mark = 0;                   // the decoder's count where the segment proper ends
  std::exception_ptr error;               // reading failed after `samples`
};

}  // namespace

struct ReadAhead::State {
  ReadAheadOptions options;
  std::string path;
  bool parallel = false;
  std::int64_t segment = 0;  // samples per segment
  int planned = 0;           // parallel reading: segments (the last one reads on to the end)
  int max_ahead = 2;         // segments decoded and not yet taken, at most

  // Shared with the workers, under `mutex`.
  std::mutex mutex;
  std::condition_variable changed;
  std::atomic<bool> stop{false};
  bool seeking_off = false;
  int next = 0;      // the next segment a worker takes
  int consumed = 0;  // segments the reader has taken
  std::map<int, Segment> done;
  std::unique_ptr<AudioDecoder> first_decoder;  // segment 0's (the only one when sequential)
  std::vector<std::thread> workers;

  // The reader's own.
  std::vector<float> buffer;
  std::int64_t buffer_first = 0;  // stream position of buffer[0]
  std::int64_t out = 0;           // of the next sample handed out
  std::int64_t boundary = 0;      // where the next segment starts (kNone: no further segment)
  int index = -1;                 // the segment being handed out
  std::unique_ptr<AudioDecoder> decoder;  // parallel reading: reads on where a check failed
  int decoder_mark = 0;                   // its damaged packets already counted
  bool end = false;
  std::exception_ptr error;
  int damaged = 0;
  int failures_in_row = 0;
  ReadAheadStats stats;

  std::int64_t buffer_end() const {
    return buffer_first + static_cast<std::int64_t>(buffer.size());
  }

  // Appends samples from `dec` to `to` until `dec` is at `target`; false at the end of the audio
  // or on a stop.
  bool read_until(AudioDecoder& dec, std::vector<float>& to, std::int64_t target) {
    while (dec.position() < target) {
      if (stop) return false;
      const auto n = static_cast<std::size_t>(std::min(target - dec.position(), kChunk));
      const std::size_t old = to.size();
      to.resize(old + n);
      const std::size_t got = dec.read(std::span<float>(to.data() + old, n));
      to.resize(old + got);
      if (got < n) return false;
    }
    return true;
  }

  void sequential_worker() {
    AudioDecoder& dec = *first_decoder;
    for (int k = 0;; ++k) {
      {
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] { return stop || k < consumed + max_ahead; });
        if (stop) return;
      }
      Segment s;
      s.first = dec.position();
      const int before = dec.damaged_packets();
      try {
        s.end = !read_until(dec, s.samples, s.first + segment);
      } catch (...) {
        s.error = std::current_exception();
        s.end = true;
      }
      s.damaged = dec.damaged_packets() - before;
      const bool last = s.end;
      {
        const std::lock_guard lock(mutex);
        done.emplace(k, std::move(s));
      }
      changed.notify_all();
      if (last || stop) return;
    }
  }

  void parallel_worker() {
    for (;;) {
      int k = 0;
      {
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] {
          return stop || seeking_off || next >= planned || next < consumed + max_ahead;
        });
        if (stop || seeking_off || next >= planned) return;
        k = next++;
      }
      Segment s = decode_segment(k);
      {
        const std::lock_guard lock(mutex);
        done.emplace(k, std::move(s));
      }
      changed.notify_all();
    }
  }

  // Segment k of a parallel reading: from a second before its start (segment 0: from the start)
  // to kCheckAfter past the next one's (the last: to the end of the audio, at most two segments).
  Segment decode_segment(int k) {
    Segment s;
    const std::int64_t begin = k * segment;
    const bool last = k + 1 >= planned;
    const std::int64_t next_begin = last ? begin + 2 * segment : begin + segment;
    try {
      if (k == 0) {
        s.decoder = std::move(first_decoder);
      } else {
        s.decoder = std::make_unique<AudioDecoder>(path);
        const std::int64_t at = s.decoder->seek(begin - kPreroll);
        if (at < 0 || at > begin - kCheckBefore || at < begin - kPreroll - kMaxEarly) {
          s.usable = false;
          s.decoder.reset();
          return s;
        }
      }
      AudioDecoder& dec = *s.decoder;
      s.first = dec.position();
      if (!read_until(dec, s.samples, begin)) {
        s.end = true;
        return s;
      }
      const int before = dec.damaged_packets();
      s.end = !read_until(dec, s.samples, next_begin);
      s.damaged = s.damaged_mark = dec.damaged_packets();
      s.damaged -= before;
      if (!s.end && !last) s.end = !read_until(dec, s.samples, next_begin + kCheckAfter);
    } catch (...) {
      s.error = std::current_exception();
      s.end = true;
    }
    return s;
  }

  // Whether `s` starts where the audio handed out so far goes on: the samples both have around
  // the boundary agree.
  bool continues(const Segment& s) const {
    if (!s.usable || !s.decoder) return false;
    const std::int64_t lo = boundary - kCheckBefore;
    const std::int64_t hi = std::min({boundary + kCheckAfter, buffer_end(),
                                      s.first + static_cast<std::int64_t>(s.samples.size())});
    if (lo < buffer_first || lo < s.first || hi - lo < kCheckBefore) return false;
    double energy = 0.0;
    double difference = 0.0;
    for (std::int64_t t = lo; t < hi; ++t) {
      const double a = buffer[static_cast<std::size_t>(t - buffer_first)];
      const double b = s.samples[static_cast<std::size_t>(t - s.first)];
      energy += a * a;
      difference += (a - b) * (a - b);
    }
    if (energy < kSilence * static_cast<double>(hi - lo)) return false;
    return difference <= kTolerance * kTolerance * energy;
  }

  void adopt(Segment& s) {
    buffer = std::move(s.samples);
    buffer_first = s.first;
    decoder = std::move(s.decoder);
    decoder_mark = s.damaged_mark;
    end = s.end;
    error = s.error;
    damaged += s.damaged;
  }

  // At `boundary`: the next segment takes over, or (parallel, its start did not match) the
  // decoder before it reads on.
  void cross() {
    const int k = index + 1;
    std::optional<Segment> s;
    {
      std::unique_lock lock(mutex);
      changed.wait(lock, [&] { return done.count(k) > 0 || (seeking_off && next <= k); });
      if (auto it = done.find(k); it != done.end()) {
        s = std::move(it->second);
        done.erase(it);
      }
      consumed = k + 1;
    }
    changed.notify_all();
    index = k;
    ++stats.segments;
    if (!parallel) {
      adopt(*s);
      boundary = end ? kNone : buffer_end();
      return;
    }
    if (k == 0) {
      adopt(*s);
    } else if (s && continues(*s)) {
      adopt(*s);
      ++stats.joined;
      failures_in_row = 0;
    } else {
      ++stats.read_on;
      if (++failures_in_row >= kFailuresToGiveUp) {
        spdlog::debug("{}: seeking gave no matching audio {} times; reading on in one piece", path,
                      failures_in_row);
        {
          const std::lock_guard lock(mutex);
          seeking_off = true;
        }
        changed.notify_all();
      }
    }
    boundary = (k + 1 < planned && !seeking_off) ? (k + 1) * segment : kNone;
  }

  // Parallel reading: the current decoder goes on (up to the next boundary and the stretch
  // compared after it).
  void read_on() {
    const std::int64_t keep = std::max(buffer_first, out - kCheckBefore);
    buffer.erase(buffer.begin(), buffer.begin() + (keep - buffer_first));
    buffer_first = keep;
    const std::int64_t target = boundary == kNone ? buffer_end() + segment : boundary + kCheckAfter;
    try {
      if (!decoder || !read_until(*decoder, buffer, target)) end = true;
    } catch (...) {
      error = std::current_exception();
      end = true;
    }
    if (decoder) {
      damaged += decoder->damaged_packets() - decoder_mark;
      decoder_mark = decoder->damaged_packets();
    }
  }
};

ReadAhead::ReadAhead(std::unique_ptr<AudioDecoder> decoder, ReadAheadOptions options)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.options = options;
  s.path = decoder->path();
  s.segment = std::max<std::int64_t>(
      kCheckBefore + kCheckAfter + kPreroll,
      static_cast<std::int64_t>(std::llround(options.segment_seconds * kSampleRate)));
  s.max_ahead = std::max(2, static_cast<int>(options.ahead_seconds / options.segment_seconds));
  const double duration = decoder->duration_seconds();
  const auto planned = static_cast<std::int64_t>(std::ceil(duration * kSampleRate / s.segment));
  s.parallel = options.threads > 1 && duration > 0 && !decoder->duration_is_estimate() &&
               planned >= 2 && decoder->seekable();
  s.first_decoder = std::move(decoder);
  if (s.parallel) {
    s.planned = static_cast<int>(planned);
    const int threads = std::min({options.threads, s.max_ahead, s.planned});
    for (int i = 0; i < threads; ++i)
      s.workers.emplace_back([&s] { s.parallel_worker(); });
  } else {
    s.workers.emplace_back([&s] { s.sequential_worker(); });
  }
}

ReadAhead::~ReadAhead() {
  State& s = *state_;
  {
    const std::lock_guard lock(s.mutex);
    s.stop = true;
  }
  s.changed.notify_all();
  for (std::thread& t : s.workers)
    t.join();
}

std::size_t ReadAhead::read(std::span<float> out) {
  State& s = *state_;
  std::size_t written = 0;
  while (written < out.size()) {
    const std::int64_t limit = std::min(s.buffer_end(), s.boundary);
    if (s.out < limit) {
      const auto n = static_cast<std::size_t>(
          std::min<std::int64_t>(limit - s.out, static_cast<std::int64_t>(out.size() - written)));
      std::copy_n(s.buffer.begin() + (s.out - s.buffer_first), n, out.begin() + written);
      s.out += static_cast<std::int64_t>(n);
      written += n;
      continue;
    }
    if (s.out == s.boundary) {
      s.cross();
      continue;
    }
    if (s.end) {
      if (s.error) std::rethrow_exception(std::exchange(s.error, nullptr));
      break;
    }
    s.read_on();
  }
  return written;
}

int ReadAhead::damaged_packets() const {
  return state_->damaged;
}

bool ReadAhead::parallel() const {
  return state_->parallel;
}

ReadAheadStats ReadAhead::stats() const {
  return state_->stats;
}

}  // namespace ifw::audio
