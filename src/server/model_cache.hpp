// The server's loaded models, accounted for: each request holds a lease on the model it uses;
// idle models stay warm (or go at once with eager release), the least recently used idle ones go
// first when the cache is over its count or memory budget, and a model in use is never unloaded.
// Requests for a model that is loading wait for that one load.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ifw::server {

// What the cache holds. unload() gives back what the destructor cannot report on (device memory,
// files); its exceptions are logged with their reason, never thrown at the request that ended.
class CachedModel {
 public:
  virtual ~CachedModel() = default;
  // Memory it holds: asked when it loads and each time its last request ends (it may grow).
  virtual std::size_t resident_bytes() const = 0;
  virtual void unload() {}
  // Whether the model's device (GPU) failed for good, so that it runs on the CPU until the
  // process restarts. Called from any thread.
  virtual bool device_failed() const { return false; }
};

struct CacheOptions {
  std::size_t max_models = 1;                // IFW_MAX_CACHE_SIZE
  std::optional<std::size_t> memory_budget;  // bytes, IFW_CACHE_MEMORY_BUDGET (e.g. 8GiB)
  bool eager_release = false;                // IFW_EAGER_MODEL_RELEASE=1
};

// "8GiB", "512MB", "1.5G", "1000000" (bytes); nullopt for anything else.
std::optional<std::size_t> parse_byte_size(const std::string& text);

// Reads the IFW_* variables above; throws ifw::Error naming the variable and the bad value.
CacheOptions cache_options_from_environment();

struct CacheStats {
  std::uint64_t hits = 0;    // requests served by a loaded (or loading) model
  std::uint64_t misses = 0;  // requests that started a load
  std::uint64_t loads = 0;   // loads that succeeded
  std::uint64_t load_failures = 0;
  double load_seconds = 0.0;    // spent in successful loads
  std::uint64_t evictions = 0;  // idle models dropped for the count or the memory budget
  std::uint64_t releases = 0;   // models dropped by eager release or clear
  std::size_t resident_bytes = 0;
  struct Model {
    std::string name;
    bool loading = false;
    int leases = 0;
    std::size_t bytes = 0;
    bool release_when_idle = false;  // cleared while in use
    bool device_failed = false;      // its GPU failed: on the CPU until a restart
  };
  std::vector<Model> models;  // most recently used first
};

struct ClearResult {
  int released = 0;  // idle models released now
  int deferred = 0;  // in use: released when their last lease returns
};

namespace detail {
struct CacheState;
struct CacheEntry;
}  // namespace detail

// A model in use. Movable; returning it (destruction) may release the model.
class ModelLease {
 public:
  ModelLease(ModelLease&&) noexcept = default;
  ModelLease& operator=(ModelLease&& other) noexcept;
  ModelLease(const ModelLease&) = delete;
  ModelLease& operator=(const ModelLease&) = delete;
  ~ModelLease();

  CachedModel& model() const;
  template <typename T>
  T& as() const {
    return static_cast<T&>(model());
  }
  const std::string& name() const;

 private:
  friend class ModelCache;
  ModelLease(std::shared_ptr<detail::CacheState> state, std::shared_ptr<detail::CacheEntry> entry);
  void give_back() noexcept;
  std::shared_ptr<detail::CacheState> state_;
  std::shared_ptr<detail::CacheEntry> entry_;
};

class ModelCache {
 public:
  // Loads a model by name (a folder or a Hub id); throws on failure. Called without the cache's
  // lock held, so that other models are served while one loads.
  using Loader = std::function<std::unique_ptr<CachedModel>(const std::string& name)>;

  ModelCache(Loader loader, CacheOptions options);
  // Idle models are released now; leased ones when their lease returns (leases keep what they
  // need alive).
  ~ModelCache();
  ModelCache(const ModelCache&) = delete;
  ModelCache& operator=(const ModelCache&) = delete;

  // The model, loaded if need be (or waiting for the load under way). Rethrows the loader's error.
  ModelLease acquire(const std::string& name);
  ClearResult clear();
  CacheStats stats() const;

 private:
  std::shared_ptr<detail::CacheState> state_;
};

}  // namespace ifw::server
