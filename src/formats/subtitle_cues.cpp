#include "formats/subtitle_cues.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "util/utf8.hpp"

namespace ifw::formats {
namespace {

// Characters as a reader counts them (code points, not bytes).
int char_count(const std::string& s) {
  int n = 0;
  for (std::size_t pos = 0; pos < s.size();) {
    const auto step = util::decode_utf8_step(s, pos);
    pos += step.length;
    ++n;
  }
  return n;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\n");
  return s.substr(b, e - b + 1);
}

std::string join(const std::vector<Word>& words, std::size_t begin, std::size_t end) {
  std::string text;
  for (std::size_t i = begin; i < end; ++i)
    text += words[i].text;
  return trim(text);
}

bool ends_sentence(const std::string& w) {
  const std::string t = trim(w);
  if (t.empty()) return false;
  const char c = t.back();
  return c == '.' || c == '?' || c == '!' || t.ends_with("。") || t.ends_with("？") ||
         t.ends_with("！") || t.ends_with("…");
}

bool ends_clause(const std::string& w) {
  const std::string t = trim(w);
  if (t.empty()) return false;
  const char c = t.back();
  return c == ',' || c == ';' || c == ':' || t.ends_with("，") || t.ends_with("、") ||
         t.ends_with("—");
}

// Words a phrase usually starts with: a cue may end right before them.
bool starts_phrase(const std::string& w) {
  static const char* kWords[] = {"and",   "but",  "or",       "so",     "because", "that",
                                 "which", "who",  "when",     "where",  "while",   "if",
                                 "then",  "to",   "of",       "in",     "for",     "with",
                                 "as",    "than", "although", "though", "until",   "unless"};
  std::string t = trim(w);
  std::transform(t.begin(), t.end(), t.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return std::any_of(std::begin(kWords), std::end(kWords), [&](const char* k) { return t == k; });
}

struct Limits {
  const SubtitleOptions& o;
  // Whether words [begin, end) fit one cue.
  bool fits(const std::vector<Word>& words, std::size_t begin, std::size_t end) const {
    const std::string text = join(words, begin, end);
    const int chars = char_count(text);
    if (chars > o.max_line_chars * o.max_lines) return false;
    if (wrap_lines(text, o.max_line_chars, o.max_lines).size() >
        static_cast<std::size_t>(o.max_lines)) {
      return false;
    }
    const double duration = words[end - 1].end - words[begin].start;
    if (duration > o.max_duration) return false;
    // Reading speed, judged on at least the minimum duration a cue is shown.
    return chars <= o.max_chars_per_second * std::max(duration, o.min_duration);
  }
};

}  // namespace

std::vector<std::string> wrap_lines(const std::string& text, int max_chars, int max_lines) {
  std::vector<std::string> words;
  for (std::size_t pos = 0; pos < text.size();) {
    const auto space = text.find(' ', pos);
    const auto end = space == std::string::npos ? text.size() : space;
    if (end > pos) words.push_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  if (words.empty()) return {};
  const auto line_of = [&](std::size_t b, std::size_t e) {
    std::string line;
    for (std::size_t i = b; i < e; ++i)
      line += (i == b ? "" : " ") + words[i];
    return line;
  };
  if (char_count(line_of(0, words.size())) <= max_chars) return {line_of(0, words.size())};
  // Two lines: the break that keeps both within the limit and is most balanced, preferring a
  // break after punctuation.
  if (max_lines >= 2) {
    std::size_t best = 0;
    double best_score = std::numeric_limits<double>::infinity();
    for (std::size_t k = 1; k < words.size(); ++k) {
      const int a = char_count(line_of(0, k)), b = char_count(line_of(k, words.size()));
      if (a > max_chars || b > max_chars) continue;
      double score = std::abs(a - b);
      if (ends_sentence(words[k - 1]) || ends_clause(words[k - 1])) score -= max_chars / 2.0;
      if (score < best_score) {
        best_score = score;
        best = k;
      }
    }
    if (best > 0) return {line_of(0, best), line_of(best, words.size())};
  }
  // Does not fit: fill lines greedily (the caller splits cues before this happens).
  std::vector<std::string> lines;
  std::string line;
  for (const std::string& w : words) {
    if (!line.empty() && char_count(line) + 1 + char_count(w) > max_chars) {
      lines.push_back(line);
      line.clear();
    }
    line += (line.empty() ? "" : " ") + w;
  }
  if (!line.empty()) lines.push_back(line);
  return lines;
}

std::vector<Word> words_by_characters(const Segment& segment) {
  std::vector<Word> words;
  const std::string& text = segment.text;
  // Split before each space, keeping the space with the word that follows (as tokens do).
  std::size_t start = 0;
  for (std::size_t i = 1; i <= text.size(); ++i) {
    if (i == text.size() || (text[i] == ' ' && text[i - 1] != ' ')) {
      if (!trim(text.substr(start, i - start)).empty())
        words.push_back({text.substr(start, i - start), 0, 0});
      start = i;
    }
  }
  int total = 0;
  for (const Word& w : words)
    total += std::max(1, char_count(trim(w.text)));
  double t = segment.start;
  const double span = std::max(segment.end - segment.start, 0.0);
  for (Word& w : words) {
    const double share = total > 0 ? span * std::max(1, char_count(trim(w.text))) / total : 0.0;
    w.start = t;
    w.end = t + share;
    t = w.end;
  }
  return words;
}

std::vector<Cue> subtitle_cues(const Transcript& transcript, const SubtitleOptions& o) {
  std::vector<Word> words;
  for (const Segment& s : transcript.segments) {
    const auto ws = s.words.empty() ? words_by_characters(s) : s.words;
    for (const Word& w : ws) {
      if (!trim(w.text).empty()) words.push_back(w);
    }
  }
  const Limits limits{o};
  std::vector<Cue> cues;
  std::size_t begin = 0;
  while (begin < words.size()) {
    // The longest run of words that fits; a word that fits nowhere gets a cue of its own.
    std::size_t end = begin + 1;
    while (end < words.size() && limits.fits(words, begin, end + 1))
      ++end;
    if (end < words.size()) {
      // Not the end of the text: cut at the best boundary in the run, sentence before clause
      // before phrase, as late as possible.
      std::size_t cut = end;
      bool found = false;
      for (const auto& boundary : {ends_sentence, ends_clause}) {
        for (std::size_t k = end; k > begin + 1 && !found; --k) {
          if (boundary(words[k - 1].text)) {
            cut = k;
            found = true;
          }
        }
        if (found) break;
      }
      if (!found) {
        for (std::size_t k = end; k > begin + 1; --k) {
          if (starts_phrase(words[k].text)) {
            cut = k;
            break;
          }
        }
      }
      // A cue too brief to read is worse than a cut mid-phrase.
      if (words[cut - 1].end - words[begin].start < o.min_duration) cut = end;
      end = cut;
    }
    Cue cue;
    cue.words.assign(words.begin() + static_cast<std::ptrdiff_t>(begin),
                     words.begin() + static_cast<std::ptrdiff_t>(end));
    cue.start = words[begin].start;
    cue.end = std::max(words[end - 1].end, cue.start);
    cue.lines = wrap_lines(join(words, begin, end), o.max_line_chars, o.max_lines);
    cues.push_back(std::move(cue));
    begin = end;
  }
  // Cues follow each other without overlapping; short ones stay up at least the minimum duration
  // when the next one leaves room, and none is ever shown for no time at all (word timings can
  // collapse onto one instant), even if that nudges the next one later.
  constexpr double kShortest = 0.1;
  for (std::size_t i = 0; i < cues.size(); ++i) {
    if (i > 0) cues[i].start = std::max(cues[i].start, cues[i - 1].end);
    cues[i].end = std::max(cues[i].end, cues[i].start);
    const double next =
        i + 1 < cues.size() ? cues[i + 1].start : std::numeric_limits<double>::infinity();
    if (cues[i].end - cues[i].start < o.min_duration) {
      cues[i].end = std::min(cues[i].start + o.min_duration, std::max(next, cues[i].end));
    }
    cues[i].end = std::max(cues[i].end, cues[i].start + kShortest);
  }
  return cues;
}

std::vector<Cue> segment_cues(const Transcript& transcript, const SubtitleOptions& o) {
  std::vector<Cue> cues;
  for (const Segment& s : transcript.segments) {
    if (trim(s.text).empty()) continue;
    Cue cue;
    cue.start = s.start;
    cue.end = std::max(s.end, s.start);
    cue.lines = wrap_lines(trim(s.text), o.max_line_chars, std::numeric_limits<int>::max());
    cue.words = s.words;
    cues.push_back(std::move(cue));
  }
  return cues;
}

}  // namespace ifw::formats
