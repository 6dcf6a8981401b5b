// A Hugging Face Hub on loopback for download tests: the Hub's URL layout and headers
// (/api/models/<repo>/revision/<rev>, /<repo>/resolve/<commit>/<file>, X-Repo-Commit, ETag,
// X-Linked-Etag, ranges), serving a model folder, with faults on demand.
#pragma once

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace httplib {
class Server;
}

namespace ifw::test {

class FakeHub {
 public:
  // Serves every file of `folder` as repository `repo_id` at commit kCommit; large files
  // (safetensors) as LFS files (SHA-256 ETag), the rest as git blobs (SHA-1 ETag).
  FakeHub(std::string repo_id, const std::filesystem::path& folder);
  ~FakeHub();
  FakeHub(const FakeHub&) = delete;
  FakeHub& operator=(const FakeHub&) = delete;

  std::string endpoint() const;  // "http://127.0.0.1:<port>"

  static constexpr const char* kCommit = "3b2c6f2e9a1d4c5b8e7f6a5d4c3b2a1f0e9d8c7b";

  // Faults: the first download of LFS files stops half-way (the client must resume); LFS files
  // are served with one byte changed (the client must reject them); a token is required.
  std::atomic<bool> drop_first_transfer{false};
  std::atomic<bool> corrupt{false};
  std::string required_token;

  std::atomic<int> range_requests{0};
  std::atomic<int> file_requests{0};

 private:
  struct File {
    std::string content;
    std::string etag;
    bool lfs = false;
  };
  std::string repo_;
  std::map<std::string, File> files_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<bool> dropped_{false};
};

}  // namespace ifw::test
