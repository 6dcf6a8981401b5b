#include "model/hub/hub_cache.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <set>

#include <fcntl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <ifw/error.hpp>

#include "model/hub/http_client.hpp"
#include "util/atomic_file.hpp"
#include "util/json.hpp"

namespace ifw::model::hub {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

bool truthy(const std::string& v) {
  std::string l = v;
  std::transform(l.begin(), l.end(), l.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return l == "1" || l == "true" || l == "yes" || l == "on";
}

std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

bool is_commit(const std::string& s) {
  return s.size() == 40 && std::all_of(s.begin(), s.end(), [](char c) {
           return std::isxdigit(static_cast<unsigned char>(c));
         });
}

std::string hex_digest(const char* algorithm, const std::filesystem::path& file,
                       std::string_view prefix) {
  const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(),
                                                                   &EVP_MD_CTX_free);
  if (!md || EVP_DigestInit_ex(md.get(), EVP_get_digestbyname(algorithm), nullptr) != 1) {
    throw Error(ErrorKind::kIo, "OpenSSL could not start a digest");
  }
  EVP_DigestUpdate(md.get(), prefix.data(), prefix.size());
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ErrorKind::kIo, fmt::format("{}: cannot read", file.string()));
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    EVP_DigestUpdate(md.get(), buffer.data(), static_cast<std::size_t>(in.gcount()));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(md.get(), digest, &length);
  std::string out;
  for (unsigned int i = 0; i < length; ++i)
    out += fmt::format("{:02x}", digest[i]);
  return out;
}

// An exclusive lock on a file, held while a blob is downloaded (another process downloading
// the same blob waits instead of writing the same file).
class FileLock {
 public:
  explicit FileLock(const std::filesystem::path& path)
      : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
    if (fd_ < 0)
      throw Error(ErrorKind::kIo, fmt::format("{}: cannot create a lock file", path.string()));
    if (::flock(fd_, LOCK_EX) != 0) {
      ::close(fd_);
      throw Error(ErrorKind::kIo, fmt::format("{}: cannot lock", path.string()));
    }
  }
  ~FileLock() {
    ::flock(fd_, LOCK_UN);
    if (::close(fd_) != 0) spdlog::warn("closing a lock file failed");
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_;
};

// The files of a Whisper model folder, chosen from the repository's file list.
std::vector<std::string> whisper_files(const std::set<std::string>& available,
                                       const std::string& repo_id) {
  std::vector<std::string> files;
  for (const char* f : {"config.json", "generation_config.json", "preprocessor_config.json"}) {
    if (available.contains(f)) files.emplace_back(f);
  }
  if (!available.contains("config.json")) {
    throw Error(ErrorKind::kInvalidModel,
                fmt::format("{} on the Hub has no config.json: not a Transformers model", repo_id));
  }
  if (available.contains("tokenizer.json")) {
    files.emplace_back("tokenizer.json");
  } else if (available.contains("vocab.json") && available.contains("merges.txt")) {
    files.emplace_back("vocab.json");
    files.emplace_back("merges.txt");
    if (available.contains("added_tokens.json")) files.emplace_back("added_tokens.json");
  } else {
    throw Error(
        ErrorKind::kInvalidModel,
        fmt::format("{} on the Hub has no tokenizer.json (nor vocab.json + merges.txt)", repo_id));
  }
  if (available.contains("model.safetensors")) {
    files.emplace_back("model.safetensors");
  } else if (available.contains("model.safetensors.index.json")) {
    files.emplace_back("model.safetensors.index.json");  // its shards are added once it is read
  } else {
    throw Error(ErrorKind::kInvalidModel,
                fmt::format("{} on the Hub has no safetensors weights (model.safetensors); ifw "
                            "does not load PyTorch "
                            ".bin pickles",
                            repo_id));
  }
  return files;
}

// Shard names listed by an index (checked again, fully, when the model folder is read).
std::vector<std::string> shards_of(const std::filesystem::path& index) {
  std::set<std::string> shards;
  const auto j = util::read_json_file(index);
  const auto map = j.find("weight_map");
  if (map == j.end() || !map->is_object())
    throw Error(ErrorKind::kInvalidModel, index.string() + ": no weight_map");
  for (const auto& [tensor, file] : map->items()) {
    const std::string name = file.is_string() ? file.get<std::string>() : "";
    if (name.empty() || name.find('/') != std::string::npos || name == ".." || name == ".") {
      throw Error(
          ErrorKind::kInvalidModel,
          fmt::format("{}: shard name {} is not a plain file name", index.string(), file.dump()));
    }
    shards.insert(name);
  }
  return {shards.begin(), shards.end()};
}

class Downloader {
 public:
  Downloader(const HubSettings& s, std::string repo_id, const DownloadProgress& progress)
      : s_(s),
        repo_(std::move(repo_id)),
        folder_(repo_folder(s, repo_)),
        http_(s.token),
        progress_(progress) {}

  // The commit a revision names, and the repository's file list there.
  std::pair<std::string, std::set<std::string>> commit_and_files(const std::string& revision) {
    const std::string url =
        fmt::format("{}/api/models/{}/revision/{}", s_.endpoint, repo_, revision);
    const HttpResponse r = http_.get(url);
    if (r.status == 401 || r.status == 403) {
      throw Error(
          ErrorKind::kIo,
          fmt::format("{}: the Hub refuses access (HTTP {}); for a gated or private model set "
                      "HF_TOKEN to a token that may read it",
                      repo_, r.status));
    }
    if (r.status == 404) {
      throw Error(
          ErrorKind::kNotFound,
          fmt::format("{}: no such model (or revision \"{}\") on the Hub", repo_, revision));
    }
    if (r.status != 200)
      throw Error(ErrorKind::kIo, fmt::format("{}: the Hub answered HTTP {}", url, r.status));
    const auto j = util::parse_json(r.body, url);
    std::set<std::string> files;
    if (const auto siblings = j.find("siblings"); siblings != j.end() && siblings->is_array()) {
      for (const auto& f : *siblings) {
        if (f.is_object() && f.contains("rfilename") && f["rfilename"].is_string()) {
          files.insert(f["rfilename"].get<std::string>());
        }
      }
    }
    const std::string commit = j.value("sha", "");
    if (!is_commit(commit))
      throw Error(ErrorKind::kIo,
                  fmt::format("{}: the Hub gave no commit for {}", repo_, revision));
    return {commit, files};
  }

  // One file into blobs/ and linked from snapshots/<commit>/.
  void fetch(const std::string& commit, const std::string& file) {
    const auto link = folder_ / "snapshots" / commit / file;
    std::error_code ec;
    if (std::filesystem::exists(link, ec)) return;  // follows the link: the blob is there
    const std::string url = fmt::format("{}/{}/resolve/{}/{}", s_.endpoint, repo_, commit, file);
    const HttpResponse head = http_.head(url, false);
    if (head.status >= 400)
      throw Error(ErrorKind::kIo, fmt::format("{}: HTTP {}", url, head.status));
    std::string etag = head.headers.contains("x-linked-etag") ? head.headers.at("x-linked-etag")
                       : head.headers.count("etag")           ? head.headers.at("etag")
                                                              : "";
    if (etag.starts_with("W/")) etag = etag.substr(2);
    etag.erase(std::remove(etag.begin(), etag.end(), '"'), etag.end());
    if (etag.empty() || etag.find('/') != std::string::npos ||
        etag.find("..") != std::string::npos) {
      throw Error(ErrorKind::kIo, fmt::format("{}: the Hub sent no usable ETag", url));
    }
    const std::string size_text =
        head.headers.contains("x-linked-size") ? head.headers.at("x-linked-size")
        : head.headers.count("content-length") ? head.headers.at("content-length")
                                               : "";
    const std::uint64_t size = size_text.empty() ? 0 : std::stoull(size_text);

    std::filesystem::create_directories(folder_ / "blobs");
    const auto blob = folder_ / "blobs" / etag;
    if (!std::filesystem::exists(blob, ec)) {
      const FileLock lock(folder_ / "blobs" / (etag + ".lock"));
      if (!std::filesystem::exists(blob, ec)) download_blob(url, blob, etag, size, file);
    }
    std::filesystem::create_directories(link.parent_path());
    std::filesystem::create_symlink(std::filesystem::relative(blob, link.parent_path()), link, ec);
    if (ec && !std::filesystem::exists(link)) {
      throw Error(ErrorKind::kIo, fmt::format("{}: cannot link into the snapshot: {}",
                                              link.string(), ec.message()));
    }
  }

  std::filesystem::path folder() const { return folder_; }

 private:
  void download_blob(const std::string& url, const std::filesystem::path& blob,
                     const std::string& etag, std::uint64_t size, const std::string& file) {
    const auto partial = std::filesystem::path(blob.string() + ".incomplete");
    const DownloadProgress& progress = progress_;
    const ProgressCallback on_bytes = [&](std::uint64_t done, std::uint64_t total) {
      return !progress || progress(file, done, total > 0 ? total : size);
    };
    // Dropped connections happen with large files: resume from what arrived, a few times.
    constexpr int kAttempts = 5;
    for (int attempt = 1;; ++attempt) {
      try {
        http_.download(url, partial, on_bytes);
        break;
      } catch (const Error& e) {
        const std::string what = e.what();
        if (attempt == kAttempts || what.find("cancelled") != std::string::npos ||
            what.find("HTTP 4") != std::string::npos) {
          throw;
        }
        spdlog::warn("{} (attempt {} of {}), resuming", what, attempt, kAttempts);
      }
    }
    std::error_code ec;
    const std::uint64_t got = std::filesystem::file_size(partial, ec);
    std::string problem;
    if (size > 0 && got != size) {
      problem = fmt::format("{} bytes arrived, the Hub announced {}", got, size);
    } else if (etag.size() == 64 && sha256_of_file(partial) != etag) {
      problem = "its SHA-256 does not match the Hub's";
    } else if (etag.size() == 40 && git_blob_sha1_of_file(partial) != etag) {
      problem = "its checksum (git SHA-1) does not match the Hub's";
    }
    if (!problem.empty()) {
      std::filesystem::remove(partial, ec);  // a corrupt download is not resumed
      throw Error(ErrorKind::kIo, fmt::format("{}: download rejected: {}", url, problem));
    }
    std::filesystem::rename(partial, blob);
  }

  const HubSettings& s_;
  std::string repo_;
  std::filesystem::path folder_;
  HttpClient http_;
  const DownloadProgress& progress_;
};

// The commit a revision resolves to in the cache (refs/<revision>, or the revision itself).
std::string cached_commit(const std::filesystem::path& folder, const std::string& revision) {
  if (is_commit(revision)) return revision;
  std::ifstream in(folder / "refs" / revision);
  std::string commit;
  std::getline(in, commit);
  return is_commit(trim(commit)) ? trim(commit) : "";
}

bool complete_snapshot(const std::filesystem::path& snapshot) {
  std::error_code ec;
  if (!std::filesystem::exists(snapshot / "config.json", ec)) return false;
  const bool tokenizer = std::filesystem::exists(snapshot / "tokenizer.json", ec) ||
                         (std::filesystem::exists(snapshot / "vocab.json", ec) &&
                          std::filesystem::exists(snapshot / "merges.txt", ec));
  if (!tokenizer) return false;
  if (std::filesystem::exists(snapshot / "model.safetensors", ec)) return true;
  if (!std::filesystem::exists(snapshot / "model.safetensors.index.json", ec)) return false;
  try {
    for (const auto& shard : shards_of(snapshot / "model.safetensors.index.json")) {
      if (!std::filesystem::exists(snapshot / shard, ec)) return false;
    }
  } catch (const Error&) {
    return false;
  }
  return true;
}

}  // namespace

HubSettings HubSettings::from_environment() {
  HubSettings s;
  const std::string home = env("HOME");
  const std::filesystem::path hf_home =
      !env("HF_HOME").empty() ? std::filesystem::path(env("HF_HOME"))
      : !env("XDG_CACHE_HOME").empty()
          ? std::filesystem::path(env("XDG_CACHE_HOME")) / "huggingface"
          : std::filesystem::path(home.empty() ? "." : home) / ".cache" / "huggingface";
  s.cache_dir =
      !env("HF_HUB_CACHE").empty() ? std::filesystem::path(env("HF_HUB_CACHE")) : hf_home / "hub";
  if (!env("HF_ENDPOINT").empty()) s.endpoint = env("HF_ENDPOINT");
  while (s.endpoint.ends_with('/'))
    s.endpoint.pop_back();
  s.token = !env("HF_TOKEN").empty() ? env("HF_TOKEN") : env("HUGGING_FACE_HUB_TOKEN");
  if (s.token.empty()) {
    std::ifstream token_file(hf_home / "token");
    std::getline(token_file, s.token);
    s.token = trim(s.token);
  }
  s.offline = truthy(env("HF_HUB_OFFLINE"));
  return s;
}

bool is_repo_id(std::string_view text) {
  // <owner>/<name>: letters, digits, '.', '_', '-', starting with a letter or digit, no "..".
  const auto part_ok = [](std::string_view p) {
    return !p.empty() && p.size() <= 96 && std::isalnum(static_cast<unsigned char>(p.front())) &&
           std::all_of(p.begin(), p.end(), [](char c) {
             return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
           });
  };
  const auto slash = text.find('/');
  return slash != std::string_view::npos && part_ok(text.substr(0, slash)) &&
         part_ok(text.substr(slash + 1)) && text.find("..") == std::string_view::npos;
}

std::filesystem::path repo_folder(const HubSettings& settings, const std::string& repo_id) {
  std::string name = "models--" + repo_id;
  for (std::size_t p; (p = name.find('/')) != std::string::npos;)
    name.replace(p, 1, "--");
  return settings.cache_dir / name;
}

std::filesystem::path resolve_model(const std::string& repo_id, const std::string& revision,
                                    const HubSettings& settings, const DownloadProgress& progress) {
  if (!is_repo_id(repo_id)) {
    throw Error(
        ErrorKind::kInvalidArgument,
        fmt::format("\"{}\" is neither a model folder nor a Hub id like openai/whisper-tiny",
                    repo_id));
  }
  const auto folder = repo_folder(settings, repo_id);
  const std::string cached = cached_commit(folder, revision);
  const auto cached_snapshot = folder / "snapshots" / cached;
  const bool have_cached = !cached.empty() && complete_snapshot(cached_snapshot);
  if (settings.offline) {
    if (have_cached) return cached_snapshot;
    throw Error(
        ErrorKind::kNotFound,
        fmt::format(
            "{} is not in the cache ({}) and HF_HUB_OFFLINE is set: download it while online with "
            "`ifw models download {}`",
            repo_id, folder.string(), repo_id));
  }
  Downloader d(settings, repo_id, progress);
  std::string commit;
  std::set<std::string> available;
  try {
    std::tie(commit, available) = d.commit_and_files(revision);
  } catch (const Error& e) {
    if (have_cached && e.kind() == ErrorKind::kIo &&
        std::string(e.what()).find("HTTP") == std::string::npos) {
      spdlog::warn("{}; using the cached copy of {}", e.what(), repo_id);
      return cached_snapshot;
    }
    throw;
  }
  const auto snapshot = folder / "snapshots" / commit;
  if (!complete_snapshot(snapshot)) {
    for (const std::string& file : whisper_files(available, repo_id)) {
      d.fetch(commit, file);
      if (file == "model.safetensors.index.json") {
        for (const std::string& shard : shards_of(snapshot / file))
          d.fetch(commit, shard);
      }
    }
  }
  if (!is_commit(revision)) {
    std::filesystem::create_directories(folder / "refs");
    util::write_file_atomically(folder / "refs" / revision, commit);
  }
  return snapshot;
}

std::vector<CachedModel> list_cached_models(const HubSettings& settings) {
  std::vector<CachedModel> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(settings.cache_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || !name.starts_with("models--")) continue;
    CachedModel m;
    m.folder = entry.path();
    m.repo_id = name.substr(8);
    if (const auto p = m.repo_id.find("--"); p != std::string::npos) m.repo_id.replace(p, 2, "/");
    for (const auto& ref : std::filesystem::directory_iterator(entry.path() / "refs", ec)) {
      m.revisions.push_back(ref.path().filename().string());
    }
    for (const auto& blob : std::filesystem::directory_iterator(entry.path() / "blobs", ec)) {
      if (blob.is_regular_file()) m.bytes += blob.file_size();
    }
    std::sort(m.revisions.begin(), m.revisions.end());
    out.push_back(std::move(m));
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.repo_id < b.repo_id; });
  return out;
}

std::uint64_t remove_cached_model(const HubSettings& settings, const std::string& repo_id) {
  if (!is_repo_id(repo_id))
    throw Error(ErrorKind::kInvalidArgument, fmt::format("\"{}\" is not a Hub id", repo_id));
  const auto folder = repo_folder(settings, repo_id);
  std::error_code ec;
  if (!std::filesystem::is_directory(folder, ec)) {
    throw Error(ErrorKind::kNotFound,
                fmt::format("{} is not in the cache ({})", repo_id, settings.cache_dir.string()));
  }
  std::uint64_t bytes = 0;
  for (const auto& blob : std::filesystem::directory_iterator(folder / "blobs", ec)) {
    if (blob.is_regular_file()) bytes += blob.file_size();
  }
  std::filesystem::remove_all(folder, ec);
  if (ec)
    throw Error(ErrorKind::kIo,
                fmt::format("{}: cannot remove: {}", folder.string(), ec.message()));
  return bytes;
}

std::string sha256_of_file(const std::filesystem::path& file) {
  return hex_digest("SHA256", file, "");
}

std::string git_blob_sha1_of_file(const std::filesystem::path& file) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(file, ec);
  return hex_digest("SHA1", file, fmt::format("blob {}", size) + std::string(1, '\0'));
}

}  // namespace ifw::model::hub
