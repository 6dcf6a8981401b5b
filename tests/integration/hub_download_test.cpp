// Models from the Hub, against a fake Hub on loopback: fresh download into the Hugging Face cache
// layout, resume after a dropped connection, corrupt data rejected, tokens, offline mode, and the
// `ifw models` commands.
#include <cstdlib>

#include <gtest/gtest.h>

#include "integration/fake_hub.hpp"
#include "integration/run_ifw.hpp"
#include "model/hub/hub_cache.hpp"
#include "model/model_folder.hpp"
#include "support/expect_error.hpp"
#include "support/golden.hpp"
#include "support/model_builder.hpp"
#include "support/temp_dir.hpp"

namespace ifw::test {
namespace {

constexpr const char* kRepo = "test-org/whisper-synthetic";

class HubDownload : public ::testing::Test {
 protected:
  void SetUp() override {
    SyntheticModelOptions o;
    o.shards = 2;  // an index and two shards
    write_synthetic_model(model_.path(), o);
    hub_ = std::make_unique<FakeHub>(kRepo, model_.path());
    settings_.cache_dir = cache_.path();
    settings_.endpoint = hub_->endpoint();
  }
  std::filesystem::path repo() const { return model::hub::repo_folder(settings_, kRepo); }

  TempDir model_;
  TempDir cache_;
  std::unique_ptr<FakeHub> hub_;
  model::hub::HubSettings settings_;
};

TEST_F(HubDownload, FreshDownloadInTheHubsCacheLayout) {
  std::uint64_t last_total = 0;
  const auto snapshot = model::hub::resolve_model(
      kRepo, "main", settings_, [&](const std::string&, std::uint64_t, std::uint64_t total) {
        last_total = total;
        return true;
      });
  EXPECT_EQ(snapshot, repo() / "snapshots" / FakeHub::kCommit);
  EXPECT_GT(last_total, 0u);
  const model::ModelFolder folder(snapshot);  // loads and validates
  EXPECT_EQ(folder.weights().files().size(), 2u);
  // huggingface_hub's conventions: refs/main holds the commit; snapshot files are relative links
  // into blobs/, named by their ETag (the SHA-256 of an LFS file's content).
  EXPECT_EQ(read_file(repo() / "refs" / "main"), FakeHub::kCommit);
  for (const auto& entry : std::filesystem::directory_iterator(snapshot)) {
    ASSERT_TRUE(std::filesystem::is_symlink(entry.symlink_status())) << entry.path();
    const auto target = std::filesystem::read_symlink(entry.path());
    EXPECT_TRUE(target.string().starts_with("../../blobs/")) << target;
    const auto blob = std::filesystem::canonical(entry.path());
    if (entry.path().extension() == ".safetensors") {
      EXPECT_EQ(blob.filename().string(), model::hub::sha256_of_file(blob));
    } else {
      EXPECT_EQ(blob.filename().string(), model::hub::git_blob_sha1_of_file(blob));
    }
  }
  // A second resolution downloads nothing.
  const int before = hub_->file_requests;
  EXPECT_EQ(model::hub::resolve_model(kRepo, "main", settings_), snapshot);
  EXPECT_EQ(hub_->file_requests, before);
}

TEST_F(HubDownload, ResumesAfterADroppedConnection) {
  hub_->drop_first_transfer = true;
  const auto snapshot = model::hub::resolve_model(kRepo, "main", settings_);
  EXPECT_GE(hub_->range_requests, 1);
  EXPECT_NO_THROW(model::ModelFolder{snapshot});
}

TEST_F(HubDownload, CorruptDataIsRejected) {
  hub_->corrupt = true;
  EXPECT_IFW_ERROR(model::hub::resolve_model(kRepo, "main", settings_), "download rejected",
                   "SHA-256 does not match");
  for (const auto& entry : std::filesystem::recursive_directory_iterator(repo() / "blobs")) {
    EXPECT_FALSE(entry.path().string().ends_with(".incomplete")) << "a corrupt download was kept";
  }
  EXPECT_FALSE(std::filesystem::exists(repo() / "snapshots" / FakeHub::kCommit /
                                       "model-00001-of-00002.safetensors"));
}

TEST_F(HubDownload, TokensAndUnknownModels) {
  hub_->required_token = "secret";
  EXPECT_IFW_ERROR(model::hub::resolve_model(kRepo, "main", settings_), "HTTP 401", "HF_TOKEN");
  settings_.token = "secret";
  EXPECT_NO_THROW(model::hub::resolve_model(kRepo, "main", settings_));
  EXPECT_IFW_ERROR(model::hub::resolve_model("test-org/other", "main", settings_), "no such model");
  EXPECT_IFW_ERROR(model::hub::resolve_model("../etc/passwd", "main", settings_),
                   "neither a model folder nor a Hub id");
}

TEST_F(HubDownload, OfflineUsesTheCacheOnly) {
  settings_.offline = true;
  EXPECT_IFW_ERROR(model::hub::resolve_model(kRepo, "main", settings_), "HF_HUB_OFFLINE",
                   "ifw models download");
  settings_.offline = false;
  const auto snapshot = model::hub::resolve_model(kRepo, "main", settings_);
  hub_.reset();  // the Hub is gone
  settings_.offline = true;
  EXPECT_EQ(model::hub::resolve_model(kRepo, "main", settings_), snapshot);
  settings_.offline = false;  // unreachable Hub, complete cache: the cache is used
  EXPECT_EQ(model::hub::resolve_model(kRepo, "main", settings_), snapshot);
}

TEST_F(HubDownload, ModelsCommandsAndTranscribeByHubId) {
  IFW_REQUIRE_GOLDEN();
  const std::string env = "HF_HUB_CACHE=" + shell_quote(cache_.path().string()) +
                          " HF_ENDPOINT=" + hub_->endpoint() + " ";
  const std::string ifw = shell_quote(IFW_BINARY);
  const TempDir out;
  EXPECT_EQ(run_shell(env + ifw + " models download " + kRepo + " >" +
                      shell_quote((out / "path").string())),
            0);
  EXPECT_TRUE(read_file(out / "path").find(FakeHub::kCommit) != std::string::npos);
  EXPECT_EQ(run_shell(env + ifw + " models list --json >" + shell_quote((out / "list").string())),
            0);
  EXPECT_TRUE(contains(read_file(out / "list"), kRepo));
  // Transcribe by Hub id with the network off.
  EXPECT_EQ(run_shell(env + "HF_HUB_OFFLINE=1 " + ifw + " transcribe " + shell_quote(jfk()) +
                      " --model " + kRepo + " -f txt --max-new-tokens 4 -q -o " +
                      shell_quote(out.path().string())),
            0);
  EXPECT_TRUE(std::filesystem::exists(out / "jfk.txt"));
  EXPECT_EQ(run_shell(env + ifw + " models rm " + kRepo + " >/dev/null"), 0);
  EXPECT_FALSE(std::filesystem::exists(repo()));
  EXPECT_EQ(run_shell(env + ifw + " models rm " + kRepo + " 2>/dev/null"), 1);
}

}  // namespace
}  // namespace ifw::test
