#include "decode/token_timestamps.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include <ifw/error.hpp>

namespace ifw::decode {

void median_filter_rows(std::vector<double>& x, int rows, int cols, int width) {
  const int pad = width / 2;
  if (width < 1 || width % 2 == 0) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("median filter width {} must be odd", width));
  }
  if (cols <= pad) return;  // too short to reflect: left as is, like the reference
  std::vector<double> padded(static_cast<std::size_t>(cols + 2 * pad));
  std::vector<double> window(static_cast<std::size_t>(width));
  for (int r = 0; r < rows; ++r) {
    double* row = x.data() + static_cast<std::size_t>(r) * static_cast<std::size_t>(cols);
    // Reflect padding without repeating the edge: [x2 x1 | x0 x1 x2 ... | x(n-2) x(n-3)]
    for (int i = 0; i < cols; ++i)
      padded[static_cast<std::size_t>(pad + i)] = row[i];
    for (int i = 0; i < pad; ++i) {
      padded[static_cast<std::size_t>(pad - 1 - i)] = row[i + 1];
      padded[static_cast<std::size_t>(pad + cols + i)] = row[cols - 2 - i];
    }
    for (int i = 0; i < cols; ++i) {
      std::copy_n(padded.begin() + i, width, window.begin());
      std::nth_element(window.begin(), window.begin() + pad, window.end());
      row[i] = window[static_cast<std::size_t>(pad)];
    }
  }
}

std::vector<std::pair<int, int>> dynamic_time_warping(const std::vector<double>& matrix, int rows,
                                                      int cols) {
  // As the reference: costs accumulate in float32, ties prefer the diagonal only when it is
  // strictly best, then "up", else "left".
  const auto at = [&](int i, int j) {
    return static_cast<std::size_t>(i) * static_cast<std::size_t>(cols + 1) +
           static_cast<std::size_t>(j);
  };
  std::vector<float> cost(static_cast<std::size_t>(rows + 1) * static_cast<std::size_t>(cols + 1),
                          std::numeric_limits<float>::infinity());
  std::vector<std::int8_t> trace(cost.size(), -1);
  cost[at(0, 0)] = 0.0f;
  for (int j = 1; j <= cols; ++j) {
    for (int i = 1; i <= rows; ++i) {
      const float c0 = cost[at(i - 1, j - 1)], c1 = cost[at(i - 1, j)], c2 = cost[at(i, j - 1)];
      float c;
      std::int8_t t;
      if (c0 < c1 && c0 < c2) {
        c = c0;
        t = 0;
      } else if (c1 < c0 && c1 < c2) {
        c = c1;
        t = 1;
      } else {
        c = c2;
        t = 2;
      }
      cost[at(i, j)] = static_cast<float>(
          matrix[static_cast<std::size_t>(i - 1) * static_cast<std::size_t>(cols) +
                 static_cast<std::size_t>(j - 1)] +
          static_cast<double>(c));
      trace[at(i, j)] = t;
    }
  }
  for (int j = 0; j <= cols; ++j)
    trace[at(0, j)] = 2;
  for (int i = 0; i <= rows; ++i)
    trace[at(i, 0)] = 1;
  std::vector<std::pair<int, int>> path;
  int i = rows, j = cols;
  while (i > 0 || j > 0) {
    path.emplace_back(i - 1, j - 1);
    switch (trace[at(i, j)]) {
      case 0:
        --i;
        --j;
        break;
      case 1:
        --i;
        break;
      default:
        --j;
        break;
    }
  }
  std::reverse(path.begin(), path.end());
  return path;
}

std::vector<double> token_timestamps(const std::vector<std::vector<float>>& heads, int tokens,
                                     int frames, int median_filter_width, double time_per_frame) {
  if (heads.empty() || tokens < 1 || frames < 1) {
    throw Error(ErrorKind::kInvalidArgument, "token timestamps need alignment weights");
  }
  const auto cells = static_cast<std::size_t>(tokens) * static_cast<std::size_t>(frames);
  std::vector<double> mean_of_heads(cells, 0.0);
  std::vector<double> w(cells);
  for (const auto& head : heads) {
    if (head.size() != cells) {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("alignment head has {} weights, expected {} x {}", head.size(),
                              tokens, frames));
    }
    // Standardise every frame's column over the tokens (population standard deviation).
    for (int f = 0; f < frames; ++f) {
      double sum = 0.0;
      for (int t = 0; t < tokens; ++t)
        sum += head[static_cast<std::size_t>(t * frames + f)];
      const double mean = sum / tokens;
      double sq = 0.0;
      for (int t = 0; t < tokens; ++t) {
        const double c = head[static_cast<std::size_t>(t * frames + f)] - mean;
        sq += c * c;
      }
      const double std = std::sqrt(sq / tokens);
      for (int t = 0; t < tokens; ++t) {
        const double v = head[static_cast<std::size_t>(t * frames + f)] - mean;
        // A constant column (one token) has no spread; it carries no timing information.
        w[static_cast<std::size_t>(t * frames + f)] = std > 0.0 ? v / std : 0.0;
      }
    }
    median_filter_rows(w, tokens, frames, median_filter_width);
    for (std::size_t i = 0; i < cells; ++i)
      mean_of_heads[i] += w[i];
  }
  for (double& v : mean_of_heads)
    v = -(v / static_cast<double>(heads.size()));

  const auto path = dynamic_time_warping(mean_of_heads, tokens, frames);
  std::vector<double> times(static_cast<std::size_t>(tokens) + 1, 0.0);
  std::size_t next = 1;
  int previous_token = -1;
  for (const auto& [token, frame] : path) {
    if (token != previous_token) {  // the path reaches a new token: record when
      if (next < times.size()) times[next++] = frame * time_per_frame;
      previous_token = token;
    }
  }
  return times;
}

std::vector<double> pass_token_timestamps(const std::vector<std::vector<float>>& heads,
                                          int prompt_length, int frames, int median_filter_width) {
  if (heads.empty() || frames < 1) {
    throw Error(ErrorKind::kInvalidArgument, "token timestamps need alignment weights");
  }
  const int rows = static_cast<int>(heads.front().size() / static_cast<std::size_t>(frames));
  std::vector<double> times(static_cast<std::size_t>(std::max(rows, prompt_length)) + 1, 0.0);
  const int generated_rows = rows - prompt_length;
  if (generated_rows < 1) return times;
  std::vector<std::vector<float>> tail;
  for (const auto& head : heads) {
    tail.emplace_back(head.begin() + static_cast<std::ptrdiff_t>(prompt_length) * frames,
                      head.end());
  }
  // t[0] is the path's start; t[1 + r] is when it reaches row r, whose input is generated token r.
  const auto t = token_timestamps(tail, generated_rows, frames, median_filter_width);
  std::copy(t.begin() + 1, t.end(), times.begin() + prompt_length);
  times.back() = times[times.size() - 2];  // the last token was never an input: it has no row
  return times;
}

}  // namespace ifw::decode
