// Uploaded audio kept on disk while it is transcribed: FFmpeg needs a file it can seek in (an
// MP4 may keep its index at the end), and a request's bytes should not stay in memory for the
// minutes a long file takes. One private folder (0700) per server, one file (0600) per upload,
// removed when its request ends; the folder and anything left in it go with the spool.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace ifw::server {

class UploadSpool {
 public:
  // A new folder ifw-uploads-XXXXXX under `parent` (default: the system's temporary folder).
  // Throws ifw::Error (kIo) naming the folder.
  explicit UploadSpool(
      const std::filesystem::path& parent = std::filesystem::temp_directory_path());
  ~UploadSpool();  // failures to remove are logged with their reason
  UploadSpool(const UploadSpool&) = delete;
  UploadSpool& operator=(const UploadSpool&) = delete;

  // One stored upload; removed with this object.
  class File {
   public:
    File(File&& other) noexcept;
    File& operator=(File&& other) noexcept;
    File(const File&) = delete;
    File& operator=(const File&) = delete;
    ~File();
    const std::filesystem::path& path() const { return path_; }

   private:
    friend class UploadSpool;
    explicit File(std::filesystem::path path) : path_(std::move(path)) {}
    void remove() noexcept;
    std::filesystem::path path_;
  };

  // Writes `bytes` to a new file whose extension comes from the upload's name (a hint for
  // FFmpeg; kept only when it is short and plain). Throws ifw::Error (kIo).
  File store(std::string_view bytes, std::string_view upload_name);
  const std::filesystem::path& folder() const { return folder_; }

  // ".mp3" from "talk.MP3"; "" when there is none or it looks odd.
  static std::string extension_of(std::string_view upload_name);

 private:
  std::filesystem::path folder_;
};

}  // namespace ifw::server
