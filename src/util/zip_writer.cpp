#include "util/zip_writer.hpp"

#include <cerrno>
#include <new>

#include <archive.h>
#include <archive_entry.h>

#include <ifw/error.hpp>

#include "util/utf8.hpp"

namespace ifw::util {
namespace {

[[noreturn]] void fail(archive* a, const std::string& what) {
  const char* message = archive_error_string(a);
  throw Error(ErrorKind::kIo, "ZIP archive: " + what + ": " +
                                  (message != nullptr ? message : "unknown libarchive error"));
}

// libarchive's write callback: appends to the std::string given as client data.
la_ssize_t append_to_string(archive* a, void* client_data, const void* buffer, size_t length) {
  try {
    static_cast<std::string*>(client_data)->append(static_cast<const char*>(buffer), length);
  } catch (const std::bad_alloc&) {
    // No exception may cross libarchive's C frames; it reports this from the failing call.
    archive_set_error(a, ENOMEM, "out of memory for the archive's %zu bytes", length);
    return -1;
  }
  return static_cast<la_ssize_t>(length);
}

struct EntryFree {
  void operator()(archive_entry* e) const noexcept { archive_entry_free(e); }
};

}  // namespace

void ZipWriter::ArchiveFree::operator()(archive* a) const noexcept {
  archive_write_free(a);
}

ZipWriter::ZipWriter(std::time_t mtime)
    : out_(std::make_unique<std::string>()), archive_(archive_write_new()), mtime_(mtime) {
  archive* a = archive_.get();
  if (a == nullptr) throw std::bad_alloc();
  if (archive_write_set_format_zip(a) != ARCHIVE_OK) fail(a, "cannot select the ZIP format");
  if (archive_write_zip_set_compression_deflate(a) != ARCHIVE_OK) fail(a, "cannot use deflate");
  // Names are given in UTF-8 whatever the process's locale; this also sets the UTF-8 flag of
  // non-ASCII names.
  if (archive_write_set_format_option(a, "zip", "hdrcharset", "UTF-8") != ARCHIVE_OK) {
    fail(a, "cannot set the name encoding");
  }
  // No blocking: without this the end would be padded with zeros to 10240 bytes.
  if (archive_write_set_bytes_per_block(a, 0) != ARCHIVE_OK ||
      archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK) {
    fail(a, "cannot turn off blocking");
  }
  if (archive_write_open2(a, out_.get(), nullptr, append_to_string, nullptr, nullptr) !=
      ARCHIVE_OK) {
    fail(a, "cannot open");
  }
}

ZipWriter::~ZipWriter() = default;
ZipWriter::ZipWriter(ZipWriter&&) noexcept = default;

ZipWriter& ZipWriter::operator=(ZipWriter&& other) noexcept {
  // The old archive first: freeing it writes its end into the old buffer, which must still live.
  archive_ = std::move(other.archive_);
  out_ = std::move(other.out_);
  mtime_ = other.mtime_;
  return *this;
}

void ZipWriter::add(std::string_view name, std::string_view content) {
  if (!archive_) throw Error(ErrorKind::kInvalidArgument, "ZIP archive: already finished");
  const std::string path(name);
  // libarchive would store such names as given, in an archive that says its names are UTF-8.
  if (path.empty() || path.find('\0') != std::string::npos || find_invalid_utf8(path)) {
    throw Error(ErrorKind::kInvalidArgument,
                "ZIP archive: an entry's name must be non-empty UTF-8 without NUL bytes, got " +
                    quote_for_message(path));
  }
  archive* a = archive_.get();
  const std::unique_ptr<archive_entry, EntryFree> entry(archive_entry_new2(a));
  if (!entry) throw std::bad_alloc();
  archive_entry_set_pathname_utf8(entry.get(), path.c_str());
  archive_entry_set_filetype(entry.get(), AE_IFREG);
  archive_entry_set_perm(entry.get(), 0644);
  // A known size keeps small entries free of Zip64 extensions, which some tools mishandle.
  archive_entry_set_size(entry.get(), static_cast<la_int64_t>(content.size()));
  archive_entry_set_mtime(entry.get(), mtime_, 0);
  // ARCHIVE_WARN too: it means something was not stored as asked (e.g. a name not translated).
  if (archive_write_header(a, entry.get()) != ARCHIVE_OK) fail(a, "cannot add " + path);
  std::size_t written = 0;
  while (written < content.size()) {
    const la_ssize_t n = archive_write_data(a, content.data() + written, content.size() - written);
    if (n <= 0) fail(a, "cannot write " + path);
    written += static_cast<std::size_t>(n);
  }
  if (archive_write_finish_entry(a) != ARCHIVE_OK) fail(a, "cannot finish " + path);
}

std::string ZipWriter::finish() {
  if (!archive_) throw Error(ErrorKind::kInvalidArgument, "ZIP archive: already finished");
  // Closing writes the central directory; the writer is done whether or not that succeeds.
  const std::unique_ptr<archive, ArchiveFree> a = std::move(archive_);
  if (archive_write_close(a.get()) != ARCHIVE_OK) fail(a.get(), "cannot finish the archive");
  return std::move(*out_);
}

}  // namespace ifw::util
