#include "server/model_cache.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <map>
#include <mutex>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <ifw/error.hpp>

namespace ifw::server {
namespace detail {

struct CacheEntry {
  std::string name;
  std::unique_ptr<CachedModel> model;
  bool loading = true;
  std::exception_ptr error;  // the load failed: every waiter rethrows it
  int leases = 0;
  std::size_t bytes = 0;
  std::uint64_t last_used = 0;
  bool release_when_idle = false;
};

struct CacheState {
  ModelCache::Loader loader;
  CacheOptions options;
  mutable std::mutex mutex;
  std::condition_variable loaded;
  std::map<std::string, std::shared_ptr<CacheEntry>> entries;
  CacheStats counters;  // models and resident_bytes are filled in by stats()
  std::uint64_t clock = 0;

  std::size_t resident_locked() const {
    std::size_t total = 0;
    for (const auto& [name, e] : entries)
      total += e->bytes;
    return total;
  }

  // Idle models, least recently used first, taken out of the cache until it holds at most
  // `max_models` (counting `incoming`, a load about to start) and fits its memory budget.
  std::vector<std::shared_ptr<CacheEntry>> evict_locked(std::size_t incoming) {
    std::vector<std::shared_ptr<CacheEntry>> victims;
    const auto over = [&] {
      const bool too_many = entries.size() + incoming > options.max_models;
      const bool too_big = options.memory_budget && resident_locked() > *options.memory_budget;
      return too_many || too_big;
    };
    while (over()) {
      auto lru = entries.end();
      for (auto it = entries.begin(); it != entries.end(); ++it) {
        const CacheEntry& e = *it->second;
        if (e.loading || e.leases > 0) continue;  // never one in use
        if (lru == entries.end() || e.last_used < lru->second->last_used) lru = it;
      }
      if (lru == entries.end())
        break;  // everything is in use: over the limit until a lease returns
      victims.push_back(lru->second);
      entries.erase(lru);
      ++counters.evictions;
    }
    return victims;
  }
};

namespace {

// Outside the lock: unloading may take time (device memory, a large unmap).
void unload(std::vector<std::shared_ptr<CacheEntry>>& victims, const char* why) {
  for (auto& e : victims) {
    spdlog::info("model cache: releasing {} ({}, {:.0f} MiB)", e->name, why,
                 static_cast<double>(e->bytes) / (1 << 20));
    try {
      if (e->model) e->model->unload();
    } catch (const std::exception& ex) {
      spdlog::error("model cache: releasing {} failed: {}", e->name, ex.what());
    } catch (...) {
      spdlog::error("model cache: releasing {} failed with an unknown exception", e->name);
    }
    e->model.reset();
  }
  victims.clear();
}

}  // namespace
}  // namespace detail

using detail::CacheEntry;
using detail::CacheState;

ModelLease::ModelLease(std::shared_ptr<CacheState> state, std::shared_ptr<CacheEntry> entry)
    : state_(std::move(state)), entry_(std::move(entry)) {}

ModelLease& ModelLease::operator=(ModelLease&& other) noexcept {
  if (this != &other) {
    give_back();
    state_ = std::move(other.state_);
    entry_ = std::move(other.entry_);
  }
  return *this;
}

ModelLease::~ModelLease() {
  give_back();
}

CachedModel& ModelLease::model() const {
  return *entry_->model;
}

const std::string& ModelLease::name() const {
  return entry_->name;
}

void ModelLease::give_back() noexcept {
  if (!state_ || !entry_) return;
  std::vector<std::shared_ptr<CacheEntry>> victims;
  const char* why = "over the cache's limits";
  {
    const std::lock_guard lock(state_->mutex);
    CacheEntry& e = *entry_;
    if (--e.leases == 0) {
      const bool eager = state_->options.eager_release;
      if (eager || e.release_when_idle) {
        const auto it = state_->entries.find(e.name);
        if (it != state_->entries.end() && it->second == entry_) state_->entries.erase(it);
        victims.push_back(entry_);
        ++state_->counters.releases;
        why = eager ? "eager release: its last request ended" : "cleared";
      } else {
        // What it holds may have grown while in use (a CPU copy loaded after its GPU ran out of
        // memory or failed): counted now, before the budget is checked.
        try {
          if (e.model) e.bytes = e.model->resident_bytes();
        } catch (...) {  // a model that cannot say keeps the size it had
        }
        victims = state_->evict_locked(0);
      }
    }
  }
  entry_.reset();
  detail::unload(victims, why);
  state_.reset();
}

ModelCache::ModelCache(Loader loader, CacheOptions options)
    : state_(std::make_shared<CacheState>()) {
  if (options.max_models < 1) {
    throw Error(ErrorKind::kInvalidArgument, "model cache: room for at least one model is needed");
  }
  state_->loader = std::move(loader);
  state_->options = options;
}

ModelCache::~ModelCache() {
  clear();
}

ModelLease ModelCache::acquire(const std::string& name) {
  CacheState& s = *state_;
  std::unique_lock lock(s.mutex);
  for (;;) {
    const auto it = s.entries.find(name);
    if (it == s.entries.end()) break;
    const std::shared_ptr<CacheEntry> e = it->second;
    ++e->leases;  // held while waiting too, so that a clear or eviction never takes it
    if (e->loading) s.loaded.wait(lock, [&] { return !e->loading; });
    if (e->error) {
      --e->leases;
      std::rethrow_exception(e->error);
    }
    ++s.counters.hits;
    e->last_used = ++s.clock;
    return ModelLease(state_, e);
  }

  ++s.counters.misses;
  auto victims = s.evict_locked(1);
  auto e = std::make_shared<CacheEntry>();
  e->name = name;
  e->leases = 1;
  e->last_used = ++s.clock;
  s.entries.emplace(name, e);
  lock.unlock();
  detail::unload(victims, "least recently used, to make room");

  const auto start = std::chrono::steady_clock::now();
  std::unique_ptr<CachedModel> model;
  std::size_t bytes = 0;
  std::exception_ptr error;
  try {
    model = s.loader(name);
    if (!model)
      throw Error(ErrorKind::kInvalidArgument, fmt::format("{}: nothing was loaded", name));
    bytes = model->resident_bytes();  // here, so that nothing below can throw
  } catch (...) {
    error = std::current_exception();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  lock.lock();
  e->loading = false;
  if (error) {
    e->error = error;
    --e->leases;
    ++s.counters.load_failures;
    const auto found = s.entries.find(name);
    if (found != s.entries.end() && found->second == e) s.entries.erase(found);
    s.loaded.notify_all();
    std::rethrow_exception(error);
  }
  e->bytes = bytes;
  e->model = std::move(model);
  ++s.counters.loads;
  s.counters.load_seconds += seconds;
  victims = s.evict_locked(0);  // a budget may only show itself over once the size is known
  s.loaded.notify_all();
  lock.unlock();
  spdlog::info("model cache: loaded {} in {:.2f} s ({:.0f} MiB)", name, seconds,
               static_cast<double>(e->bytes) / (1 << 20));
  detail::unload(victims, "least recently used, over the memory budget");
  return ModelLease(state_, e);
}

ClearResult ModelCache::clear() {
  ClearResult result;
  std::vector<std::shared_ptr<CacheEntry>> victims;
  {
    const std::lock_guard lock(state_->mutex);
    for (auto it = state_->entries.begin(); it != state_->entries.end();) {
      CacheEntry& e = *it->second;
      if (e.leases == 0 && !e.loading) {
        victims.push_back(it->second);
        it = state_->entries.erase(it);
        ++state_->counters.releases;
        ++result.released;
      } else {
        e.release_when_idle = true;
        ++result.deferred;
        ++it;
      }
    }
  }
  detail::unload(victims, "cleared");
  return result;
}

CacheStats ModelCache::stats() const {
  const std::lock_guard lock(state_->mutex);
  CacheStats s = state_->counters;
  s.resident_bytes = state_->resident_locked();
  for (const auto& [name, e] : state_->entries) {
    s.models.push_back({name, e->loading, e->leases, e->bytes, e->release_when_idle,
                        e->model != nullptr && e->model->device_failed()});
  }
  std::vector<std::pair<std::uint64_t, std::size_t>> order;
  for (std::size_t i = 0; i < s.models.size(); ++i)
    order.emplace_back(state_->entries.at(s.models[i].name)->last_used, i);
  std::sort(order.rbegin(), order.rend());
  std::vector<CacheStats::Model> sorted;
  for (const auto& [used, i] : order)
    sorted.push_back(s.models[i]);
  s.models = std::move(sorted);
  return s;
}

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

}  // namespace

std::optional<std::size_t> parse_byte_size(const std::string& text) {
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  std::string unit = text.substr(used);
  static const std::map<std::string, double> kUnits = {{"", 1.0},
                                                       {"B", 1.0},
                                                       {"K", 1024.0},
                                                       {"KB", 1e3},
                                                       {"KiB", 1024.0},
                                                       {"M", 1048576.0},
                                                       {"MB", 1e6},
                                                       {"MiB", 1048576.0},
                                                       {"G", 1073741824.0},
                                                       {"GB", 1e9},
                                                       {"GiB", 1073741824.0},
                                                       {"T", 1099511627776.0},
                                                       {"TB", 1e12},
                                                       {"TiB", 1099511627776.0}};
  const auto u = kUnits.find(unit);
  if (u == kUnits.end() || !std::isfinite(value) || value <= 0) return std::nullopt;
  const double bytes = value * u->second;
  if (bytes < 1 || bytes > 1e18) return std::nullopt;
  return static_cast<std::size_t>(bytes);
}

CacheOptions cache_options_from_environment() {
  CacheOptions o;
  if (const std::string v = env("IFW_MAX_CACHE_SIZE"); !v.empty()) {
    const bool digits = v.find_first_not_of("0123456789") == std::string::npos && v.size() <= 4;
    if (!digits || std::stoi(v) < 1) {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("IFW_MAX_CACHE_SIZE={}: use a number of models from 1 to 9999", v));
    }
    o.max_models = static_cast<std::size_t>(std::stoi(v));
  }
  if (const std::string v = env("IFW_CACHE_MEMORY_BUDGET"); !v.empty()) {
    o.memory_budget = parse_byte_size(v);
    if (!o.memory_budget) {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("IFW_CACHE_MEMORY_BUDGET={}: use a size such as 8GiB or 512MB", v));
    }
  }
  if (const std::string v = env("IFW_EAGER_MODEL_RELEASE"); !v.empty()) {
    if (v == "1" || v == "true" || v == "yes") {
      o.eager_release = true;
    } else if (v != "0" && v != "false" && v != "no") {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("IFW_EAGER_MODEL_RELEASE={}: use 1 or 0", v));
    }
  }
  return o;
}

}  // namespace ifw::server
