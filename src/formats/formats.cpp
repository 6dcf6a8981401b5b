#include "formats/formats.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <ifw/error.hpp>

#include "formats/subtitle_cues.hpp"
#include "model/languages.hpp"

namespace ifw {

std::string Transcript::text() const {
  std::string all;
  for (const Segment& s : segments)
    all += s.text;
  const auto b = all.find_first_not_of(' ');
  if (b == std::string::npos) return "";
  const auto e = all.find_last_not_of(' ');
  return all.substr(b, e - b + 1);
}

namespace formats {
namespace {

struct Named {
  Format format;
  std::string_view name;
  std::string_view extension;
};
constexpr Named kFormats[] = {
    {Format::kTxt, "txt", "txt"},
    {Format::kSrt, "srt", "srt"},
    {Format::kVtt, "vtt", "vtt"},
    {Format::kJson, "json", "json"},
    {Format::kVerboseJson, "verbose_json", "verbose.json"},
    {Format::kTsv, "tsv", "tsv"},
};

std::string strip(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\n") - b + 1);
}

// JSON numbers as OpenAI writes them: times to the millisecond, statistics as they are.
double round3(double x) {
  return std::round(x * 1000.0) / 1000.0;
}

std::string language_name(const std::string& code) {
  if (const auto i = model::language_index(code)) {
    return std::string(model::whisper_languages()[static_cast<std::size_t>(*i)].name);
  }
  return code;
}

std::string cues_text(const std::vector<Cue>& cues, bool vtt) {
  std::string out = vtt ? "WEBVTT\n\n" : "";
  int n = 0;
  for (const Cue& c : cues) {
    if (!vtt) out += fmt::format("{}\n", ++n);
    out += fmt::format("{} --> {}\n", timestamp(c.start, vtt ? '.' : ','),
                       timestamp(c.end, vtt ? '.' : ','));
    for (const std::string& line : c.lines) {
      // A blank line would end the cue early; "-->" would start a new one in VTT.
      std::string safe = line;
      for (std::size_t p; (p = safe.find("-->")) != std::string::npos;)
        safe.erase(p, 1);
      out += safe + "\n";
    }
    out += "\n";
  }
  return out;
}

}  // namespace

std::vector<Format> parse_formats(std::string_view list) {
  std::vector<Format> out;
  std::size_t pos = 0;
  while (pos <= list.size()) {
    const auto comma = list.find(',', pos);
    std::string_view name =
        list.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    while (!name.empty() && name.front() == ' ')
      name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ')
      name.remove_suffix(1);
    if (name == "all") {
      for (const Named& f : kFormats) {
        if (std::find(out.begin(), out.end(), f.format) == out.end()) out.push_back(f.format);
      }
    } else {
      const auto* f = std::find_if(std::begin(kFormats), std::end(kFormats),
                                   [&](const Named& n) { return n.name == name; });
      if (f == std::end(kFormats)) {
        throw Error(
            ErrorKind::kInvalidArgument,
            fmt::format(
                "unknown output format \"{}\" (use txt, srt, vtt, json, verbose_json, tsv or all)",
                name));
      }
      if (std::find(out.begin(), out.end(), f->format) == out.end()) out.push_back(f->format);
    }
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return out;
}

std::string_view extension(Format format) {
  for (const Named& f : kFormats) {
    if (f.format == format) return f.extension;
  }
  return "txt";
}

std::string_view format_name(Format format) {
  for (const Named& f : kFormats) {
    if (f.format == format) return f.name;
  }
  return "txt";
}

std::string timestamp(double seconds, char decimal_separator) {
  const auto ms = static_cast<long long>(std::llround(std::max(seconds, 0.0) * 1000.0));
  return fmt::format("{:02}:{:02}:{:02}{}{:03}", ms / 3600000, ms / 60000 % 60, ms / 1000 % 60,
                     decimal_separator, ms % 1000);
}

std::string render(const Transcript& t, Format format, const SubtitleOptions& options) {
  switch (format) {
    case Format::kTxt: {
      std::string out;
      for (const Segment& s : t.segments) {
        const std::string line = strip(s.text);
        if (!line.empty()) out += line + "\n";
      }
      return out;
    }
    case Format::kSrt:
    case Format::kVtt:
      return cues_text(options.readable ? subtitle_cues(t, options) : segment_cues(t, options),
                       format == Format::kVtt);
    case Format::kJson:
      return nlohmann::json{{"text", t.text()}}.dump() + "\n";
    case Format::kVerboseJson: {
      nlohmann::ordered_json j;
      j["task"] = t.task;
      j["language"] = language_name(t.language);
      j["duration"] = round3(t.duration);
      j["text"] = t.text();
      nlohmann::ordered_json segments = nlohmann::ordered_json::array();
      nlohmann::ordered_json words = nlohmann::ordered_json::array();
      bool any_words = false;
      for (const Segment& s : t.segments) {
        segments.push_back({{"id", s.id},
                            {"seek", s.seek},
                            {"start", round3(s.start)},
                            {"end", round3(s.end)},
                            {"text", s.text},
                            {"tokens", s.tokens},
                            {"temperature", s.temperature},
                            {"avg_logprob", s.avg_logprob},
                            {"compression_ratio", s.compression_ratio},
                            {"no_speech_prob", s.no_speech_prob}});
        for (const Word& w : s.words) {
          any_words = true;
          words.push_back(
              {{"word", strip(w.text)}, {"start", round3(w.start)}, {"end", round3(w.end)}});
        }
      }
      j["segments"] = segments;
      if (any_words) j["words"] = words;
      if (t.partial) j["partial"] = true;
      return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    }
    case Format::kTsv: {
      std::string out = "start\tend\ttext\n";
      for (const Segment& s : t.segments) {
        std::string text = strip(s.text);
        std::replace(text.begin(), text.end(), '\t', ' ');
        out += fmt::format("{}\t{}\t{}\n", std::llround(s.start * 1000.0),
                           std::llround(s.end * 1000.0), text);
      }
      return out;
    }
  }
  return "";
}

}  // namespace formats
}  // namespace ifw
