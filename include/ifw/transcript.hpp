// What transcribing a file produces: timed segments of text, optionally timed words.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ifw {

struct Word {
  std::string text;  // as spoken, with its leading space when it has one (" country")
  double start = 0.0;
  double end = 0.0;
};

struct Segment {
  int id = 0;
  int seek = 0;  // where its window began, in 10 ms mel frames (OpenAI's field)
  double start = 0.0;
  double end = 0.0;
  std::string text;
  std::vector<std::int32_t> tokens;  // timestamp tokens included
  double temperature = 0.0;
  double avg_logprob = 0.0;
  double compression_ratio = 0.0;
  double no_speech_prob = 0.0;
  std::vector<Word> words;  // empty unless word timestamps were asked for
};

struct Transcript {
  std::string task = "transcribe";  // or "translate"
  std::string language;             // code, e.g. "en"
  double duration = 0.0;            // seconds of audio
  std::vector<Segment> segments;
  bool partial = false;  // stopped before the end (cancelled, or damaged input)

  // The segments' texts joined, as OpenAI's "text" field.
  std::string text() const;
};

}  // namespace ifw
