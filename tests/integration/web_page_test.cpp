// The web page of `ifw serve` (web/, issue 7): served with its content types and security headers,
// the embedded copy the same as the files in web/, and a person's use of it in headless Chromium
// (tests/browser/jobs_page_test.mjs: drop three files, wait, check rows, download, reload, phone).
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>

#include "integration/api_checks.hpp"
#include "integration/run_ifw.hpp"
#include "integration/serve_process.hpp"
#include "support/golden.hpp"
#include "support/temp_dir.hpp"

namespace ifw::test {
namespace {

std::string source_file(const std::string& relative) {
  return read_file(std::string(IFW_SOURCE_DIR) + "/" + relative);
}

TEST(WebPage, ServedWithItsTypesAndSecurityHeaders) {
  IFW_REQUIRE_GOLDEN();
  TempDir data;
  START_SERVER(server,
               {"--model", golden_model("tiny-random-v3"), "--data-dir", data.path().string()},
               {{"IFW_API_KEY", "page-key"}});
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(std::chrono::seconds(30));
  const struct {
    const char* path;
    const char* file;
    const char* type;
  } assets[] = {{"/", "web/index.html", "text/html; charset=utf-8"},
                {"/index.html", "web/index.html", "text/html; charset=utf-8"},
                {"/app.js", "web/app.js", "text/javascript; charset=utf-8"},
                {"/app.css", "web/app.css", "text/css; charset=utf-8"}};
  for (const auto& a : assets) {
    SCOPED_TRACE(a.path);
    // No key: the page is open, only /v1/ needs one.
    const auto r = c.Get(a.path);
    ASSERT_TRUE(r) << httplib::to_string(r.error());
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->get_header_value("Content-Type"), a.type);
    // The binary serves what web/ holds: a stale embedded copy means the build did not regenerate.
    EXPECT_EQ(r->body, source_file(a.file)) << "rebuild: the embedded page differs from " << a.file;
    EXPECT_EQ(r->get_header_value("Cache-Control"), "no-cache");
    EXPECT_TRUE(contains(r->get_header_value("Content-Security-Policy"), "default-src 'self'"));
    EXPECT_TRUE(contains(r->get_header_value("Content-Security-Policy"), "frame-ancestors 'none'"));
    EXPECT_EQ(r->get_header_value("X-Content-Type-Options"), "nosniff");
    EXPECT_EQ(r->get_header_value("Referrer-Policy"), "no-referrer");
  }
  const auto api = c.Get("/v1/jobs");
  ASSERT_TRUE(api);
  EXPECT_EQ(api->status, 401);
  const auto unknown = c.Get("/appXjs");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
}

TEST(WebPage, BrowserDropsThreeFilesAndDownloadsEveryFormat) {
  IFW_REQUIRE_GOLDEN();
  const std::string dir = std::string(IFW_SOURCE_DIR) + "/tests/browser";
  if (!have_program("node")) GTEST_SKIP() << "node is not installed (scripts/install-deps.sh)";
  if (!std::filesystem::exists("/usr/bin/chromium"))
    GTEST_SKIP() << "chromium is not installed (scripts/install-deps.sh)";
  if (!have_program("unzip")) GTEST_SKIP() << "unzip is not installed (scripts/install-deps.sh)";
  if (!have_program("ffmpeg")) GTEST_SKIP() << "ffmpeg is not installed (scripts/install-deps.sh)";
  if (!std::filesystem::exists(dir + "/node_modules/playwright-core"))
    GTEST_SKIP() << "playwright-core is not installed: run npm ci --prefix " << dir
                 << " (scripts/test.sh does)";

  // Two recordings and a video with sound, as people would drop them.
  TempDir media;
  const std::string in = shell_quote(jfk());
  const std::string ffmpeg = "ffmpeg -nostdin -loglevel error -y ";
  const std::vector<std::string> files = {(media / "speech.wav").string(),
                                          (media / "kennedy.mp3").string(),
                                          (media / "lecture.mp4").string()};
  ASSERT_EQ(run_shell(ffmpeg + "-i " + in + " -t 5 -ar 16000 -ac 1 " + shell_quote(files[0])), 0);
  ASSERT_EQ(run_shell(ffmpeg + "-i " + in + " -c:a libmp3lame -b:a 64k " + shell_quote(files[1])),
            0);
  ASSERT_EQ(run_shell(ffmpeg + "-f lavfi -i color=c=blue:s=320x240:r=10 -i " + in +
                      " -c:v mpeg4 -c:a aac -shortest " + shell_quote(files[2])),
            0);

  TempDir data;
  START_SERVER(server,
               {"--model", golden_model("tiny-random-v3"), "--data-dir", data.path().string(),
                "--max-new-tokens", "48"},
               {{"IFW_API_KEY", "page-key"}});
  // Beside the binary, where a developer finds the screenshots after the run.
  const std::filesystem::path out =
      std::filesystem::path(IFW_BINARY).parent_path() / "tests" / "browser-screenshots";
  const std::string url = "http://127.0.0.1:" + std::to_string(server.port()) + "/";
  std::string command = "cd " + shell_quote(dir) + " && node jobs_page_test.mjs --url " + url +
                        " --out " + shell_quote(out.string()) + " --api-key page-key --timeout 240";
  // append(), not `" " + std::string&&`: GCC 12 warns wrongly (-Wrestrict) on that.
  for (const std::string& f : files)
    command.append(" ").append(shell_quote(f));
  command.append(" >&2");
  const int code = run_shell(command);
  std::cerr << "screenshots: " << (out / "jobs-page.png").string() << " and "
            << (out / "jobs-page-phone.png").string() << "\n";
  EXPECT_EQ(code, 0) << server.log();
}

}  // namespace
}  // namespace ifw::test
