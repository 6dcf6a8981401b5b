#include "audio/audio_decoder.hpp"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
#include <libswresample/swresample.h>
}

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <numeric>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <ifw/audio.hpp>
#include <ifw/error.hpp>

#include "audio/damaged_samples.hpp"

namespace ifw::audio {

// Held by AudioDecoder::State, which has external linkage (so not in the unnamed namespace).
namespace decoder_handles {

// Demuxers open further files through io_open: HLS playlists their segments, concat lists the
// files they name. An uploaded playlist could then make ifw read (and transcribe back) media
// anywhere on the machine, so only the one file given is opened.
struct OpenOnlyThis {
  std::string url;
  bool refused = false;
};

struct FormatClose {
  void operator()(AVFormatContext* c) const { avformat_close_input(&c); }
};
struct CodecFree {
  void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct SwrFree {
  void operator()(SwrContext* c) const { swr_free(&c); }
};
struct PacketFree {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct FrameFree {
  void operator()(AVFrame* f) const { av_frame_free(&f); }
};

}  // namespace decoder_handles

using namespace decoder_handles;

namespace {

std::string av_error(int code) {
  char text[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(code, text, sizeof text);
  return text;
}

// FFmpeg's own log lines would interleave with ifw's output; its errors reach the user through
// ifw's messages instead.
void quiet_ffmpeg() {
  static std::once_flag once;
  std::call_once(once, [] { av_log_set_level(AV_LOG_FATAL); });
}

extern "C" int open_only_this(AVFormatContext* s, AVIOContext** pb, const char* url, int flags,
                              AVDictionary** options) {
  auto* allowed = static_cast<OpenOnlyThis*>(s->opaque);
  if (allowed == nullptr || url == nullptr || allowed->url != url) {
    if (allowed != nullptr) allowed->refused = true;
    return AVERROR(EPERM);
  }
  return avio_open2(pb, url, flags, &s->interrupt_callback, options);
}

}  // namespace

struct AudioDecoder::State {
  std::string path;
  std::unique_ptr<OpenOnlyThis> open_only;  // outlives `format`, which points at it
  std::unique_ptr<AVFormatContext, FormatClose> format;
  std::unique_ptr<AVCodecContext, CodecFree> codec;
  std::unique_ptr<SwrContext, SwrFree> resampler;
  std::unique_ptr<AVPacket, PacketFree> packet{av_packet_alloc()};
  std::unique_ptr<AVFrame, FrameFree> frame{av_frame_alloc()};
  int stream = -1;
  std::vector<float> pending;  // resampled samples not handed out yet
  std::size_t pending_begin = 0;
  bool input_done = false;  // no more packets
  bool decoder_flushed = false;
  bool finished = false;  // resampler flushed too
  int damaged = 0;
  std::int64_t position = 0;  // of the next sample read() hands out
  // After a seek: the next decoded frame with a timestamp fixes the position (`aligned_at`).
  bool aligning = false;
  std::int64_t aligned_at = -1;

  [[noreturn]] void fail(const std::string& what, int code) const {
    throw Error(ErrorKind::kInvalidArgument, fmt::format("{}: {}: {}", path, what, av_error(code)));
  }

  // Resamples `frame` (or flushes the resampler when null) and appends to `pending`; `skip`
  // input samples at the frame's start are left out.
  void resample(const AVFrame* in, int skip = 0) {
    const int in_samples = in != nullptr ? in->nb_samples - skip : 0;
    const int capacity = swr_get_out_samples(resampler.get(), in_samples);
    if (capacity < 0) fail("resampling failed", capacity);
    if (pending_begin > 0 && pending_begin == pending.size()) {
      pending.clear();
      pending_begin = 0;
    }
    const std::size_t old = pending.size();
    pending.resize(old + static_cast<std::size_t>(capacity));
    auto* out = reinterpret_cast<std::uint8_t*>(pending.data() + old);
    const std::uint8_t** input =
        in != nullptr ? const_cast<const std::uint8_t**>(in->extended_data) : nullptr;
    std::vector<const std::uint8_t*> planes;  // only after a seek: the planes `skip` samples in
    if (skip > 0) {
      // Packed formats keep every channel in plane 0; planar ones a plane per channel.
      const bool planar = av_sample_fmt_is_planar(static_cast<AVSampleFormat>(in->format)) != 0;
      const int channels = in->ch_layout.nb_channels;
      const int bytes = av_get_bytes_per_sample(static_cast<AVSampleFormat>(in->format));
      const std::size_t offset = static_cast<std::size_t>(skip) *
                                 static_cast<std::size_t>(bytes * (planar ? 1 : channels));
      for (int c = 0; c < (planar ? channels : 1); ++c)
        planes.push_back(input[c] + offset);
      input = planes.data();
    }
    const int got = swr_convert(resampler.get(), &out, capacity, input, in_samples);
    if (got < 0) fail("resampling failed", got);
    pending.resize(old + static_cast<std::size_t>(got));
    silence_damaged_samples(old);
  }

  // A frame with NaN, infinite or absurd samples: silenced, counted as damaged
  // (damaged_samples.hpp).
  void silence_damaged_samples(std::size_t from) {
    if (audio::silence_damaged_samples(std::span<float>(pending).subspan(from))) ++damaged;
  }

  // Receives every frame the decoder has ready.
  void drain_decoder() {
    while (true) {
      const int rc = avcodec_receive_frame(codec.get(), frame.get());
      if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return;
      if (rc < 0) {
        ++damaged;  // a damaged frame: skip it, keep the rest of the audio
        return;
      }
      if (aligning) {
        align(*frame);
      } else {
        resample(frame.get());
      }
      av_frame_unref(frame.get());
    }
  }

  // The first frame after a seek: its timestamp says where it lies. Input samples are skipped up
  // to the next one that falls exactly on a 16 kHz sample (every 441st at 44.1 kHz, every 3rd
  // at 48 kHz), so that what follows is on the same grid as a reading from the start.
  void align(const AVFrame& in) {
    // pts, not best_effort_timestamp: samples the codec skips at a frame's start (Opus's pre-skip,
    // applied again after a seek) move the former only.
    const std::int64_t pts = in.pts != AV_NOPTS_VALUE ? in.pts : in.best_effort_timestamp;
    if (pts == AV_NOPTS_VALUE || in.sample_rate <= 0) return;  // no position known: drop it
    const AVStream* st = format->streams[stream];
    const std::int64_t start = st->start_time != AV_NOPTS_VALUE ? st->start_time : 0;
    const std::int64_t rate = in.sample_rate;
    const std::int64_t at =
        av_rescale_q(pts - start, st->time_base, AVRational{1, static_cast<int>(rate)});
    const std::int64_t common = std::gcd(rate, static_cast<std::int64_t>(kSampleRate));
    const std::int64_t step = rate / common;  // input samples per grid point
    const std::int64_t first = at >= 0 ? (at + step - 1) / step * step : 0;  // on the grid
    const std::int64_t skip = first - at;
    if (skip >= in.nb_samples) return;
    resample(&in, static_cast<int>(skip));
    aligned_at = first / step * (kSampleRate / common);
    aligning = false;
  }

  // Decodes more of the file into `pending`; false once everything has been produced.
  bool fill() {
    if (finished) return false;
    if (!input_done) {
      const int rc = av_read_frame(format.get(), packet.get());
      if (rc == AVERROR_EOF) {
        input_done = true;
      } else if (rc < 0) {
        // A read error after some audio: keep what decoded, stop here.
        spdlog::warn("{}: reading stopped early: {}", path, av_error(rc));
        ++damaged;
        input_done = true;
      } else {
        if (packet->stream_index == stream) {
          const int sent = avcodec_send_packet(codec.get(), packet.get());
          if (sent < 0 && sent != AVERROR(EAGAIN)) ++damaged;
        }
        av_packet_unref(packet.get());
        drain_decoder();
        return true;
      }
    }
    if (!decoder_flushed) {
      avcodec_send_packet(codec.get(), nullptr);
      drain_decoder();
      decoder_flushed = true;
      return true;
    }
    resample(nullptr);
    finished = true;
    return true;
  }
};

AudioDecoder::AudioDecoder(const std::string& path) : state_(std::make_unique<State>()) {
  quiet_ffmpeg();
  State& s = *state_;
  s.path = path == "-" ? "standard input" : path;
  if (path != "-") {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec))
      throw Error(ErrorKind::kNotFound, path + ": no such file");
    if (std::filesystem::is_directory(path, ec)) {
      throw Error(ErrorKind::kInvalidArgument,
                  path + ": is a directory, not an audio or video file");
    }
    if (std::filesystem::file_size(path, ec) == 0) {
      throw Error(ErrorKind::kInvalidArgument, path + ": the file is empty");
    }
  }
  if (!s.packet || !s.frame) throw std::bad_alloc();

  const std::string url = path == "-" ? "pipe:0" : "file:" + path;
  s.open_only = std::make_unique<OpenOnlyThis>(OpenOnlyThis{url, false});
  AVFormatContext* format = avformat_alloc_context();
  if (format == nullptr) throw std::bad_alloc();
  format->opaque = s.open_only.get();
  format->io_open = open_only_this;
  // On failure avformat_open_input frees the context.
  if (const int rc = avformat_open_input(&format, url.c_str(), nullptr, nullptr); rc < 0) {
    if (s.open_only->refused) {
      throw Error(ErrorKind::kInvalidArgument,
                  s.path +
                      ": names other files (a playlist or list); ifw reads only the file it "
                      "is given");
    }
    s.fail("not a readable audio or video file", rc);
  }
  s.format.reset(format);
  const int found = avformat_find_stream_info(format, nullptr);
  if (s.open_only->refused) {  // a playlist opens its first entry here
    throw Error(ErrorKind::kInvalidArgument,
                s.path +
                    ": names other files (a playlist or list); ifw reads only the file it "
                    "is given");
  }
  if (found < 0) s.fail("not a readable audio or video file (its streams cannot be read)", found);
  const AVCodec* decoder = nullptr;
  s.stream = av_find_best_stream(format, AVMEDIA_TYPE_AUDIO, -1, -1, &decoder, 0);
  if (s.stream == AVERROR_STREAM_NOT_FOUND) {
    throw Error(ErrorKind::kInvalidArgument, s.path + ": has no audio stream");
  }
  if (s.stream < 0 || decoder == nullptr) s.fail("no decoder for its audio stream", s.stream);
  const AVStream* stream = format->streams[s.stream];

  s.codec.reset(avcodec_alloc_context3(decoder));
  if (!s.codec) throw std::bad_alloc();
  if (const int rc = avcodec_parameters_to_context(s.codec.get(), stream->codecpar); rc < 0) {
    s.fail("unusable audio stream parameters", rc);
  }
  // Lets the codec move frame timestamps past the samples it skips (needed by seek()).
  s.codec->pkt_timebase = stream->time_base;
  if (const int rc = avcodec_open2(s.codec.get(), decoder, nullptr); rc < 0) {
    s.fail("cannot open the audio decoder", rc);
  }
  if (s.codec->ch_layout.order == AV_CHANNEL_ORDER_UNSPEC) {
    // Some containers do not say how channels are laid out; assume the usual order.
    const int channels = s.codec->ch_layout.nb_channels;
    av_channel_layout_uninit(&s.codec->ch_layout);
    av_channel_layout_default(&s.codec->ch_layout, channels);
  }

  // To Whisper's input: mono, 16 kHz, float. Default options, as `ffmpeg -ac 1 -ar 16000`.
  SwrContext* resampler = nullptr;
  AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;
  if (const int rc = swr_alloc_set_opts2(&resampler, &mono, AV_SAMPLE_FMT_FLT, kSampleRate,
                                         &s.codec->ch_layout, s.codec->sample_fmt,
                                         s.codec->sample_rate, 0, nullptr);
      rc < 0) {
    s.fail("cannot set up resampling", rc);
  }
  s.resampler.reset(resampler);
  if (const int rc = swr_init(resampler); rc < 0) s.fail("cannot set up resampling", rc);
}

AudioDecoder::~AudioDecoder() = default;

std::size_t AudioDecoder::read(std::span<float> out) {
  State& s = *state_;
  std::size_t written = 0;
  while (written < out.size()) {
    const std::size_t available = s.pending.size() - s.pending_begin;
    if (available > 0) {
      const std::size_t n = std::min(available, out.size() - written);
      std::copy_n(s.pending.begin() + static_cast<std::ptrdiff_t>(s.pending_begin), n,
                  out.begin() + static_cast<std::ptrdiff_t>(written));
      s.pending_begin += n;
      written += n;
      s.position += static_cast<std::int64_t>(n);
      continue;
    }
    s.pending.clear();
    s.pending_begin = 0;
    if (!s.fill()) break;
  }
  return written;
}

std::int64_t AudioDecoder::position() const {
  return state_->position;
}

bool AudioDecoder::seekable() const {
  const AVIOContext* io = state_->format->pb;
  return io != nullptr && (io->seekable & AVIO_SEEKABLE_NORMAL) != 0;
}

bool AudioDecoder::seeks_exactly() const {
  const AVRational base = state_->format->streams[state_->stream]->time_base;
  const std::int64_t rate = state_->codec->sample_rate;
  return seekable() && base.num > 0 && rate > 0 &&
         static_cast<std::int64_t>(base.num) * rate <= base.den;
}

std::int64_t AudioDecoder::seek(std::int64_t sample) {
  State& s = *state_;
  if (!seekable()) return -1;
  const AVStream* st = s.format->streams[s.stream];
  const std::int64_t start = st->start_time != AV_NOPTS_VALUE ? st->start_time : 0;
  const std::int64_t target = start + av_rescale_q(std::max<std::int64_t>(sample, 0),
                                                   AVRational{1, kSampleRate}, st->time_base);
  if (avformat_seek_file(s.format.get(), s.stream, INT64_MIN, target, target, 0) < 0) return -1;
  avcodec_flush_buffers(s.codec.get());
  swr_close(s.resampler.get());
  if (swr_init(s.resampler.get()) < 0) return -1;
  s.pending.clear();
  s.pending_begin = 0;
  s.input_done = s.decoder_flushed = s.finished = false;
  s.aligning = true;
  s.aligned_at = -1;
  // Frames without timestamps or without a grid point are dropped; not forever.
  for (int packets = 0; s.aligning; ++packets) {
    if (packets > 2000 || !s.fill()) return -1;
  }
  if (s.aligned_at > sample) return -1;  // the container landed after the point asked for
  s.position = s.aligned_at;
  return s.position;
}

double AudioDecoder::duration_seconds() const {
  const AVFormatContext* f = state_->format.get();
  if (f->duration == AV_NOPTS_VALUE || f->duration <= 0) return -1.0;
  return static_cast<double>(f->duration) / AV_TIME_BASE;
}

const std::string& AudioDecoder::path() const {
  return state_->path;
}

std::string AudioDecoder::description() const {
  const AVCodecContext* c = state_->codec.get();
  return fmt::format("{}, {} Hz, {} channel(s)", avcodec_get_name(c->codec_id), c->sample_rate,
                     c->ch_layout.nb_channels);
}

int AudioDecoder::damaged_packets() const {
  return state_->damaged;
}

bool AudioDecoder::duration_is_estimate() const {
  return state_->format->duration_estimation_method == AVFMT_DURATION_FROM_BITRATE;
}

}  // namespace ifw::audio
