// A ZIP archive built in memory (libarchive), for downloads of several result files at once.
#pragma once

#include <ctime>
#include <memory>
#include <string>
#include <string_view>

struct archive;

namespace ifw::util {

// Regular files only, deflated, mode 0644, all with the same modification time. Names are UTF-8
// ("talk/talk.srt"); they are marked as UTF-8 in the archive so that unzip tools show them right.
// Names are stored as given: making them safe to extract (no "..", no leading "/") and unique is
// the caller's part.
class ZipWriter {
 public:
  explicit ZipWriter(std::time_t mtime = std::time(nullptr));
  ~ZipWriter();
  ZipWriter(ZipWriter&&) noexcept;
  ZipWriter& operator=(ZipWriter&&) noexcept;
  ZipWriter(const ZipWriter&) = delete;
  ZipWriter& operator=(const ZipWriter&) = delete;

  // Throws ifw::Error: kIo with libarchive's message when it fails; kInvalidArgument for a name
  // that is empty, not UTF-8 or has a NUL byte, or a writer that has finished (or moved from).
  void add(std::string_view name, std::string_view content);
  // The archive's bytes; the writer is done after it (add and finish then throw).
  std::string finish();

 private:
  struct ArchiveFree {
    void operator()(archive* a) const noexcept;
  };
  // Heap-allocated so that libarchive's pointer to it survives a move of the writer. Declared
  // before archive_ so that freeing the archive (which may still write) happens first.
  std::unique_ptr<std::string> out_;
  std::unique_ptr<archive, ArchiveFree> archive_;
  std::time_t mtime_;
};

}  // namespace ifw::util
