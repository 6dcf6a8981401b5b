// Models from the Hugging Face Hub, kept in the Hub's own cache layout so that Python tools and
// ifw share one copy:  <cache>/models--<org>--<name>/{blobs/<etag>, snapshots/<commit>/<file> ->
// ../../blobs/<etag>, refs/<revision>}.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace ifw::model::hub {

struct HubSettings {
  std::filesystem::path
      cache_dir;  // $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub
  std::string endpoint = "https://huggingface.co";  // $HF_ENDPOINT
  std::string token;                                // $HF_TOKEN, else <HF_HOME>/token
  bool offline = false;                             // $HF_HUB_OFFLINE=1
  static HubSettings from_environment();
};

// "openai/whisper-tiny" or "distil-whisper/distil-large-v3": owner and name, no other slashes.
bool is_repo_id(std::string_view text);
std::filesystem::path repo_folder(const HubSettings& settings, const std::string& repo_id);

// (file, bytes done, bytes total); return false to cancel.
using DownloadProgress =
    std::function<bool(const std::string& file, std::uint64_t done, std::uint64_t total)>;

// The snapshot folder of `repo_id` at `revision` holding a complete Whisper model (configs,
// tokenizer, safetensors weights), downloading what the cache lacks: resumable, checked against
// the Hub's checksums. Offline (or when the Hub cannot be reached), the cache alone is used.
// Throws ifw::Error with what went wrong and what to do.
std::filesystem::path resolve_model(const std::string& repo_id, const std::string& revision,
                                    const HubSettings& settings,
                                    const DownloadProgress& progress = {});

struct CachedModel {
  std::string repo_id;
  std::filesystem::path folder;
  std::vector<std::string> revisions;  // refs, e.g. "main"
  std::uint64_t bytes = 0;             // of its blobs
};
std::vector<CachedModel> list_cached_models(const HubSettings& settings);
// Removes a model from the cache; throws ifw::Error (kNotFound) when it is not there.
std::uint64_t remove_cached_model(const HubSettings& settings, const std::string& repo_id);

// SHA-256 (hex) of a file, and git's blob SHA-1 (the Hub's ETag of small files).
std::string sha256_of_file(const std::filesystem::path& file);
std::string git_blob_sha1_of_file(const std::filesystem::path& file);

}  // namespace ifw::model::hub
