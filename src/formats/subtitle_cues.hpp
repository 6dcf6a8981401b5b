// Readable subtitles: words regrouped into cues of at most two lines of 42 characters, lasting
// 0.9 to 4 s, at most 22 characters per second, split at sentence, clause and phrase boundaries.
#pragma once

#include <string>
#include <vector>

#include <ifw/transcript.hpp>

#include "formats/formats.hpp"

namespace ifw::formats {

struct Cue {
  double start = 0.0;
  double end = 0.0;
  std::vector<std::string> lines;
  std::vector<Word> words;  // the words it shows, in order
};

// Every word of the transcript lands in exactly one cue, in order. Segments without word
// timings have their words timed by their share of the segment's characters.
std::vector<Cue> subtitle_cues(const Transcript& transcript, const SubtitleOptions& options);

// One cue per segment, lines wrapped but nothing regrouped (readable = false).
std::vector<Cue> segment_cues(const Transcript& transcript, const SubtitleOptions& options);

// `text` broken into at most `max_lines` lines of `max_chars` where possible, balanced, breaking
// after punctuation by preference; a single word longer than a line stays whole.
std::vector<std::string> wrap_lines(const std::string& text, int max_chars, int max_lines);

// The words of a segment's text with times shared out by characters (for segments without word
// timestamps).
std::vector<Word> words_by_characters(const Segment& segment);

}  // namespace ifw::formats
