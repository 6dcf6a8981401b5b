#include "cli/models_command.hpp"

#include <chrono>
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <ifw/error.hpp>

#include "cli/exit_codes.hpp"
#include "model/hub/hub_cache.hpp"

namespace ifw::cli {
namespace {

std::string size_text(std::uint64_t bytes) {
  if (bytes >= (1ull << 30))
    return fmt::format("{:.2f} GiB", static_cast<double>(bytes) / (1ull << 30));
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1ull << 20));
}

// A download progress bar on standard error, redrawn at most ten times a second.
model::hub::DownloadProgress progress_bar(bool enabled) {
  if (!enabled) return {};
  auto last = std::make_shared<std::chrono::steady_clock::time_point>();
  return [last](const std::string& file, std::uint64_t done, std::uint64_t total) {
    const auto now = std::chrono::steady_clock::now();
    if (now - *last < std::chrono::milliseconds(100) && done != total) return true;
    *last = now;
    const int filled = total > 0 ? static_cast<int>(30 * done / total) : 0;
    std::cerr << fmt::format("\rdownloading {} [{}{}] {} of {}\x1b[K", file,
                             std::string(static_cast<std::size_t>(filled), '#'),
                             std::string(static_cast<std::size_t>(30 - filled), '.'),
                             size_text(done), total > 0 ? size_text(total) : "?");
    if (total > 0 && done >= total) std::cerr << "\n";
    return true;
  };
}

}  // namespace

std::filesystem::path locate_model(const std::string& model, const std::string& revision,
                                   bool quiet) {
  std::error_code ec;
  if (std::filesystem::exists(model, ec)) return model;
  const auto settings = model::hub::HubSettings::from_environment();
  if (!model::hub::is_repo_id(model)) {
    throw Error(
        ErrorKind::kNotFound,
        fmt::format("{}: no such model folder (nor a Hub id like openai/whisper-tiny)", model));
  }
  return model::hub::resolve_model(model, revision, settings,
                                   progress_bar(!quiet && ::isatty(STDERR_FILENO)));
}

void add_models_commands(CLI::App& models, ModelsArgs& a) {
  models.require_subcommand(1);
  auto* list = models.add_subcommand("list", "Models in the Hugging Face cache");
  list->add_flag("--json", a.json, "Print as JSON");
  auto* download =
      models.add_subcommand("download", "Download a model from the Hub into the cache");
  download->add_option("REPO_ID", a.repo_id, "e.g. openai/whisper-large-v3-turbo")->required();
  download->add_option("--revision", a.revision, "Branch, tag or commit")->capture_default_str();
  auto* rm = models.add_subcommand("rm", "Remove a model from the cache");
  rm->add_option("REPO_ID", a.repo_id, "e.g. openai/whisper-tiny")->required();
}

int run_models(const CLI::App& models, const ModelsArgs& a) {
  const auto settings = model::hub::HubSettings::from_environment();
  try {
    if (models.got_subcommand("list")) {
      const auto cached = model::hub::list_cached_models(settings);
      if (a.json) {
        nlohmann::json j = nlohmann::json::array();
        for (const auto& m : cached) {
          j.push_back({{"repo_id", m.repo_id},
                       {"path", m.folder.string()},
                       {"revisions", m.revisions},
                       {"bytes", m.bytes}});
        }
        std::cout << j.dump(2) << "\n";
      } else if (cached.empty()) {
        std::cout << fmt::format("no models in {}\n", settings.cache_dir.string());
      } else {
        for (const auto& m : cached) {
          std::cout << fmt::format("{:<45} {:>12}  {}\n", m.repo_id, size_text(m.bytes),
                                   fmt::join(m.revisions, ","));
        }
      }
      return kExitOk;
    }
    if (models.got_subcommand("download")) {
      const auto path = model::hub::resolve_model(a.repo_id, a.revision, settings,
                                                  progress_bar(::isatty(STDERR_FILENO)));
      std::cout << path.string() << "\n";
      return kExitOk;
    }
    if (models.got_subcommand("rm")) {
      const auto bytes = model::hub::remove_cached_model(settings, a.repo_id);
      std::cout << fmt::format("removed {} ({})\n", a.repo_id, size_text(bytes));
      return kExitOk;
    }
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return e.kind() == ErrorKind::kInvalidArgument ? kExitUsage : kExitFailed;
  }
  return kExitUsage;
}

}  // namespace ifw::cli
