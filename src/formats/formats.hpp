// The output formats of a transcript: txt, srt, vtt, json, verbose_json (OpenAI's shapes) and tsv.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <ifw/transcript.hpp>

namespace ifw::formats {

enum class Format { kTxt, kSrt, kVtt, kJson, kVerboseJson, kTsv };

// "txt,srt" or "all" -> formats, in order, without repeats. Throws ifw::Error (kInvalidArgument)
// naming an unknown format.
std::vector<Format> parse_formats(std::string_view list);
std::string_view extension(Format format);  // "srt", "json" (verbose_json is ".verbose.json")
std::string_view format_name(Format format);

struct SubtitleOptions {
  bool readable = true;  // regroup words into readable cues when word timings exist
  int max_line_chars = 42;
  int max_lines = 2;
  double min_duration = 0.9;  // seconds
  double max_duration = 4.0;
  double max_chars_per_second = 22.0;
};

std::string render(const Transcript& transcript, Format format,
                   const SubtitleOptions& options = {});

// "00:01:02,345" (SRT) or "00:01:02.345" (VTT); hours always shown.
std::string timestamp(double seconds, char decimal_separator);

}  // namespace ifw::formats
