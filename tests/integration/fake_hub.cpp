#include "integration/fake_hub.hpp"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "model/hub/hub_cache.hpp"
#include "support/temp_dir.hpp"

namespace ifw::test {

FakeHub::FakeHub(std::string repo_id, const std::filesystem::path& folder)
    : repo_(std::move(repo_id)), server_(std::make_unique<httplib::Server>()) {
  for (const auto& entry : std::filesystem::directory_iterator(folder)) {
    File f;
    f.content = read_file(entry.path());
    f.lfs = entry.path().extension() == ".safetensors";
    f.etag = f.lfs ? model::hub::sha256_of_file(entry.path())
                   : model::hub::git_blob_sha1_of_file(entry.path());
    files_[entry.path().filename().string()] = std::move(f);
  }
  const auto authorized = [this](const httplib::Request& req) {
    return required_token.empty() ||
           req.get_header_value("Authorization") == "Bearer " + required_token;
  };
  server_->Get("/api/models/" + repo_ + "/revision/(.+)",
               [this, authorized](const httplib::Request& req, httplib::Response& res) {
                 if (!authorized(req)) {
                   res.status = 401;
                   return;
                 }
                 nlohmann::json siblings = nlohmann::json::array();
                 for (const auto& [name, f] : files_)
                   siblings.push_back({{"rfilename", name}});
                 res.set_content(
                     nlohmann::json{{"id", repo_}, {"sha", kCommit}, {"siblings", siblings}}.dump(),
                     "application/json");
               });
  server_->Get("/" + repo_ + "/resolve/([0-9a-f]+)/(.+)",
               [this, authorized](const httplib::Request& req, httplib::Response& res) {
                 if (!authorized(req)) {
                   res.status = 401;
                   return;
                 }
                 const auto it = files_.find(req.matches[2]);
                 if (it == files_.end() || req.matches[1] != kCommit) {
                   res.status = 404;
                   return;
                 }
                 ++file_requests;
                 if (req.has_header("Range")) ++range_requests;
                 const File& f = it->second;
                 res.set_header("X-Repo-Commit", kCommit);
                 res.set_header("ETag", "\"" + (f.lfs ? std::string("0000") : f.etag) + "\"");
                 if (f.lfs) {
                   res.set_header("X-Linked-Etag", "\"" + f.etag + "\"");
                   res.set_header("X-Linked-Size", std::to_string(f.content.size()));
                 }
                 std::string body = f.content;
                 if (f.lfs && corrupt) body[body.size() / 2] ^= 0x5a;
                 const bool drop = f.lfs && req.method == "GET" && drop_first_transfer &&
                                   !dropped_.exchange(true);
                 auto data = std::make_shared<std::string>(std::move(body));
                 res.set_content_provider(
                     data->size(), "application/octet-stream",
                     [data, drop](std::size_t offset, std::size_t length, httplib::DataSink& sink) {
                       if (drop && offset + length > data->size() / 2) {
                         // Half of the file, then the connection goes away.
                         const std::size_t half =
                             data->size() / 2 > offset ? data->size() / 2 - offset : 0;
                         sink.write(data->data() + offset, half);
                         return false;
                       }
                       sink.write(data->data() + offset, length);
                       return true;
                     });
               });
  port_ = server_->bind_to_any_port("127.0.0.1");
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  // bind_to_any_port already listens: connections wait in the backlog until the loop starts.
}

FakeHub::~FakeHub() {
  server_->stop();
  thread_.join();
}

std::string FakeHub::endpoint() const {
  return "http://127.0.0.1:" + std::to_string(port_);
}

}  // namespace ifw::test
