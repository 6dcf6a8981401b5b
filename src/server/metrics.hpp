// /metrics in Prometheus' text exposition format (version 0.0.4): families with HELP and TYPE
// lines, label values escaped, each family written once.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/model_cache.hpp"

namespace ifw::server {

using Labels = std::vector<std::pair<std::string, std::string>>;

class MetricsText {
 public:
  struct Sample {
    Labels labels;
    double value = 0.0;
  };
  // Throws std::invalid_argument for a name Prometheus would refuse, or a family given twice.
  void add(std::string_view name, std::string_view type, std::string_view help,
           const std::vector<Sample>& samples);
  void counter(std::string_view name, std::string_view help, double value) {
    add(name, "counter", help, {{{}, value}});
  }
  void gauge(std::string_view name, std::string_view help, double value) {
    add(name, "gauge", help, {{{}, value}});
  }
  const std::string& text() const { return text_; }

  static constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

 private:
  std::string text_;
  std::vector<std::string> names_;
};

// The model cache's counters and what it holds (ifw_model_cache_*).
void add_cache_metrics(MetricsText& out, const CacheStats& stats);

}  // namespace ifw::server
