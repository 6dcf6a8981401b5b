// The job store (SQLite) and the jobs' live events, apart from the server: records and windows
// survive reopening, a job's end replaces its windows with its transcript in one step, a database
// from a newer ifw is refused; events come in order to readers that wait for them.
#include "server/job_store.hpp"

#include <chrono>
#include <thread>

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <ifw/error.hpp>

#include "server/job_events.hpp"
#include "support/temp_dir.hpp"

namespace ifw::test {
namespace {

using server::JobRecord;
using server::JobStatus;
using server::JobStore;

JobRecord job(const std::string& id, double created) {
  JobRecord j;
  j.id = id;
  j.file_name = "talk " + id + ".mp3";
  j.file_bytes = 1234;
  j.duration = 95.5;
  j.upload = id + ".mp3";
  j.model = "whisper-1";
  j.language_requested = "de";
  j.language = "de";
  j.prompt = "Grüße";
  j.temperature = 0.2;
  j.word_timestamps = true;
  j.created_at = created;
  j.windows_total = 4;
  return j;
}

Segment segment(double start, const std::string& text) {
  Segment s;
  s.start = start;
  s.end = start + 2.5;
  s.text = text;
  s.tokens = {50365, 11, 22, 50490};
  s.words = {{" hallo", start, start + 0.4}};
  return s;
}

TEST(JobStore, RecordsWindowsAndResultsSurviveReopening) {
  const TempDir dir;
  const auto path = dir / "jobs.sqlite3";
  {
    JobStore store(path);
    store.insert({job("job_b", 2.0), job("job_a", 1.0)});
    JobRecord a = *store.get("job_a");
    EXPECT_EQ(a.file_name, "talk job_a.mp3");
    EXPECT_EQ(a.language_requested, "de");
    EXPECT_EQ(a.prompt, "Grüße");
    EXPECT_TRUE(a.word_timestamps);
    a.status = JobStatus::kRunning;
    a.windows_done = 1;
    a.language = "en";
    store.add_window(a, 0, 2900, {segment(0.0, " eins"), segment(2.5, " zwei")});
    store.add_window(a, 480000, 3000, {});
  }
  JobStore store(path);
  const auto list = store.list();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].id, "job_b") << "in the order recorded";
  EXPECT_EQ(store.get("job_a")->status, JobStatus::kRunning);
  EXPECT_EQ(store.get("job_a")->windows_done, 1);
  EXPECT_EQ(store.window_count("job_a"), 2);
  const pipeline::ResumeState resume = store.resume_state("job_a");
  EXPECT_EQ(resume.language, "en");
  ASSERT_EQ(resume.windows.size(), 2u);
  const auto& first = resume.windows.at(0);
  EXPECT_EQ(first.frames_consumed, 2900);
  ASSERT_EQ(first.segments.size(), 2u);
  EXPECT_EQ(first.segments[1].text, " zwei");
  EXPECT_EQ(first.segments[1].tokens, segment(2.5, "").tokens);
  EXPECT_DOUBLE_EQ(first.segments[1].words.at(0).end, 2.9);
  EXPECT_TRUE(resume.windows.at(480000).segments.empty());

  // The end: the transcript in, the windows out.
  JobRecord a = *store.get("job_a");
  a.status = JobStatus::kDone;
  a.upload.clear();
  Transcript t;
  t.language = "en";
  t.duration = 95.5;
  t.segments = first.segments;
  store.finish(a, t);
  EXPECT_EQ(store.window_count("job_a"), 0);
  const JobRecord done = *store.get("job_a");
  EXPECT_EQ(done.status, JobStatus::kDone);
  EXPECT_TRUE(done.has_result);
  EXPECT_GT(done.result_bytes, 0);
  const auto result = store.result("job_a");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->text(), "eins zwei");  // OpenAI's text: the leading space goes
  EXPECT_FALSE(store.result("job_b")) << "no result before its end";

  const auto counts = store.count_by_status();
  EXPECT_EQ(counts[static_cast<std::size_t>(JobStatus::kDone)].second, 1);
  EXPECT_EQ(counts[static_cast<std::size_t>(JobStatus::kQueued)].second, 1);
  EXPECT_EQ(store.stored_bytes(), done.result_bytes + 1234) << "a result and one upload";

  store.remove("job_a");
  EXPECT_FALSE(store.get("job_a"));
  EXPECT_FALSE(store.result("job_a"));
}

TEST(JobStore, ADatabaseFromANewerIfwIsRefusedNamingTheFile) {
  const TempDir dir;
  const auto path = dir / "jobs.sqlite3";
  { JobStore store(path); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  try {
    JobStore store(path);
    FAIL() << "opened";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("newer"), std::string::npos) << e.what();
  }
}

TEST(JobEvents, ReadersGetEventsInOrderAndAreWokenByNewOnes) {
  server::JobEvents events(3);
  EXPECT_EQ(events.latest("job_x"), 0u);
  events.publish("job_x", "queued", "{}");
  events.publish("job_x", "progress", "{\"n\":1}");
  auto got = events.wait("job_x", 0, std::chrono::milliseconds(0));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].id, 1u);
  EXPECT_EQ(got[1].type, "progress");
  EXPECT_TRUE(events.wait("job_x", 2, std::chrono::milliseconds(10)).empty());

  std::thread later([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    events.publish("job_x", "done", "{}");
  });
  got = events.wait("job_x", 2, std::chrono::seconds(30));
  later.join();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].type, "done");
  EXPECT_EQ(got[0].id, 3u);

  // Only the most recent are kept.
  for (int i = 0; i < 5; ++i)
    events.publish("job_y", "progress", std::to_string(i));
  got = events.wait("job_y", 0, std::chrono::milliseconds(0));
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got.front().id, 3u);

  events.close();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(events.wait("job_y", 5, std::chrono::seconds(30)).empty());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5)) << "closed: at once";
}

}  // namespace
}  // namespace ifw::test
