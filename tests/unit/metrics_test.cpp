// /metrics text: Prometheus' exposition format, and the model cache's figures in it.
#include "server/metrics.hpp"

#include <limits>

#include <gtest/gtest.h>

namespace ifw::server {
namespace {

TEST(Metrics, ExpositionFormat) {
  MetricsText m;
  m.counter("ifw_requests_total", "Requests\nanswered", 42);
  m.gauge("ifw_queue_seconds", "Oldest wait", 0.25);
  m.add("ifw_leases", "gauge", "Per model",
        {{{{"model", "a\"b\\c\nd"}, {"kind", "x"}}, 2},
         {{}, std::numeric_limits<double>::infinity()}});
  EXPECT_EQ(m.text(),
            "# HELP ifw_requests_total Requests\\nanswered\n"
            "# TYPE ifw_requests_total counter\n"
            "ifw_requests_total 42\n"
            "# HELP ifw_queue_seconds Oldest wait\n"
            "# TYPE ifw_queue_seconds gauge\n"
            "ifw_queue_seconds 0.25\n"
            "# HELP ifw_leases Per model\n"
            "# TYPE ifw_leases gauge\n"
            "ifw_leases{model=\"a\\\"b\\\\c\\nd\",kind=\"x\"} 2\n"
            "ifw_leases +Inf\n");
  EXPECT_THROW(m.counter("ifw_requests_total", "again", 1), std::invalid_argument);
  EXPECT_THROW(m.counter("1st", "bad name", 1), std::invalid_argument);
  EXPECT_THROW(m.add("ok_name", "gauge", "", {{{{"bad-label", "v"}}, 1}}), std::invalid_argument);
}

TEST(Metrics, CacheFigures) {
  CacheStats s;
  s.hits = 7;
  s.misses = 2;
  s.loads = 2;
  s.load_seconds = 1.5;
  s.evictions = 1;
  s.resident_bytes = 1024;
  s.models = {{"openai/whisper-tiny", false, 3, 1024, false, false},
              {"openai/whisper-large-v3", false, 1, 4096, false, true}};
  MetricsText m;
  add_cache_metrics(m, s);
  const std::string& t = m.text();
  for (const char* line :
       {"ifw_model_cache_hits_total 7\n", "ifw_model_cache_misses_total 2\n",
        "ifw_model_cache_loads_total 2\n", "ifw_model_cache_load_seconds_total 1.5\n",
        "ifw_model_cache_evictions_total 1\n", "ifw_model_cache_releases_total 0\n",
        "ifw_model_cache_resident_bytes 1024\n", "ifw_model_cache_models 2\n",
        "ifw_model_leases{model=\"openai/whisper-tiny\"} 3\n",
        "ifw_model_device_failed{model=\"openai/whisper-tiny\"} 0\n",
        "ifw_model_device_failed{model=\"openai/whisper-large-v3\"} 1\n"}) {
    EXPECT_NE(t.find(line), std::string::npos) << line;
  }
}

}  // namespace
}  // namespace ifw::server
