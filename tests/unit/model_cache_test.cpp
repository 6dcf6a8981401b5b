// The server's model cache: warm and eager modes, LRU under a count and a memory budget, one load
// for concurrent requests, clear while in use, failures, and the counters /metrics shows.
#include "server/model_cache.hpp"

#include <atomic>
#include <chrono>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace ifw::server {
namespace {

// A loaded "model": a block of memory of the size its name says ("a:10" holds 10 MiB).
class Block final : public CachedModel {
 public:
  explicit Block(std::size_t bytes, std::atomic<int>& alive)
      : data_(bytes, std::byte{1}), alive_(alive) {
    ++alive_;
  }
  ~Block() override { --alive_; }
  std::size_t resident_bytes() const override { return data_.size(); }
  const std::vector<std::byte>& data() const { return data_; }

 private:
  std::vector<std::byte> data_;
  std::atomic<int>& alive_;
};

// A model that cannot say its size.
class Faulty final : public CachedModel {
 public:
  std::size_t resident_bytes() const override { throw std::runtime_error("size unknown"); }
};

// A model whose unloading fails.
class Unreleasable final : public CachedModel {
 public:
  std::size_t resident_bytes() const override { return 1; }
  void unload() override { throw std::runtime_error("device busy"); }
};

// A model whose GPU fails while it is loaded (it says so; the cache keeps it, as it serves on),
// and which may then hold more (a CPU copy).
class OnAFailingGpu final : public CachedModel {
 public:
  std::size_t resident_bytes() const override { return bytes.load(); }
  bool device_failed() const override { return failed.load(); }
  std::atomic<bool> failed{false};
  std::atomic<std::size_t> bytes{1};
};

constexpr std::size_t kMiB = 1 << 20;

class ModelCacheTest : public ::testing::Test {
 protected:
  ModelCache::Loader loader() {
    return [this](const std::string& name) -> std::unique_ptr<CachedModel> {
      ++loads_;
      if (load_delay_.count() > 0) std::this_thread::sleep_for(load_delay_);
      // Until that many requests wait for this load (however slowly their threads start).
      for (int i = 0; wait_for_ > 0 && i < 10'000; ++i) {
        const CacheStats s = cache_->stats();
        if (!s.models.empty() && s.models[0].leases >= wait_for_) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      if (name.starts_with("broken")) throw std::runtime_error(name + ": not a model");
      if (name == "faulty") return std::make_unique<Faulty>();
      if (name == "unreleasable") return std::make_unique<Unreleasable>();
      if (name == "gpu") return std::make_unique<OnAFailingGpu>();
      const auto colon = name.find(':');
      const std::size_t mib = colon == std::string::npos ? 1 : std::stoul(name.substr(colon + 1));
      return std::make_unique<Block>(mib * kMiB, alive_);
    };
  }
  ModelCache* cache_ = nullptr;  // for the loader to watch the waiters
  int wait_for_ = 0;
  std::atomic<int> loads_{0};
  std::atomic<int> alive_{0};
  std::chrono::milliseconds load_delay_{0};
};

TEST_F(ModelCacheTest, WarmModelsStayLoadedBetweenRequests) {
  ModelCache cache(loader(), {.max_models = 2, .memory_budget = {}});
  {
    const ModelLease a = cache.acquire("a:2");
    EXPECT_EQ(a.as<Block>().resident_bytes(), 2 * kMiB);
    EXPECT_EQ(a.name(), "a:2");
  }
  EXPECT_EQ(alive_, 1) << "kept warm after its lease returned";
  { const ModelLease again = cache.acquire("a:2"); }
  EXPECT_EQ(loads_, 1);
  const CacheStats s = cache.stats();
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.loads, 1u);
  EXPECT_EQ(s.resident_bytes, 2 * kMiB);
  ASSERT_EQ(s.models.size(), 1u);
  EXPECT_EQ(s.models[0].leases, 0);
}

TEST_F(ModelCacheTest, EagerReleaseUnloadsWithTheLastLease) {
  ModelCache cache(loader(), {.max_models = 2, .memory_budget = {}, .eager_release = true});
  {
    const ModelLease first = cache.acquire("a");
    {
      const ModelLease second = cache.acquire("a");
      EXPECT_EQ(&first.model(), &second.model());
    }
    EXPECT_EQ(alive_, 1) << "still leased";
  }
  EXPECT_EQ(alive_, 0);
  EXPECT_EQ(cache.stats().releases, 1u);
  EXPECT_EQ(cache.stats().resident_bytes, 0u);
  { const ModelLease again = cache.acquire("a"); }
  EXPECT_EQ(loads_, 2);
}

TEST_F(ModelCacheTest, LeastRecentlyUsedGoesFirstAndNeverOneInUse) {
  ModelCache cache(loader(), {.max_models = 2, .memory_budget = {}});
  { const ModelLease a = cache.acquire("a"); }
  { const ModelLease b = cache.acquire("b"); }
  { const ModelLease a = cache.acquire("a"); }  // b is now the least recently used
  { const ModelLease c = cache.acquire("c"); }
  CacheStats s = cache.stats();
  ASSERT_EQ(s.models.size(), 2u);
  EXPECT_EQ(s.models[0].name, "c");
  EXPECT_EQ(s.models[1].name, "a");
  EXPECT_EQ(s.evictions, 1u);

  // Both in use: a third model loads over the limit, and the cache shrinks back as leases return
  // (the first model to be idle goes, while the others are still in use).
  {
    const ModelLease a = cache.acquire("a");
    const ModelLease c = cache.acquire("c");
    {
      const ModelLease d = cache.acquire("d");
      EXPECT_EQ(alive_, 3);
    }
    EXPECT_EQ(alive_, 2);
  }
  s = cache.stats();
  ASSERT_EQ(s.models.size(), 2u);
  EXPECT_EQ(s.models[0].name, "c");
  EXPECT_EQ(s.models[1].name, "a");
  EXPECT_EQ(s.evictions, 2u);
}

TEST_F(ModelCacheTest, MemoryBudgetEvictsIdleModels) {
  ModelCache cache(loader(), {.max_models = 10, .memory_budget = 25 * kMiB});
  { const ModelLease a = cache.acquire("a:10"); }
  { const ModelLease b = cache.acquire("b:10"); }
  EXPECT_EQ(cache.stats().resident_bytes, 20 * kMiB);
  { const ModelLease c = cache.acquire("c:10"); }  // 30 MiB > 25: a, the oldest, goes
  const CacheStats s = cache.stats();
  EXPECT_EQ(s.resident_bytes, 20 * kMiB);
  ASSERT_EQ(s.models.size(), 2u);
  EXPECT_EQ(s.models[1].name, "b:10");
  EXPECT_EQ(s.evictions, 1u);
  EXPECT_EQ(alive_, 2);
}

TEST_F(ModelCacheTest, ConcurrentRequestsShareOneLoad) {
  ModelCache cache(loader(), {.max_models = 1, .memory_budget = {}});
  cache_ = &cache;
  wait_for_ = 8;
  std::vector<const CachedModel*> seen(8, nullptr);
  std::vector<std::thread> clients;
  std::atomic<int> holding{0};
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&, i] {
      const ModelLease lease = cache.acquire("a");
      seen[static_cast<std::size_t>(i)] = &lease.model();
      ++holding;
      while (holding < 8)  // all hold it at once: nothing may unload it under them
        std::this_thread::yield();
    });
  }
  for (auto& t : clients)
    t.join();
  EXPECT_EQ(loads_, 1);
  for (const CachedModel* m : seen)
    EXPECT_EQ(m, seen[0]);
  const CacheStats s = cache.stats();
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.hits, 7u);
  EXPECT_GT(s.load_seconds, 0.0);
}

TEST_F(ModelCacheTest, AFailedLoadReachesEveryWaiterAndIsTriedAgainLater) {
  ModelCache cache(loader(), {.max_models = 2, .memory_budget = {}});
  cache_ = &cache;
  wait_for_ = 4;
  std::atomic<int> failures{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&] {
      try {
        const ModelLease lease = cache.acquire("broken");
      } catch (const std::runtime_error& e) {
        if (std::string(e.what()) == "broken: not a model") ++failures;
      }
    });
  }
  for (auto& t : clients)
    t.join();
  EXPECT_EQ(failures, 4);
  EXPECT_EQ(loads_, 1);
  wait_for_ = 0;
  EXPECT_THROW(cache.acquire("broken"), std::runtime_error);
  EXPECT_EQ(loads_, 2) << "a failure is not cached";
  const CacheStats s = cache.stats();
  EXPECT_EQ(s.load_failures, 2u);
  EXPECT_TRUE(s.models.empty());
}

TEST_F(ModelCacheTest, FailuresInTheModelLeaveTheCacheWhole) {
  ModelCache cache(loader(), {.max_models = 1, .memory_budget = {}, .eager_release = true});
  EXPECT_THROW(cache.acquire("faulty"), std::runtime_error);  // its size: a failed load
  EXPECT_TRUE(cache.stats().models.empty());
  EXPECT_EQ(cache.stats().load_failures, 1u);
  { const ModelLease lease = cache.acquire("unreleasable"); }  // logged, not thrown
  EXPECT_TRUE(cache.stats().models.empty());
  { const ModelLease again = cache.acquire("a"); }
  EXPECT_EQ(cache.stats().loads, 2u);
}

// What /admin/cache and /metrics show of each model includes whether its GPU failed.
TEST_F(ModelCacheTest, StatsSayWhichModelsGpuFailed) {
  ModelCache cache(loader(), {.max_models = 2, .memory_budget = {}});
  const ModelLease gpu = cache.acquire("gpu");
  { const ModelLease other = cache.acquire("other"); }
  const auto failed = [&](const std::string& name) {
    for (const CacheStats::Model& m : cache.stats().models) {
      if (m.name == name) return m.device_failed;
    }
    ADD_FAILURE() << name << " not in the cache's stats";
    return false;
  };
  EXPECT_FALSE(failed("gpu"));
  gpu.as<OnAFailingGpu>().failed = true;
  EXPECT_TRUE(failed("gpu"));
  EXPECT_FALSE(failed("other"));
}

// A model that came to hold more while in use (a CPU copy after its GPU ran out of memory or
// failed) is counted anew when its last request ends, and the budget applies to that.
TEST_F(ModelCacheTest, AModelThatGrewIsCountedAgainWhenItsLastRequestEnds) {
  ModelCache cache(loader(), {.max_models = 2, .memory_budget = 3 * kMiB});
  { const ModelLease other = cache.acquire("other:1"); }
  {
    const ModelLease gpu = cache.acquire("gpu");
    EXPECT_EQ(cache.stats().resident_bytes, kMiB + 1);
    gpu.as<OnAFailingGpu>().bytes = 3 * kMiB;
  }
  const CacheStats s = cache.stats();
  EXPECT_EQ(s.resident_bytes, 3 * kMiB);
  ASSERT_EQ(s.models.size(), 1u);
  EXPECT_EQ(s.models[0].name, "gpu");
  EXPECT_EQ(s.evictions, 1u) << "the other model made room";
}

TEST_F(ModelCacheTest, ClearReleasesIdleModelsNowAndLeasedOnesWhenReturned) {
  ModelCache cache(loader(), {.max_models = 3, .memory_budget = {}});
  { const ModelLease idle = cache.acquire("idle"); }
  std::optional<ModelLease> busy(cache.acquire("busy"));
  const ClearResult r = cache.clear();
  EXPECT_EQ(r.released, 1);
  EXPECT_EQ(r.deferred, 1);
  EXPECT_EQ(alive_, 1);
  CacheStats s = cache.stats();
  ASSERT_EQ(s.models.size(), 1u);
  EXPECT_TRUE(s.models[0].release_when_idle);
  EXPECT_EQ(busy->as<Block>().data().size(), kMiB) << "still usable by its request";
  busy.reset();
  EXPECT_EQ(alive_, 0);
  EXPECT_EQ(cache.stats().releases, 2u);
}

TEST_F(ModelCacheTest, LeasesOutliveTheCache) {
  std::optional<ModelLease> lease;
  {
    ModelCache cache(loader(), {});
    lease.emplace(cache.acquire("a"));
  }
  EXPECT_EQ(alive_, 1);
  EXPECT_EQ(lease->as<Block>().resident_bytes(), kMiB);
  lease.reset();
  EXPECT_EQ(alive_, 0);
}

TEST(ModelCacheOptions, FromTheEnvironment) {
  ::setenv("IFW_MAX_CACHE_SIZE", "3", 1);
  ::setenv("IFW_CACHE_MEMORY_BUDGET", "1.5GiB", 1);
  ::setenv("IFW_EAGER_MODEL_RELEASE", "1", 1);
  CacheOptions o = cache_options_from_environment();
  EXPECT_EQ(o.max_models, 3u);
  EXPECT_EQ(o.memory_budget, std::size_t{3} << 29);
  EXPECT_TRUE(o.eager_release);
  for (const auto& [name, value] :
       std::vector<std::pair<const char*, const char*>>{{"IFW_MAX_CACHE_SIZE", "0"},
                                                        {"IFW_MAX_CACHE_SIZE", "many"},
                                                        {"IFW_CACHE_MEMORY_BUDGET", "8 parsecs"},
                                                        {"IFW_CACHE_MEMORY_BUDGET", "-1G"},
                                                        {"IFW_EAGER_MODEL_RELEASE", "perhaps"}}) {
    ::setenv(name, value, 1);
    try {
      cache_options_from_environment();
      ADD_FAILURE() << name << "=" << value << " was accepted";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(std::string(name) + "=" + value), std::string::npos)
          << e.what();
    }
    ::unsetenv(name);
  }
  ::unsetenv("IFW_MAX_CACHE_SIZE");
  ::unsetenv("IFW_CACHE_MEMORY_BUDGET");
  ::unsetenv("IFW_EAGER_MODEL_RELEASE");
  o = cache_options_from_environment();
  EXPECT_EQ(o.max_models, 1u);
  EXPECT_FALSE(o.memory_budget);
  EXPECT_FALSE(o.eager_release);
}

}  // namespace
}  // namespace ifw::server
