// Uploads kept on disk while transcribed: private, whole, and gone when done.
#include "server/upload_spool.hpp"

#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "support/temp_dir.hpp"

namespace ifw::server {
namespace {

unsigned mode_of(const std::filesystem::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 0777;
}

std::string content_of(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(UploadSpool, StoresPrivatelyAndRemovesWhenDone) {
  const test::TempDir parent;
  std::filesystem::path folder, stored, left;
  {
    UploadSpool spool(parent.path());
    folder = spool.folder();
    EXPECT_EQ(folder.parent_path(), parent.path());
    EXPECT_EQ(mode_of(folder), 0700u);
    const std::string bytes("ID3\0binary\xff", 11);
    {
      const UploadSpool::File f = spool.store(bytes, "../../etc/Talk.MP3");
      stored = f.path();
      EXPECT_EQ(stored.parent_path(), folder);
      EXPECT_EQ(stored.extension(), ".mp3");
      EXPECT_EQ(mode_of(stored), 0600u);
      EXPECT_EQ(content_of(stored), bytes);
    }
    EXPECT_FALSE(std::filesystem::exists(stored)) << "removed with its request";
    UploadSpool::File kept = spool.store("x", "noext");
    UploadSpool::File moved = std::move(kept);
    left = moved.path();
    EXPECT_TRUE(std::filesystem::exists(left));
    EXPECT_EQ(left.extension(), "");
  }
  EXPECT_FALSE(std::filesystem::exists(left));
  EXPECT_FALSE(std::filesystem::exists(folder));
}

TEST(UploadSpool, ExtensionsOnlyWhenPlain) {
  EXPECT_EQ(UploadSpool::extension_of("a.WAV"), ".wav");
  EXPECT_EQ(UploadSpool::extension_of("dir.d/file"), "");
  EXPECT_EQ(UploadSpool::extension_of(".hidden"), "");
  EXPECT_EQ(UploadSpool::extension_of("x.$(rm)"), "");
  EXPECT_EQ(UploadSpool::extension_of("x.verylongextension"), "");
  EXPECT_EQ(UploadSpool::extension_of("x."), "");
}

TEST(UploadSpool, AnUnusableParentIsNamed) {
  try {
    UploadSpool spool("/nonexistent/place");
    ADD_FAILURE() << "created";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/place"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ifw::server
