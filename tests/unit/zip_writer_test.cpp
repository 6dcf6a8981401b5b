// ZIP archives built in memory, read back with libarchive's readers and checked with unzip.
#include "util/zip_writer.hpp"

#include <clocale>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>

#include <ifw/error.hpp>

#include "support/expect_error.hpp"
#include "support/temp_dir.hpp"

namespace ifw::util {
namespace {

struct Entry {
  std::string name;
  std::string content;
  int filetype = 0;
  int perm = 0;
  std::time_t mtime = 0;
};

enum class Reader { kStreaming, kSeekable };  // local headers or the central directory

// libarchive's reader converts names to the thread's locale, which is "C" in tests (and fails
// for non-ASCII names); C.UTF-8 for the reading only.
class Utf8Locale {
 public:
  Utf8Locale() : locale_(newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(nullptr))) {
    if (locale_ != static_cast<locale_t>(nullptr)) previous_ = uselocale(locale_);
  }
  ~Utf8Locale() {
    if (locale_ == static_cast<locale_t>(nullptr)) return;
    uselocale(previous_);
    freelocale(locale_);
  }
  Utf8Locale(const Utf8Locale&) = delete;
  Utf8Locale& operator=(const Utf8Locale&) = delete;

 private:
  locale_t locale_;
  locale_t previous_ = static_cast<locale_t>(nullptr);
};

std::vector<Entry> read_zip(const std::string& bytes, Reader reader) {
  const Utf8Locale utf8;
  const std::unique_ptr<archive, decltype(&archive_read_free)> a(archive_read_new(),
                                                                 archive_read_free);
  if (reader == Reader::kStreaming) {
    archive_read_support_format_zip_streamable(a.get());
  } else {
    archive_read_support_format_zip_seekable(a.get());
  }
  EXPECT_EQ(archive_read_open_memory(a.get(), bytes.data(), bytes.size()), ARCHIVE_OK)
      << archive_error_string(a.get());
  std::vector<Entry> entries;
  archive_entry* e = nullptr;
  int r = ARCHIVE_OK;
  while ((r = archive_read_next_header(a.get(), &e)) == ARCHIVE_OK) {
    Entry entry;
    const char* name = archive_entry_pathname_utf8(e);
    entry.name = name != nullptr ? name : "(no UTF-8 name)";
    entry.filetype = static_cast<int>(archive_entry_filetype(e));
    entry.perm = static_cast<int>(archive_entry_perm(e));
    entry.mtime = archive_entry_mtime(e);
    char buffer[65536];
    la_ssize_t n = 0;
    while ((n = archive_read_data(a.get(), buffer, sizeof buffer)) > 0) {
      entry.content.append(buffer, static_cast<std::size_t>(n));
    }
    EXPECT_EQ(n, 0) << entry.name << ": " << archive_error_string(a.get());
    entries.push_back(std::move(entry));
  }
  EXPECT_EQ(r, ARCHIVE_EOF) << archive_error_string(a.get());
  return entries;
}

constexpr std::time_t kMtime = 1796000000;  // 2026-11-30, UTC

std::string pseudo_random_text(std::size_t size) {
  std::string s(size, ' ');
  std::uint32_t x = 12345;
  for (char& c : s) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

struct Sample {
  std::string name;
  std::string content;
};

std::vector<Sample> samples() {
  return {{"talk.txt", "Hello there.\n"},
          {"talk.srt", "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"},
          {"empty.tsv", ""},
          {"big/one-megabyte.bin", pseudo_random_text(1 << 20)},
          {"Grüße/訪談 ✓.json", "{\"text\": \"Grüße\"}"}};
}

std::string sample_archive() {
  ZipWriter zip(kMtime);
  for (const Sample& s : samples())
    zip.add(s.name, s.content);
  return zip.finish();
}

void expect_samples(const std::vector<Entry>& entries, bool check_perm) {
  const auto expected = samples();
  ASSERT_EQ(entries.size(), expected.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    SCOPED_TRACE(expected[i].name);
    EXPECT_EQ(entries[i].name, expected[i].name);
    EXPECT_TRUE(entries[i].content == expected[i].content)
        << entries[i].content.size() << " bytes instead of " << expected[i].content.size();
    EXPECT_EQ(entries[i].filetype, static_cast<int>(AE_IFREG));
    EXPECT_EQ(entries[i].mtime, kMtime);
    if (check_perm) {
      EXPECT_EQ(entries[i].perm, 0644);
    }
  }
}

TEST(ZipWriter, EntriesReadBackThroughLocalHeaders) {
  expect_samples(read_zip(sample_archive(), Reader::kStreaming), false);
}

TEST(ZipWriter, EntriesReadBackThroughTheCentralDirectory) {
  // Only the central directory holds the file mode.
  expect_samples(read_zip(sample_archive(), Reader::kSeekable), true);
}

TEST(ZipWriter, EndsWithTheEndRecordNotPadding) {
  const std::string zip = sample_archive();
  ASSERT_GT(zip.size(), 22u);
  EXPECT_EQ(zip.substr(0, 4), "PK\x03\x04");
  EXPECT_EQ(zip.substr(zip.size() - 22, 4), "PK\x05\x06");  // no archive comment follows
}

TEST(ZipWriter, NonAsciiNamesAreMarkedUtf8) {
  const std::string zip = sample_archive();
  const std::string name = samples().back().name;
  // The name follows its local header (30 bytes) and its central directory header (46 bytes);
  // both have general purpose flag bit 11 ("names are UTF-8").
  const std::size_t local = zip.find(name);
  const std::size_t central = zip.find(name, local + 1);
  ASSERT_NE(local, std::string::npos);
  ASSERT_NE(central, std::string::npos);
  ASSERT_EQ(zip.substr(local - 30, 4), "PK\x03\x04");
  ASSERT_EQ(zip.substr(central - 46, 4), "PK\x01\x02");
  const auto flags = [&](std::size_t at) {
    return static_cast<unsigned char>(zip[at]) | static_cast<unsigned char>(zip[at + 1]) << 8;
  };
  EXPECT_NE(flags(local - 30 + 6) & 0x800, 0);
  EXPECT_NE(flags(central - 46 + 8) & 0x800, 0);
}

TEST(ZipWriter, EntriesAreDeflated) {
  ZipWriter zip(kMtime);
  std::string text;
  while (text.size() < (1u << 20))
    text += "00:00:01,000 --> 00:00:02,000 words words words\n";
  zip.add("subtitles.srt", text);
  const std::string bytes = zip.finish();
  EXPECT_LT(bytes.size(), text.size() / 20);
  const auto entries = read_zip(bytes, Reader::kSeekable);
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_TRUE(entries[0].content == text);
}

TEST(ZipWriter, EmptyArchive) {
  // The end record alone (libarchive's reader does not recognise such an archive; unzip and
  // Python's zipfile do).
  EXPECT_EQ(ZipWriter(kMtime).finish(), std::string("PK\x05\x06") + std::string(18, '\0'));
}

TEST(ZipWriter, UnzipAcceptsTheArchive) {
  if (std::system("command -v unzip >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "unzip is not installed; the archive was checked with libarchive only";
  }
  const test::TempDir dir;
  const auto path = dir / "results.zip";
  test::write_file(path, sample_archive());
  const std::string command = "unzip -tq '" + path.string() + "' >/dev/null 2>&1";
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
  // Names extract as the UTF-8 given (the archive marks them UTF-8).
  const std::string extract = "cd '" + dir.path().string() + "' && unzip -q results.zip";
  ASSERT_EQ(std::system(extract.c_str()), 0) << extract;
  EXPECT_EQ(test::read_file(dir / "Grüße/訪談 ✓.json"), "{\"text\": \"Grüße\"}");
  EXPECT_EQ(test::read_file(dir / "empty.tsv"), "");
}

TEST(ZipWriter, MisuseIsAnError) {
  ZipWriter zip(kMtime);
  EXPECT_IFW_ERROR(zip.add("", "x"), "name must be non-empty");
  EXPECT_IFW_ERROR(zip.add(std::string_view("a\0b", 3), "x"), "NUL");
  EXPECT_IFW_ERROR(zip.add("talk\xFF.txt", "x"), "must be non-empty UTF-8", "talk\\xff");
  zip.add("a.txt", "a");
  (void)zip.finish();
  EXPECT_IFW_ERROR(zip.add("b.txt", "b"), "already finished");
  EXPECT_IFW_ERROR((void)zip.finish(), "already finished");
}

TEST(ZipWriter, MovesKeepTheArchive) {
  ZipWriter first(kMtime);
  first.add("a.txt", "a");
  ZipWriter second(std::move(first));
  second.add("b.txt", "b");
  ZipWriter third(kMtime);
  third.add("dropped.txt", "x");
  third = std::move(second);  // third's own archive is dropped
  const auto entries = read_zip(third.finish(), Reader::kSeekable);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].name, "a.txt");
  EXPECT_EQ(entries[1].content, "b");
  EXPECT_IFW_ERROR(first.add("c.txt", "c"), "already finished");  // NOLINT(bugprone-use-after-move)
}

}  // namespace
}  // namespace ifw::util
