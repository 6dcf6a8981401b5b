#include "server/metrics.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

namespace ifw::server {
namespace {

bool valid_name(std::string_view name, bool label) {
  if (name.empty()) return false;
  const auto first = [&](char c) {
    return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || (!label && c == ':');
  };
  if (!first(name[0])) return false;
  return std::all_of(name.begin() + 1, name.end(), [&](char c) {
    return first(c) || std::isdigit(static_cast<unsigned char>(c));
  });
}

std::string escaped(std::string_view s, bool quote) {
  std::string out;
  for (const char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quote) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15)
    return fmt::format("{}", static_cast<long long>(v));
  return fmt::format("{}", v);
}

}  // namespace

void MetricsText::add(std::string_view name, std::string_view type, std::string_view help,
                      const std::vector<Sample>& samples) {
  if (!valid_name(name, false))
    throw std::invalid_argument(fmt::format("metric name \"{}\"", name));
  if (std::find(names_.begin(), names_.end(), name) != names_.end())
    throw std::invalid_argument(fmt::format("metric \"{}\" given twice", name));
  names_.emplace_back(name);
  text_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, escaped(help, false), name, type);
  for (const Sample& s : samples) {
    text_ += name;
    if (!s.labels.empty()) {
      text_ += '{';
      for (std::size_t i = 0; i < s.labels.size(); ++i) {
        if (!valid_name(s.labels[i].first, true))
          throw std::invalid_argument(fmt::format("label name \"{}\"", s.labels[i].first));
        text_ += fmt::format("{}{}=\"{}\"", i > 0 ? "," : "", s.labels[i].first,
                             escaped(s.labels[i].second, true));
      }
      text_ += '}';
    }
    text_ += ' ';
    text_ += number(s.value);
    text_ += '\n';
  }
}

void add_cache_metrics(MetricsText& out, const CacheStats& s) {
  out.counter("ifw_model_cache_hits_total", "Requests served by a model already loaded or loading",
              static_cast<double>(s.hits));
  out.counter("ifw_model_cache_misses_total", "Requests that started loading a model",
              static_cast<double>(s.misses));
  out.counter("ifw_model_cache_loads_total", "Models loaded", static_cast<double>(s.loads));
  out.counter("ifw_model_cache_load_failures_total", "Model loads that failed",
              static_cast<double>(s.load_failures));
  out.counter("ifw_model_cache_load_seconds_total", "Seconds spent loading models", s.load_seconds);
  out.counter("ifw_model_cache_evictions_total",
              "Idle models released to stay within the model count or memory budget",
              static_cast<double>(s.evictions));
  out.counter("ifw_model_cache_releases_total", "Models released by eager release or a clear",
              static_cast<double>(s.releases));
  out.gauge("ifw_model_cache_resident_bytes", "Memory held by the loaded models",
            static_cast<double>(s.resident_bytes));
  out.gauge("ifw_model_cache_models", "Models loaded or loading",
            static_cast<double>(s.models.size()));
  std::vector<MetricsText::Sample> leases, failed;
  for (const CacheStats::Model& m : s.models) {
    leases.push_back({{{"model", m.name}}, static_cast<double>(m.leases)});
    failed.push_back({{{"model", m.name}}, m.device_failed ? 1.0 : 0.0});
  }
  out.add("ifw_model_leases", "gauge", "Requests using each loaded model", leases);
  out.add("ifw_model_device_failed", "gauge",
          "1 where a model's GPU failed for good: it runs on the CPU until the server restarts",
          failed);
}

}  // namespace ifw::server
