// Lossless JSON form of transcripts and segments, for storing them (the job database) and reading
// them back exactly. Not a user-facing format: OpenAI's json/verbose_json are in formats.hpp.
//
// Every field of Transcript, Segment and Word is written, and reading requires every one of them
// (fields not listed below are ignored). What the representation guarantees:
// - Finite doubles are written as JSON numbers in their shortest round-tripping form, so they read
//   back bit for bit (-0.0 included). NaN and the infinities, which JSON numbers cannot hold, are
//   written as the strings "NaN", "Infinity" and "-Infinity" (a NaN reads back as the quiet NaN;
//   its sign and payload are not kept).
// - A string that is valid UTF-8 is written as a JSON string. One that is not (the tokenizer may
//   cut a character between segments) is written as a list of its byte values, 0 to 255, so that
//   the document always dumps without error and reads back byte for byte.
#pragma once

#include <vector>

#include <nlohmann/json.hpp>

#include <ifw/transcript.hpp>

namespace ifw::formats {

// {"task", "language", "duration", "partial", "segments": [segment, ...]}
nlohmann::json transcript_to_json(const Transcript& t);
// Throws ifw::Error (kInvalidArgument) naming the field and what is wrong with it, e.g.
// `transcript JSON: field "segments[2].words[0].start" must be a number, got "x"`.
Transcript transcript_from_json(const nlohmann::json& j);

// A list of segments: {"id", "seek", "start", "end", "text", "tokens", "temperature",
// "avg_logprob", "compression_ratio", "no_speech_prob", "words": [{"text", "start", "end"}, ...]}.
nlohmann::json segments_to_json(const std::vector<Segment>& segments);
// Throws as transcript_from_json; fields are named from the list, e.g. "[2].tokens[5]".
std::vector<Segment> segments_from_json(const nlohmann::json& j);

}  // namespace ifw::formats
