// Token-level timestamps from the alignment heads' cross-attention: normalise each head's
// weights over the tokens, median-filter them over time, average the heads, and align tokens to
// encoder frames by dynamic time warping (the reference's method).
#pragma once

#include <vector>

namespace ifw::decode {

// heads[h]: `tokens` rows of `frames` weights (row-major). Returns tokens + 1 times in seconds:
// 0 for the first position, then the time at which the path reaches each next token.
std::vector<double> token_timestamps(const std::vector<std::vector<float>>& heads, int tokens,
                                     int frames, int median_filter_width,
                                     double time_per_frame = 0.02);

// Token timestamps of one decoding pass as the reference (transformers 5) reports them: DTW over
// the alignment rows whose input is a generated token (the prompt's rows are left out). Token k
// of the sequence gets the time the path reaches the row where it is the input; the prompt gets
// 0 and the last token, never an input, repeats the time before it. `heads[h]` holds
// (prompt_length + generated - 1) rows; the result has one time per token of the sequence.
std::vector<double> pass_token_timestamps(const std::vector<std::vector<float>>& heads,
                                          int prompt_length, int frames, int median_filter_width);

// The building blocks, exposed for tests.
// Median over a sliding window of `width` (odd) with reflect padding, along each row.
void median_filter_rows(std::vector<double>& x, int rows, int cols, int width);
// DTW through cost[rows][cols] (lowest total cost, steps down, right or diagonal); returns the
// (row, column) pairs of the path from (0, 0) to the last cell.
std::vector<std::pair<int, int>> dynamic_time_warping(const std::vector<double>& cost, int rows,
                                                      int cols);

}  // namespace ifw::decode
