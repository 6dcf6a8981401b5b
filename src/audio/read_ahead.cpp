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
// Stated durations from here on (a year) are not believed: the file is read in one piece.
constexpr double kLongestPlanned = 366.0 * 24 * 3600;

}  // namespace

// Held by ReadAhead::State, which has external linkage (so not in the unnamed namespace).
namespace read_ahead_parts {

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

}  // namespace read_ahead_parts

using read_ahead_parts::Segment;

struct ReadAhead::State {
  ReadAheadOptions options;
  std::string path;
  bool parallel = false;  // segments after seeks (false: one decoder, read by one thread)
  bool was_parallel = false;
  std::int64_t segment = 0;  // samples per segment
  int planned = 0;           // parallel reading: segments (the last one reads on to the end)
  int max_ahead = 2;         // segments decoded and not yet taken, at most

  // Shared with the workers, under `mutex` (the flags are also read while decoding).
  std::mutex mutex;
  std::condition_variable changed;
  std::atomic<bool> stop{false};
  std::atomic<bool> seeking_off{false};  // parallel workers end; their segments are dropped
  int next = 0;                          // the next segment a parallel worker takes
  int consumed = 0;                      // segments the reader has taken
  std::map<int, Segment> done;
  std::unique_ptr<AudioDecoder> first_decoder;  // segment 0's, or the one-thread reading's
  std::vector<std::thread> workers;
  // Buffers of segments handed out, for the next ones: fresh megabytes would cost page faults
  // and zeroing each time (+13 % CPU for a one-thread reading, measured).
  std::vector<std::vector<float>> spare;

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

  // Stops and joins the threads, also when the constructor failed halfway.
  ~State() {
    {
      const std::lock_guard lock(mutex);
      stop = true;
    }
    changed.notify_all();
    for (std::thread& t : workers)
      t.join();
  }

  std::vector<float> take_spare() {
    const std::lock_guard lock(mutex);
    if (spare.empty()) return {};
    std::vector<float> v = std::move(spare.back());
    spare.pop_back();
    v.clear();
    return v;
  }
  void give_spare(std::vector<float>&& v) {
    const std::lock_guard lock(mutex);
    // Workers take one as the reader frees one: two cover the lag without adding to the budget.
    if (spare.size() < 2) spare.push_back(std::move(v));
  }

  std::int64_t buffer_end() const {
    return buffer_first + static_cast<std::int64_t>(buffer.size());
  }

  // Appends samples from `dec` to `to` until `dec` is at `target`; false at the end of the audio,
  // on a stop, or (`parallel_part`) once seeking was given up. What was read before an exception
  // stays in `to`.
  bool read_until(AudioDecoder& dec, std::vector<float>& to, std::int64_t target,
                  bool parallel_part) {
    while (dec.position() < target) {
      if (stop || (parallel_part && seeking_off)) return false;
      const auto n = static_cast<std::size_t>(std::min(target - dec.position(), kChunk));
      const std::size_t old = to.size();
      const std::int64_t from = dec.position();
      to.resize(old + n);
      std::size_t got = 0;
      try {
        got = dec.read(std::span<float>(to.data() + old, n));
      } catch (...) {
        to.resize(old + static_cast<std::size_t>(dec.position() - from));  // no zeros as audio
        throw;
      }
      to.resize(old + got);
      if (got < n) return false;
    }
    return true;
  }

  // One decoder read from segment `first` on (the whole file, or the rest once seeking was given
  // up), each segment continuing the one before.
  void sequential_worker(int first) {
    AudioDecoder& dec = *first_decoder;
    for (int k = first;; ++k) {
      {
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] { return stop || k < consumed + max_ahead; });
        if (stop) return;
      }
      Segment s;
      s.first = dec.position();
      s.samples = take_spare();
      s.samples.reserve(static_cast<std::size_t>(segment));
      const int before = dec.damaged_packets();
      try {
        s.end = !read_until(dec, s.samples, s.first + segment, false);
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
        if (!seeking_off) done.emplace(k, std::move(s));
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
        if (at < 0 || at < begin - kPreroll - kMaxEarly) {
          s.usable = false;
          s.decoder.reset();
          return s;
        }
      }
      AudioDecoder& dec = *s.decoder;
      s.first = dec.position();
      s.samples = take_spare();
      s.samples.reserve(static_cast<std::size_t>(next_begin + kCheckAfter - s.first));
      if (!read_until(dec, s.samples, begin, true)) {
        s.end = true;
        return s;
      }
      const int before = dec.damaged_packets();
      s.end = !read_until(dec, s.samples, next_begin, true);
      s.damaged = s.damaged_mark = dec.damaged_packets();
      s.damaged -= before;
      if (!s.end && !last) s.end = !read_until(dec, s.samples, next_begin + kCheckAfter, true);
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
    const std::int64_t s_end = s.first + static_cast<std::int64_t>(s.samples.size());
    // Ending earlier than what was already read (its decoder failed): the reading before goes on.
    if (s.end && s_end < buffer_end()) return false;
    const std::int64_t lo = boundary - kCheckBefore;
    const std::int64_t hi = std::min({boundary + kCheckAfter, buffer_end(), s_end});
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
    give_spare(std::exchange(buffer, std::move(s.samples)));
    buffer_first = s.first;
    decoder = std::move(s.decoder);
    decoder_mark = s.damaged_mark;
    end = s.end;
    error = s.error;
    damaged += s.damaged;
  }

  // Parallel reading stops (seeks do not match, or the audio goes on past the stated duration):
  // the current decoder is read on by one thread from the end of the buffer.
  void read_rest_in_one_thread() {
    {
      const std::lock_guard lock(mutex);
      seeking_off = true;
      done.clear();
      consumed = index + 1;
    }
    changed.notify_all();
    parallel = false;
    if (end || !decoder) {
      boundary = kNone;
      return;
    }
    damaged += decoder->damaged_packets() - decoder_mark;  // the stretch read for the check
    boundary = buffer_end();
    first_decoder = std::move(decoder);
    const int first = index + 1;
    workers.emplace_back([this, first] { sequential_worker(first); });
  }

  // At `boundary`: the next segment takes over, or (parallel, its start did not match) the
  // decoder before it reads on.
  void cross() {
    const int k = index + 1;
    std::optional<Segment> s;
    {
      std::unique_lock lock(mutex);
      changed.wait(lock, [&] { return done.count(k) > 0; });
      auto it = done.find(k);
      s = std::move(it->second);
      done.erase(it);
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
    } else if (continues(*s)) {
      adopt(*s);
      ++stats.joined;
      failures_in_row = 0;
    } else {
      ++stats.read_on;
      if (++failures_in_row >= kFailuresToGiveUp) {
        spdlog::debug("{}: seeking gave no matching audio {} times; reading on in one piece", path,
                      failures_in_row);
        read_rest_in_one_thread();
        return;
      }
    }
    if (k + 1 < planned) {
      boundary = (k + 1) * segment;
    } else {
      read_rest_in_one_thread();  // past the last segment: whatever the audio still holds
    }
  }

  // Parallel reading, a segment whose start did not match: the current decoder reads on to the
  // next boundary (damage counted up to it), then the stretch compared after it.
  void read_on() {
    const std::int64_t keep = std::max(buffer_first, out - kCheckBefore);
    buffer.erase(buffer.begin(), buffer.begin() + (keep - buffer_first));
    buffer_first = keep;
    try {
      if (!decoder || boundary == kNone || !read_until(*decoder, buffer, boundary, false))
        end = true;
      if (decoder) {
        damaged += decoder->damaged_packets() - decoder_mark;
        decoder_mark = decoder->damaged_packets();
      }
      if (!end && !read_until(*decoder, buffer, boundary + kCheckAfter, false)) end = true;
    } catch (...) {
      error = std::current_exception();
      end = true;
      if (decoder) {
        damaged += decoder->damaged_packets() - decoder_mark;
        decoder_mark = decoder->damaged_packets();
      }
    }
  }
};

ReadAhead::ReadAhead(std::unique_ptr<AudioDecoder> decoder, ReadAheadOptions options)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.options = options;
  s.path = decoder->path();
  const double segment_seconds = std::max(options.segment_seconds, 3.0);
  s.segment = static_cast<std::int64_t>(std::llround(segment_seconds * kSampleRate));
  s.max_ahead = std::max(2, static_cast<int>(options.ahead_seconds / segment_seconds));
  const double duration = decoder->duration_seconds();
  // A stated duration beyond any recording (a crafted header) is not planned for.
  const bool plausible = duration > 0 && duration < kLongestPlanned;
  const auto planned =
      plausible
          ? static_cast<int>(std::ceil(duration * kSampleRate / static_cast<double>(s.segment)))
          : 0;
  s.parallel = options.threads > 1 && plausible && planned >= 2 &&
               !decoder->duration_is_estimate() && decoder->seeks_exactly();
  s.was_parallel = s.parallel;
  s.first_decoder = std::move(decoder);
  // A thread that cannot start throws; ~State joins those that did.
  if (s.parallel) {
    s.planned = planned;
    const int threads = std::max(1, std::min({options.threads, s.max_ahead, s.planned}));
    for (int i = 0; i < threads; ++i)
      s.workers.emplace_back([&s] { s.parallel_worker(); });
  } else {
    s.workers.emplace_back([&s] { s.sequential_worker(0); });
  }
}

ReadAhead::~ReadAhead() = default;

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
      // The samples before a failure are handed out first; the error comes with the next call.
      if (s.error && written == 0) std::rethrow_exception(std::exchange(s.error, nullptr));
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
  return state_->was_parallel;
}

ReadAheadStats ReadAhead::stats() const {
  return state_->stats;
}

}  // namespace ifw::audio
