// Slaney-style mel filter bank (as librosa and transformers compute it), for any bin count.
#pragma once

#include <vector>

namespace ifw::audio {

// [n_mels][n_fft / 2 + 1] row-major: triangular filters between 0 Hz and sample_rate / 2 on the
// Slaney mel scale, each scaled to unit area ("slaney" norm). Computed in double precision.
std::vector<double> slaney_mel_filters(int n_mels, int n_fft, int sample_rate);

}  // namespace ifw::audio
