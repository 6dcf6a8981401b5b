// The job API of `ifw serve` end to end, on loopback: every status transition and the order of
// the events stream, cancelling while queued and while running, deleting, results in every
// format and as ZIP archives, refused uploads (too large, not audio, too many), the API key,
// a server killed (SIGKILL) mid-job that resumes from its first unfinished window after a
// restart with the tokens an uninterrupted run gives, and 50 files at once.
#include <chrono>
#include <csignal>
#include <fstream>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "integration/api_checks.hpp"
#include "integration/run_ifw.hpp"
#include "integration/serve_process.hpp"
#include "server/job_store.hpp"
#include "support/audio_files.hpp"
#include "support/golden.hpp"
#include "support/sanitizers.hpp"
#include "support/temp_dir.hpp"

namespace ifw::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

std::string golden_model() {
  return (*golden_dir() / "models" / "tiny-random-v3").string();
}

// The random model writes until the token limit: a low one keeps the tests quick.
std::vector<std::string> server_args(std::vector<std::string> more) {
  std::vector<std::string> args = {"--model", golden_model(), "--max-new-tokens", "24"};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

// Test recordings, made once: 5 s of the 11 s reference recording, and 275 s of it.
struct Media {
  TempDir dir;
  std::string jfk, short_wav, long_wav;
  Media() {
    jfk = test::jfk();
    short_wav = (dir / "short.wav").string();
    long_wav = (dir / "long.wav").string();
    write_repeated_wav(jfk, 25, long_wav);  // 25 x 11 s = 275 s: 10 windows or more
    const std::string cut = "ffmpeg -nostdin -loglevel error -y -i " + shell_quote(jfk) +
                            " -t 5 -ar 16000 -ac 1 " + shell_quote(short_wav);
    if (run_shell(cut) != 0) short_wav = jfk;  // no ffmpeg: the 11 s recording will do
  }
};
const Media& media() {
  static const Media m;
  return m;
}

httplib::Client client(const ServeProcess& server) {
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(300s);
  c.set_write_timeout(60s);
  c.set_connection_timeout(10s);
  return c;
}

struct Upload {
  std::string path;
  std::string name;
};

httplib::Result post_jobs(httplib::Client& c, const std::vector<Upload>& files,
                          const std::vector<std::pair<std::string, std::string>>& fields = {},
                          const httplib::Headers& headers = {}) {
  httplib::MultipartFormDataItems items;
  for (const Upload& f : files)
    items.push_back({"file", read_file(f.path), f.name, "application/octet-stream"});
  for (const auto& [name, value] : fields)
    items.push_back({name, value, "", ""});
  return c.Post("/v1/jobs", headers, items);
}

std::vector<std::string> submit(
    httplib::Client& c, const std::vector<Upload>& files,
    const std::vector<std::pair<std::string, std::string>>& fields = {}) {
  const auto r = post_jobs(c, files, fields);
  std::vector<std::string> ids;
  if (!r || r->status != 201) {
    ADD_FAILURE() << "POST /v1/jobs: " << (r ? r->body : httplib::to_string(r.error()));
    return ids;
  }
  const json created = json::parse(r->body);
  for (const json& j : created.at("data"))
    ids.push_back(j.at("id").get<std::string>());
  EXPECT_EQ(ids.size(), files.size()) << r->body;
  return ids;
}

json job(httplib::Client& c, const std::string& id) {
  const auto r = c.Get("/v1/jobs/" + id);
  if (!r || r->status != 200) {
    ADD_FAILURE() << "GET job " << id << ": " << (r ? r->body : httplib::to_string(r.error()));
    return json::object();
  }
  return json::parse(r->body);
}

// Polls until the job's status is one of `states` (or `until` holds); the last job seen.
json wait_job(httplib::Client& c, const std::string& id, const std::set<std::string>& states,
              std::chrono::seconds timeout = 300s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  json j;
  while (std::chrono::steady_clock::now() < deadline) {
    j = job(c, id);
    if (j.empty() || states.contains(j.value("status", ""))) return j;
    std::this_thread::sleep_for(20ms);
  }
  ADD_FAILURE() << "job " << id << " still " << j.dump();
  return j;
}

struct Event {
  std::string type;
  std::uint64_t id = 0;
  json data;
};

// Reads a job's events stream to its end.
std::vector<Event> read_events(const ServeProcess& server, const std::string& id) {
  auto c = client(server);
  std::string buffer;
  std::vector<Event> events;
  const auto r = c.Get("/v1/jobs/" + id + "/events", [&](const char* data, std::size_t n) {
    buffer.append(data, n);
    for (std::size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
      const std::string block = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      Event e;
      std::istringstream lines(block);
      for (std::string line; std::getline(lines, line);) {
        if (line.starts_with("event: ")) e.type = line.substr(7);
        if (line.starts_with("id: ")) e.id = std::stoull(line.substr(4));
        if (line.starts_with("data: ")) e.data = json::parse(line.substr(6));
      }
      if (!e.type.empty()) events.push_back(std::move(e));
    }
    return true;
  });
  EXPECT_TRUE(r) << httplib::to_string(r.error());
  if (r) {
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  }
  return events;
}

std::string uploads_of(const std::filesystem::path& data) {
  std::string names;
  for (const auto& e : std::filesystem::directory_iterator(data / "uploads"))
    names += e.path().filename().string() + " ";
  return names;
}

// ---------------------------------------------------------------------------------------------

// One job at a time: the second waits (queued) while the first runs; each goes queued ->
// running -> done, its events stream says so in order, and its result comes in every format.
TEST(Jobs, StatusTransitionsEventsAndResults) {
  IFW_REQUIRE_GOLDEN();
  const TempDir data;
  START_SERVER(server, server_args({"--data-dir", data.path().string(), "--job-concurrency", "1",
                                    "--batch-size", "1"}));
  auto c = client(server);
  const auto ids = submit(c, {{media().long_wav, "lecture.wav"}, {media().jfk, "jfk.flac"}},
                          {{"language", "en"}, {"timestamp_granularities[]", "word"}});
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_NE(ids[0], ids[1]);

  // The second job's stream, from while it is queued to its end.
  std::vector<Event> second;
  std::thread reader([&] { second = read_events(server, ids[1]); });
  const json first_running = wait_job(c, ids[0], {"running", "done"});
  EXPECT_EQ(job(c, ids[1]).at("status"), "queued") << "one job at a time";
  const json first_done = wait_job(c, ids[0], {"done", "failed"});
  reader.join();

  ASSERT_EQ(first_done.at("status"), "done") << first_done.dump();
  EXPECT_EQ(first_done.at("progress").at("windows_done"),
            first_done.at("progress").at("windows_total"));
  EXPECT_GE(first_done.at("progress").at("windows_done").get<int>(), 10);
  EXPECT_NEAR(first_done.at("file").at("duration").get<double>(), 275.0, 0.5);
  EXPECT_EQ(first_done.at("file").at("name"), "lecture.wav");
  EXPECT_EQ(first_done.at("language"), "en");
  EXPECT_GT(first_done.at("realtime_factor").get<double>(), 0.0);
  EXPECT_GT(first_done.at("finished_at").get<std::int64_t>(), 0);
  EXPECT_TRUE(first_done.at("error").is_null());
  EXPECT_TRUE(first_done.at("has_result").get<bool>());

  // Events: queued first, then progress (windows counted up), segments, done last; ids rise.
  ASSERT_GE(second.size(), 3u);
  EXPECT_EQ(second.front().type, "queued");
  EXPECT_EQ(second.back().type, "done");
  EXPECT_EQ(second.back().data.at("status"), "done");
  int windows = 0, segments = 0;
  for (std::size_t i = 1; i < second.size(); ++i) {
    EXPECT_GT(second[i].id, second[i - 1].id) << "event ids rise";
    EXPECT_TRUE(second[i].type == "progress" || second[i].type == "segment" ||
                (second[i].type == "done" && i + 1 == second.size()))
        << second[i].type << " at " << i;
    if (second[i].type == "progress") {
      const int done = second[i].data.at("progress").at("windows_done").get<int>();
      EXPECT_GE(done, windows);
      windows = done;
    }
    segments += second[i].type == "segment" ? 1 : 0;
  }
  EXPECT_EQ(windows, 1);
  EXPECT_GE(segments, 1);
  // A finished job's stream is its final event alone.
  const auto again = read_events(server, ids[1]);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].type, "done");

  // Results in every format, as attachments named after the upload.
  for (const std::string format : {"txt", "srt", "vtt", "tsv", "json", "verbose_json"}) {
    const auto r = c.Get("/v1/jobs/" + ids[1] + "/result?format=" + format);
    ASSERT_TRUE(r && r->status == 200) << format << ": " << (r ? r->body : "no response");
    EXPECT_FALSE(r->body.empty()) << format;
    EXPECT_NE(r->get_header_value("Content-Disposition").find("jfk."), std::string::npos);
  }
  const auto verbose = c.Get("/v1/jobs/" + ids[1] + "/result?format=verbose_json");
  const json v = json::parse(verbose->body);
  EXPECT_EQ(v.at("language"), "english");
  EXPECT_TRUE(v.contains("words")) << "word timestamps were asked for";
  EXPECT_EQ(error_of(c.Get("/v1/jobs/" + ids[1] + "/result?format=mp3")).at("param"), "format");

  // The ZIP of one job holds every format.
  const auto zip = c.Get("/v1/jobs/" + ids[1] + "/archive");
  ASSERT_TRUE(zip && zip->status == 200);
  EXPECT_EQ(zip->get_header_value("Content-Type"), "application/zip");
  EXPECT_EQ(zip->body.substr(0, 2), "PK");

  // Listed oldest first; uploads gone once their jobs ended.
  const json list = json::parse(c.Get("/v1/jobs")->body);
  ASSERT_EQ(list.at("data").size(), 2u);
  EXPECT_EQ(list.at("data")[0].at("id"), ids[0]);
  EXPECT_EQ(uploads_of(data.path()), "");

  // Deleting a finished job removes it.
  const auto deleted = c.Delete("/v1/jobs/" + ids[0]);
  ASSERT_TRUE(deleted && deleted->status == 200);
  EXPECT_TRUE(json::parse(deleted->body).at("deleted").get<bool>());
  EXPECT_EQ(c.Get("/v1/jobs/" + ids[0])->status, 404);
  const auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("ifw_jobs{status=\"done\"} 1\n"), std::string::npos)
      << metrics->body;
}

// Cancelling: a queued job ends at once without a result; a running one ends at its next batch
// with what it finished, kept as a partial result.
TEST(Jobs, CancelWhileQueuedAndWhileRunning) {
  IFW_REQUIRE_GOLDEN();
  const TempDir data;
  START_SERVER(server, server_args({"--data-dir", data.path().string(), "--job-concurrency", "1",
                                    "--batch-size", "1"}));
  auto c = client(server);
  const auto ids = submit(c, {{media().long_wav, "long.wav"}, {media().short_wav, "short.wav"}});
  ASSERT_EQ(ids.size(), 2u);

  // Queued: cancelled at once.
  ASSERT_EQ(job(c, ids[1]).at("status"), "queued");
  const auto cancelled = c.Delete("/v1/jobs/" + ids[1]);
  ASSERT_TRUE(cancelled && cancelled->status == 200) << (cancelled ? cancelled->body : "");
  const json q = json::parse(cancelled->body);
  EXPECT_EQ(q.at("status"), "cancelled");
  EXPECT_EQ(q.at("error").at("code"), "cancelled");
  EXPECT_FALSE(q.at("has_result").get<bool>());
  EXPECT_EQ(error_of(c.Get("/v1/jobs/" + ids[1] + "/result")).at("code"), "job_not_finished");
  const auto stream = read_events(server, ids[1]);
  ASSERT_EQ(stream.size(), 1u);
  EXPECT_EQ(stream[0].type, "cancelled");

  // Running, after a window or two: cancelled with a partial result.
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  while (job(c, ids[0]).at("progress").at("windows_done").get<int>() < 1 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  const auto stopped = c.Delete("/v1/jobs/" + ids[0]);
  ASSERT_TRUE(stopped && stopped->status == 200);
  const json r = json::parse(stopped->body);
  EXPECT_EQ(r.at("status"), "cancelled") << r.dump();
  const int done = r.at("progress").at("windows_done").get<int>();
  EXPECT_GE(done, 1);
  EXPECT_LT(done, r.at("progress").at("windows_total").get<int>());
  EXPECT_TRUE(r.at("has_result").get<bool>());
  const auto partial = c.Get("/v1/jobs/" + ids[0] + "/result?format=txt");
  EXPECT_TRUE(partial && partial->status == 200);
  // DELETE on an ended job removes it.
  EXPECT_EQ(c.Delete("/v1/jobs/" + ids[0])->status, 200);
  EXPECT_EQ(c.Get("/v1/jobs/" + ids[0])->status, 404);
  EXPECT_EQ(uploads_of(data.path()), "");
}

// Unknown ids, bad uploads and limits are refused in OpenAI's shape, and leave nothing behind.
TEST(Jobs, BadRequestsAreRefused) {
  IFW_REQUIRE_GOLDEN();
  const TempDir data;
  START_SERVER(server, server_args({"--data-dir", data.path().string(), "--max-upload-size", "1MiB",
                                    "--max-job-files", "3", "--max-jobs", "2"}));
  auto c = client(server);
  const std::string unknown = "/v1/jobs/job_0123456789abcdef";
  for (const std::string& path :
       {unknown, unknown + "/events", unknown + "/result", unknown + "/archive"}) {
    const auto r = c.Get(path);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404) << path;
    EXPECT_EQ(error_of(r).at("code"), "job_not_found") << path;
  }
  EXPECT_EQ(c.Delete(unknown)->status, 404);

  // Too large for --max-upload-size.
  const auto large = post_jobs(c, {{media().long_wav, "big.wav"}});
  ASSERT_TRUE(large);
  EXPECT_EQ(large->status, 413);
  error_of(large);

  // Not audio, whatever its name says: nothing of the request is kept.
  const TempDir files;
  const auto text = files / "notes.mp3";
  std::ofstream(text) << "these are not sounds\n";
  const auto bad = post_jobs(c, {{media().short_wav, "fine.wav"}, {text.string(), "notes.mp3"}});
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  const json e = error_of(bad);
  EXPECT_EQ(e.at("code"), "invalid_audio");
  EXPECT_NE(e.at("message").get<std::string>().find("notes.mp3"), std::string::npos);
  EXPECT_EQ(e.at("message").get<std::string>().find(data.path().string()), std::string::npos)
      << "the server's paths stay private";
  EXPECT_EQ(json::parse(c.Get("/v1/jobs")->body).at("data").size(), 0u);
  EXPECT_EQ(uploads_of(data.path()), "");

  // No file, too many files, bad options, an unknown model.
  EXPECT_EQ(error_of(post_jobs(c, {}, {{"model", "whisper-1"}})).at("code"), "missing_file");
  const Upload s{media().short_wav, "s.wav"};
  EXPECT_EQ(error_of(post_jobs(c, {s, s, s, s})).at("code"), "too_many_files");
  EXPECT_EQ(error_of(post_jobs(c, {s}, {{"task", "summarise"}})).at("param"), "task");
  EXPECT_EQ(error_of(post_jobs(c, {s}, {{"language", "klingon"}})).at("param"), "language");
  EXPECT_EQ(error_of(post_jobs(c, {s}, {{"temperature", "hot"}})).at("param"), "temperature");
  EXPECT_EQ(post_jobs(c, {s}, {{"model", "nope"}})->status, 404);
  // More than --max-jobs queued or running: 429.
  const auto full = post_jobs(c, {s, s, s});
  ASSERT_TRUE(full);
  EXPECT_EQ(full->status, 429);
  EXPECT_FALSE(full->get_header_value("Retry-After").empty());
}

// With an API key, the job API needs it like the OpenAI endpoints; the page itself is open.
TEST(Jobs, TheApiKeyGuardsTheJobs) {
  IFW_REQUIRE_GOLDEN();
  START_SERVER(server, server_args({}), {{"IFW_API_KEY", "sesame"}});
  auto c = client(server);
  const auto without = post_jobs(c, {{media().short_wav, "s.wav"}});
  ASSERT_TRUE(without);
  EXPECT_EQ(without->status, 401);
  EXPECT_EQ(c.Get("/v1/jobs", {{"Authorization", "Bearer wrong"}})->status, 401);
  const auto with =
      post_jobs(c, {{media().short_wav, "s.wav"}}, {}, {{"Authorization", "Bearer sesame"}});
  ASSERT_TRUE(with);
  EXPECT_EQ(with->status, 201);
  const auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->get_header_value("Content-Type").find("text/html"), std::string::npos);
}

// One server per data folder: a second one on the same folder stops at start, saying why.
TEST(Jobs, ADataFolderServesOneServer) {
  IFW_REQUIRE_GOLDEN();
  const TempDir data;
  START_SERVER(first, server_args({"--data-dir", data.path().string()}));
  ServeProcess second(server_args({"--data-dir", data.path().string()}), {}, 30s);
  EXPECT_FALSE(second.ready());
  EXPECT_EQ(second.wait_exit(10s), 2);
  EXPECT_NE(second.log().find("in use by another ifw serve"), std::string::npos) << second.log();
}

// Killed mid-job (SIGKILL, nothing flushed on purpose): after a restart on the same data
// folder, the finished job's result is unchanged, the queued one runs, and the interrupted one
// goes on from its first unfinished window - the windows stored before are not decoded again -
// and ends with the tokens of an uninterrupted run.
TEST(Jobs, AKilledServerResumesItsJobsAfterARestart) {
  IFW_REQUIRE_GOLDEN();
  const TempDir data;
  const std::vector<std::string> args = server_args(
      {"--data-dir", data.path().string(), "--batch-size", "1", "--job-concurrency", "1"});
  std::string finished_id, long_id, queued_id, finished_srt, finished_json;
  {
    START_SERVER(server, args);
    auto c = client(server);
    finished_id = submit(c, {{media().short_wav, "short.wav"}}).at(0);
    ASSERT_EQ(wait_job(c, finished_id, {"done", "failed"}).at("status"), "done");
    finished_srt = c.Get("/v1/jobs/" + finished_id + "/result?format=srt")->body;
    finished_json = c.Get("/v1/jobs/" + finished_id + "/result?format=verbose_json")->body;
    long_id = submit(c, {{media().long_wav, "long.wav"}}).at(0);
    queued_id = submit(c, {{media().short_wav, "later.wav"}}).at(0);
    const auto deadline = std::chrono::steady_clock::now() + 120s;
    while (job(c, long_id).at("progress").at("windows_done").get<int>() < 3 &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(5ms);
    server.signal(SIGKILL);
    ASSERT_NE(server.wait_exit(10s), -1);
  }
  // What the killed server had stored.
  int stored_windows = 0;
  {
    server::JobStore store(data / "jobs.sqlite3");
    const auto killed = store.get(long_id);
    ASSERT_TRUE(killed);
    EXPECT_EQ(killed->status, server::JobStatus::kRunning);
    stored_windows = store.window_count(long_id);
    EXPECT_EQ(store.get(queued_id)->status, server::JobStatus::kQueued);
  }
  ASSERT_GE(stored_windows, 2) << "windows are stored as they finish";
  EXPECT_NE(uploads_of(data.path()), "") << "the interrupted job's upload is kept";

  START_SERVER(server, args);
  auto c = client(server);
  EXPECT_EQ(c.Get("/v1/jobs/" + finished_id + "/result?format=srt")->body, finished_srt);
  EXPECT_EQ(c.Get("/v1/jobs/" + finished_id + "/result?format=verbose_json")->body, finished_json);
  const json resumed = wait_job(c, long_id, {"done", "failed"});
  ASSERT_EQ(resumed.at("status"), "done") << resumed.dump();
  const json& progress = resumed.at("progress");
  EXPECT_EQ(progress.at("windows_restored").get<int>(), stored_windows)
      << "only the unfinished windows are decoded again";
  EXPECT_EQ(progress.at("windows_done"), progress.at("windows_total"));
  EXPECT_NE(server.log().find(std::to_string(stored_windows) + " window(s) taken from before"),
            std::string::npos)
      << server.log();

  // The job that was queued runs too.
  EXPECT_EQ(wait_job(c, queued_id, {"done", "failed"}).at("status"), "done");

  // The same file without interruption gives the same tokens.
  const std::string again = submit(c, {{media().long_wav, "long.wav"}}).at(0);
  ASSERT_EQ(wait_job(c, again, {"done", "failed"}).at("status"), "done");
  const auto whole = c.Get("/v1/jobs/" + again + "/result?format=verbose_json")->body;
  const auto pieced = c.Get("/v1/jobs/" + long_id + "/result?format=verbose_json")->body;
  EXPECT_EQ(tokens_of(pieced), tokens_of(whole));
  EXPECT_EQ(json::parse(pieced).at("text"), json::parse(whole).at("text"));
  EXPECT_EQ(uploads_of(data.path()), "");
}

// A file that decodes at first and then breaks off (its header promises far more audio) fails
// with the reason, and keeps what was transcribed as a partial result.
TEST(Jobs, ADamagedFileFailsAndKeepsWhatItFinished) {
  IFW_REQUIRE_GOLDEN();
  const TempDir data, files;
  START_SERVER(server, server_args({"--data-dir", data.path().string()}));
  auto c = client(server);
  // FLAC states its length in its header; the file is cut after a fifth of it.
  const auto flac = files / "whole.flac";
  if (run_shell("ffmpeg -nostdin -loglevel error -y -i " + shell_quote(media().long_wav) + " " +
                shell_quote(flac.string())) != 0) {
    GTEST_SKIP() << "ffmpeg is needed to make the test file (scripts/install-deps.sh)";
  }
  const auto cut = files / "cut.flac";
  const std::string whole = read_file(flac);
  std::ofstream(cut, std::ios::binary) << whole.substr(0, whole.size() / 5);
  const std::string id = submit(c, {{cut.string(), "cut.flac"}}).at(0);
  const json j = wait_job(c, id, {"done", "failed"});
  ASSERT_EQ(j.at("status"), "failed") << j.dump();
  EXPECT_EQ(j.at("error").at("code"), "transcription_failed");
  const std::string message = j.at("error").at("message");
  EXPECT_NE(message.find("cut.flac"), std::string::npos) << message;
  EXPECT_EQ(message.find(data.path().string()), std::string::npos) << message;
  EXPECT_TRUE(j.at("has_result").get<bool>());
  const auto partial = c.Get("/v1/jobs/" + id + "/result?format=json");
  ASSERT_TRUE(partial && partial->status == 200);
  EXPECT_EQ(uploads_of(data.path()), "");
}

// SIGTERM does not wait for jobs: the running one stops at its next batch, the server exits 0
// soon, and the job resumes after the restart from the windows it had finished.
TEST(Jobs, SigtermStopsJobsWhichResumeAtTheNextStart) {
  IFW_REQUIRE_GOLDEN();
  const TempDir data;
  const auto args = server_args({"--data-dir", data.path().string(), "--batch-size", "1"});
  std::string id;
  {
    START_SERVER(server, args);
    auto c = client(server);
    id = submit(c, {{media().long_wav, "long.wav"}}).at(0);
    const auto deadline = std::chrono::steady_clock::now() + 120s;
    while (job(c, id).at("progress").at("windows_done").get<int>() < 2 &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(5ms);
    const auto signalled = std::chrono::steady_clock::now();
    server.signal(SIGTERM);
    EXPECT_EQ(server.wait_exit(60s), 0) << server.log();
    EXPECT_LT(std::chrono::steady_clock::now() - signalled, 20s) << "jobs are not waited for";
    EXPECT_NE(server.log().find("resumes at the next start"), std::string::npos) << server.log();
  }
  int stored = 0;
  {
    server::JobStore store(data / "jobs.sqlite3");
    EXPECT_EQ(store.get(id)->status, server::JobStatus::kQueued);
    stored = store.window_count(id);
  }
  EXPECT_GE(stored, 2);
  START_SERVER(server, args);
  auto c = client(server);
  const json j = wait_job(c, id, {"done", "failed"});
  ASSERT_EQ(j.at("status"), "done") << j.dump();
  EXPECT_EQ(j.at("progress").at("windows_restored").get<int>(), stored);
}

// Waits (up to 10 s) for a job to be gone; its last status.
int status_once_gone(httplib::Client& c, const std::string& id) {
  int status = 0;
  for (const auto until = std::chrono::steady_clock::now() + 10s;
       std::chrono::steady_clock::now() < until; std::this_thread::sleep_for(100ms)) {
    status = c.Get("/v1/jobs/" + id)->status;
    if (status != 200) break;
  }
  return status;
}

// Retention: ended jobs older than --keep-results go, also on a server with nothing else to do,
// and over --max-data-size the oldest ended ones go first; jobs that have not ended are never
// removed.
TEST(Jobs, RetentionRemovesTheOldestEndedJobs) {
  IFW_REQUIRE_GOLDEN();
  const TempDir data;
  {
    // 0.00003 days: 2.6 s.
    START_SERVER(server,
                 server_args({"--data-dir", data.path().string(), "--keep-results", "0.00003"}));
    auto c = client(server);
    const std::string first = submit(c, {{media().short_wav, "first.wav"}}).at(0);
    ASSERT_EQ(wait_job(c, first, {"done", "failed"}).at("status"), "done");
    std::this_thread::sleep_for(3s);
    const std::string second = submit(c, {{media().short_wav, "second.wav"}}).at(0);
    ASSERT_EQ(wait_job(c, second, {"done", "failed"}).at("status"), "done");
    EXPECT_EQ(c.Get("/v1/jobs/" + second)->status, 200);
    // Retention is housekeeping that runs after a job's end is visible, and now and then: an
    // expired job goes within seconds, not necessarily before the next job's end is seen.
    EXPECT_EQ(status_once_gone(c, first), 404) << "older than --keep-results";
    // No job ends from here on: the idle server's own sweep removes the second one.
    EXPECT_EQ(status_once_gone(c, second), 404) << "expired on an idle server";
    server.signal(SIGTERM);
    ASSERT_EQ(server.wait_exit(60s), 0);
  }
  std::string third, fourth;
  {
    START_SERVER(server, server_args({"--data-dir", data.path().string()}));
    auto c = client(server);
    third = submit(c, {{media().short_wav, "third.wav"}}).at(0);
    ASSERT_EQ(wait_job(c, third, {"done", "failed"}).at("status"), "done");
    fourth = submit(c, {{media().short_wav, "fourth.wav"}}).at(0);
    ASSERT_EQ(wait_job(c, fourth, {"done", "failed"}).at("status"), "done");
    server.signal(SIGTERM);
    ASSERT_EQ(server.wait_exit(60s), 0);
  }
  std::int64_t total = 0;
  {
    server::JobStore store(data / "jobs.sqlite3");
    total = store.stored_bytes();
  }
  // A budget one byte short of what is stored: the oldest (third) goes, the newest stays.
  START_SERVER(server, server_args({"--data-dir", data.path().string(), "--max-data-size",
                                    std::to_string(total - 1)}));
  auto c = client(server);
  EXPECT_EQ(c.Get("/v1/jobs/" + third)->status, 404) << "the oldest goes first";
  EXPECT_EQ(c.Get("/v1/jobs/" + fourth)->status, 200);
}

// 50 files in one request: all finish; the server's memory stays bounded; the throughput is
// printed (docs/PERFORMANCE.md records it).
TEST(Jobs, FiftyFilesAtOnce) {
  IFW_REQUIRE_GOLDEN();
  const TempDir data;
  START_SERVER(server, server_args({"--data-dir", data.path().string()}));
  auto c = client(server);
  const long rss_before = server.rss_kib();
  std::vector<Upload> files;
  for (int i = 0; i < 50; ++i)
    files.push_back({media().short_wav, "clip-" + std::to_string(i) + ".wav"});
  const auto started = std::chrono::steady_clock::now();
  const auto ids = submit(c, files);
  ASSERT_EQ(ids.size(), 50u);
  long rss_peak = rss_before;
  double audio = 0.0;
  for (const std::string& id : ids) {
    json j;
    for (;;) {
      j = job(c, id);
      rss_peak = std::max(rss_peak, server.rss_kib());
      if (j.empty() || (j.at("status") != "queued" && j.at("status") != "running")) break;
      std::this_thread::sleep_for(20ms);
    }
    ASSERT_EQ(j.at("status"), "done") << j.dump();
    audio += j.at("file").at("duration").get<double>();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf(
      "[ jobs     ] 50 files, %.0f s of audio in %.1f s: %.1fx realtime; RSS %ld -> %ld "
      "MiB\n",
      audio, seconds, audio / seconds, rss_before / 1024, rss_peak / 1024);
  if (!kSanitized) {
    EXPECT_LT(rss_peak - rss_before, 400 * 1024) << "memory bounded: batches, not files";
  }
  EXPECT_EQ(uploads_of(data.path()), "");
}

}  // namespace
}  // namespace ifw::test
