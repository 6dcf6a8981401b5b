#include "server/job_store.hpp"

#include <array>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <ifw/error.hpp>

#include "formats/transcript_json.hpp"

namespace ifw::server {
namespace {

constexpr int kSchemaVersion = 1;

constexpr std::array<std::string_view, 5> kStatusNames = {"queued", "running", "done", "failed",
                                                          "cancelled"};

JobStatus parse_status(std::string_view name) {
  for (std::size_t i = 0; i < kStatusNames.size(); ++i) {
    if (kStatusNames[i] == name) return static_cast<JobStatus>(i);
  }
  throw Error(ErrorKind::kInvalidArgument, fmt::format("job status \"{}\" is not known", name));
}

// One prepared statement, finalised with its scope; binds and reads by position (from 1 and 0).
class Statement {
 public:
  Statement(sqlite3* db, std::string_view sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr) !=
        SQLITE_OK) {
      throw Error(ErrorKind::kIo,
                  fmt::format("job database: {} (in: {})", sqlite3_errmsg(db), sql.substr(0, 60)));
    }
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int at, std::string_view text) {
    return check(
        sqlite3_bind_text(stmt_, at, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT));
  }
  Statement& bind(int at, const std::optional<std::string>& text) {
    return text ? bind(at, std::string_view(*text)) : check(sqlite3_bind_null(stmt_, at));
  }
  Statement& bind(int at, double value) { return check(sqlite3_bind_double(stmt_, at, value)); }
  Statement& bind(int at, std::int64_t value) {
    return check(sqlite3_bind_int64(stmt_, at, value));
  }
  Statement& bind(int at, int value) { return check(sqlite3_bind_int(stmt_, at, value)); }
  Statement& bind(int at, bool value) { return bind(at, value ? 1 : 0); }

  // True while there is a row to read.
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw Error(ErrorKind::kIo, fmt::format("job database: {}", sqlite3_errmsg(db_)));
  }
  std::string text(int col) const {
    const auto* p = sqlite3_column_text(stmt_, col);
    return p != nullptr ? std::string(reinterpret_cast<const char*>(p),
                                      static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col)))
                        : std::string();
  }
  std::optional<std::string> optional_text(int col) const {
    if (sqlite3_column_type(stmt_, col) == SQLITE_NULL) return std::nullopt;
    return text(col);
  }
  double real(int col) const { return sqlite3_column_double(stmt_, col); }
  std::int64_t integer(int col) const { return sqlite3_column_int64(stmt_, col); }

 private:
  Statement& check(int rc) {
    if (rc != SQLITE_OK)
      throw Error(ErrorKind::kIo, fmt::format("job database: {}", sqlite3_errmsg(db_)));
    return *this;
  }
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

// A transaction: committed by commit(), rolled back if its scope ends before.
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) { run("BEGIN IMMEDIATE"); }
  ~Transaction() {
    if (open_ && sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr) != SQLITE_OK)
      spdlog::error("job database: rolling back failed: {}", sqlite3_errmsg(db_));
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit() {
    run("COMMIT");
    open_ = false;
  }

 private:
  void run(const char* sql) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK)
      throw Error(ErrorKind::kIo, fmt::format("job database: {}: {}", sql, sqlite3_errmsg(db_)));
  }
  sqlite3* db_;
  bool open_ = true;
};

// id and created_at, then the fields bind_state() writes, in its order.
constexpr std::string_view kColumns =
    "id, created_at, status, file_name, file_bytes, duration, upload, model, task, "
    "language_requested, prompt, temperature, word_timestamps, language, started_at, "
    "finished_at, windows_done, windows_total, windows_restored, audio_done, "
    "processing_seconds, error_message, error_code, has_result, result_bytes";

JobRecord read_job(const Statement& s) {
  JobRecord j;
  j.id = s.text(0);
  j.created_at = s.real(1);
  j.status = parse_status(s.text(2));
  j.file_name = s.text(3);
  j.file_bytes = s.integer(4);
  j.duration = s.real(5);
  j.upload = s.text(6);
  j.model = s.text(7);
  j.task = s.text(8);
  j.language_requested = s.optional_text(9);
  j.prompt = s.text(10);
  j.temperature = s.real(11);
  j.word_timestamps = s.integer(12) != 0;
  j.language = s.optional_text(13);
  j.started_at = s.real(14);
  j.finished_at = s.real(15);
  j.windows_done = static_cast<int>(s.integer(16));
  j.windows_total = static_cast<int>(s.integer(17));
  j.windows_restored = static_cast<int>(s.integer(18));
  j.audio_done = s.real(19);
  j.processing_seconds = s.real(20);
  j.error_message = s.text(21);
  j.error_code = s.text(22);
  j.has_result = s.integer(23) != 0;
  j.result_bytes = s.integer(24);
  return j;
}

// The mutable fields, bound from position `at` on (the order of kColumns from status).
void bind_state(Statement& s, const JobRecord& j, int at) {
  s.bind(at, status_name(j.status))
      .bind(at + 1, std::string_view(j.file_name))
      .bind(at + 2, j.file_bytes)
      .bind(at + 3, j.duration)
      .bind(at + 4, std::string_view(j.upload))
      .bind(at + 5, std::string_view(j.model))
      .bind(at + 6, std::string_view(j.task))
      .bind(at + 7, j.language_requested)
      .bind(at + 8, std::string_view(j.prompt))
      .bind(at + 9, j.temperature)
      .bind(at + 10, j.word_timestamps)
      .bind(at + 11, j.language)
      .bind(at + 12, j.started_at)
      .bind(at + 13, j.finished_at)
      .bind(at + 14, j.windows_done)
      .bind(at + 15, j.windows_total)
      .bind(at + 16, j.windows_restored)
      .bind(at + 17, j.audio_done)
      .bind(at + 18, j.processing_seconds)
      .bind(at + 19, std::string_view(j.error_message))
      .bind(at + 20, std::string_view(j.error_code));
}

constexpr std::string_view kUpdate =
    "UPDATE jobs SET status = ?1, file_name = ?2, file_bytes = ?3, duration = ?4, upload = ?5, "
    "model = ?6, task = ?7, language_requested = ?8, prompt = ?9, temperature = ?10, "
    "word_timestamps = ?11, language = ?12, started_at = ?13, finished_at = ?14, "
    "windows_done = ?15, windows_total = ?16, windows_restored = ?17, audio_done = ?18, "
    "processing_seconds = ?19, error_message = ?20, error_code = ?21 WHERE id = ?22";

}  // namespace

std::string_view status_name(JobStatus status) {
  return kStatusNames[static_cast<std::size_t>(status)];
}

bool has_ended(JobStatus status) {
  return status == JobStatus::kDone || status == JobStatus::kFailed ||
         status == JobStatus::kCancelled;
}

void JobStore::Closer::operator()(sqlite3* db) const {
  if (sqlite3_close(db) != SQLITE_OK)
    spdlog::error("closing the job database failed: {}", sqlite3_errmsg(db));
}

JobStore::JobStore(const std::filesystem::path& database) : path_(database) {
  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(database.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  db_.reset(db);  // closed however this ends
  if (rc != SQLITE_OK) {
    throw Error(ErrorKind::kIo,
                fmt::format("cannot open the job database {}: {}", database.string(),
                            db != nullptr ? sqlite3_errmsg(db) : "out of memory"));
  }
  sqlite3_busy_timeout(db, 5000);
  try {
    // WAL: readers (the API) do not wait for the writer (a window being stored); NORMAL
    // synchronisation: a power cut may lose the last commits, never the database.
    {
      Statement wal(db, "PRAGMA journal_mode = WAL");
      if (!wal.step() || wal.text(0) != "wal")
        spdlog::warn(
            "the job database {} is not in WAL mode (its file system may not support "
            "it): readers wait for writers",
            database.string());
    }
    exec("PRAGMA synchronous = NORMAL");
    exec("PRAGMA foreign_keys = ON");
    int version = 0;
    {
      Statement s(db, "PRAGMA user_version");
      if (s.step()) version = static_cast<int>(s.integer(0));
    }
    if (version > kSchemaVersion) {
      throw Error(ErrorKind::kUnsupported,
                  fmt::format("it was written by a newer ifw (schema {}, this one knows {})",
                              version, kSchemaVersion));
    }
    if (version < 1) {
      exec(
          "CREATE TABLE IF NOT EXISTS jobs ("
          " seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, status TEXT NOT NULL,"
          " file_name TEXT NOT NULL, file_bytes INTEGER NOT NULL, duration REAL NOT NULL,"
          " upload TEXT NOT NULL, model TEXT NOT NULL, task TEXT NOT NULL,"
          " language_requested TEXT, prompt TEXT NOT NULL, temperature REAL NOT NULL,"
          " word_timestamps INTEGER NOT NULL, language TEXT, created_at REAL NOT NULL,"
          " started_at REAL NOT NULL, finished_at REAL NOT NULL, windows_done INTEGER NOT NULL,"
          " windows_total INTEGER NOT NULL, windows_restored INTEGER NOT NULL,"
          " audio_done REAL NOT NULL, processing_seconds REAL NOT NULL,"
          " error_message TEXT NOT NULL, error_code TEXT NOT NULL,"
          " has_result INTEGER NOT NULL DEFAULT 0, result_bytes INTEGER NOT NULL DEFAULT 0,"
          " result TEXT);"
          "CREATE TABLE IF NOT EXISTS windows ("
          " job TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
          " start_sample INTEGER NOT NULL, frames_consumed INTEGER NOT NULL,"
          " segments TEXT NOT NULL, PRIMARY KEY (job, start_sample));"
          "PRAGMA user_version = 1;");
    }
  } catch (const Error& e) {
    throw Error(e.kind(), fmt::format("the job database {}: {}", database.string(), e.what()));
  }
}

JobStore::~JobStore() {
  // Folds the WAL back into the database so that the folder holds one file when stopped.
  if (db_ && sqlite3_wal_checkpoint_v2(db_.get(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr,
                                       nullptr) != SQLITE_OK) {
    spdlog::warn("job database checkpoint at close: {}", sqlite3_errmsg(db_.get()));
  }
}

void JobStore::exec(const char* sql) const {
  char* message = nullptr;
  if (sqlite3_exec(db_.get(), sql, nullptr, nullptr, &message) != SQLITE_OK) {
    const std::string why = message != nullptr ? message : sqlite3_errmsg(db_.get());
    sqlite3_free(message);
    throw Error(ErrorKind::kIo, fmt::format("job database: {}", why));
  }
}

void JobStore::insert(const std::vector<JobRecord>& jobs) {
  const std::lock_guard lock(mutex_);
  Transaction tx(db_.get());
  for (const JobRecord& j : jobs) {
    Statement s(db_.get(),
                fmt::format("INSERT INTO jobs ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
                            "?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, "
                            "?23, 0, 0)",
                            kColumns));
    s.bind(1, std::string_view(j.id)).bind(2, j.created_at);
    bind_state(s, j, 3);
    s.step();
  }
  tx.commit();
}

std::optional<JobRecord> JobStore::get(const std::string& id) const {
  const std::lock_guard lock(mutex_);
  Statement s(db_.get(), fmt::format("SELECT {} FROM jobs WHERE id = ?1", kColumns));
  s.bind(1, std::string_view(id));
  if (!s.step()) return std::nullopt;
  return read_job(s);
}

std::vector<JobRecord> JobStore::list() const {
  const std::lock_guard lock(mutex_);
  Statement s(db_.get(), fmt::format("SELECT {} FROM jobs ORDER BY seq", kColumns));
  std::vector<JobRecord> out;
  while (s.step())
    out.push_back(read_job(s));
  return out;
}

void JobStore::update(const JobRecord& j) {
  const std::lock_guard lock(mutex_);
  write_record(j);
}

void JobStore::write_record(const JobRecord& j) const {
  Statement s(db_.get(), kUpdate);
  bind_state(s, j, 1);
  s.bind(22, std::string_view(j.id));
  s.step();
}

void JobStore::add_window(const JobRecord& job, std::int64_t start_sample, int frames_consumed,
                          const std::vector<Segment>& segments) {
  const std::string json = formats::segments_to_json(segments).dump();
  const std::lock_guard lock(mutex_);
  Transaction tx(db_.get());
  write_record(job);
  Statement s(db_.get(),
              "INSERT OR REPLACE INTO windows (job, start_sample, frames_consumed, segments) "
              "VALUES (?1, ?2, ?3, ?4)");
  s.bind(1, std::string_view(job.id))
      .bind(2, start_sample)
      .bind(3, frames_consumed)
      .bind(4, std::string_view(json));
  s.step();
  tx.commit();
}

pipeline::ResumeState JobStore::resume_state(const std::string& id) const {
  const std::lock_guard lock(mutex_);
  pipeline::ResumeState state;
  {
    Statement s(db_.get(), "SELECT language FROM jobs WHERE id = ?1");
    s.bind(1, std::string_view(id));
    if (s.step()) state.language = s.optional_text(0);
  }
  Statement s(db_.get(),
              "SELECT start_sample, frames_consumed, segments FROM windows WHERE job = ?1");
  s.bind(1, std::string_view(id));
  while (s.step()) {
    pipeline::FinishedWindow w;
    w.frames_consumed = static_cast<int>(s.integer(1));
    try {
      w.segments = formats::segments_from_json(nlohmann::json::parse(s.text(2)));
    } catch (const std::exception& e) {
      // A damaged row costs that window a second decoding, nothing more.
      spdlog::warn("job {}: a stored window cannot be read ({}); it is decoded again", id,
                   e.what());
      continue;
    }
    state.windows.emplace(s.integer(0), std::move(w));
  }
  return state;
}

int JobStore::window_count(const std::string& id) const {
  const std::lock_guard lock(mutex_);
  Statement s(db_.get(), "SELECT COUNT(*) FROM windows WHERE job = ?1");
  s.bind(1, std::string_view(id));
  return s.step() ? static_cast<int>(s.integer(0)) : 0;
}

void JobStore::finish(const JobRecord& job, const std::optional<Transcript>& transcript) {
  const std::string json = transcript ? formats::transcript_to_json(*transcript).dump() : "";
  const std::lock_guard lock(mutex_);
  Transaction tx(db_.get());
  write_record(job);
  {
    Statement s(db_.get(),
                "UPDATE jobs SET result = ?1, has_result = ?2, result_bytes = ?3 WHERE id = ?4");
    if (transcript) {
      s.bind(1, std::string_view(json));
    }
    s.bind(2, transcript.has_value())
        .bind(3, static_cast<std::int64_t>(json.size()))
        .bind(4, std::string_view(job.id));
    s.step();
  }
  {
    Statement s(db_.get(), "DELETE FROM windows WHERE job = ?1");
    s.bind(1, std::string_view(job.id));
    s.step();
  }
  tx.commit();
}

std::optional<Transcript> JobStore::result(const std::string& id) const {
  std::string json;
  {
    const std::lock_guard lock(mutex_);
    Statement s(db_.get(), "SELECT result FROM jobs WHERE id = ?1 AND has_result = 1");
    s.bind(1, std::string_view(id));
    if (!s.step()) return std::nullopt;
    json = s.text(0);
  }
  return formats::transcript_from_json(nlohmann::json::parse(json));
}

void JobStore::remove(const std::string& id) {
  const std::lock_guard lock(mutex_);
  Statement s(db_.get(), "DELETE FROM jobs WHERE id = ?1");
  s.bind(1, std::string_view(id));
  s.step();
}

std::vector<std::pair<JobStatus, std::int64_t>> JobStore::count_by_status() const {
  std::vector<std::pair<JobStatus, std::int64_t>> out;
  for (std::size_t i = 0; i < kStatusNames.size(); ++i)
    out.emplace_back(static_cast<JobStatus>(i), 0);
  const std::lock_guard lock(mutex_);
  Statement s(db_.get(), "SELECT status, COUNT(*) FROM jobs GROUP BY status");
  while (s.step())
    out[static_cast<std::size_t>(parse_status(s.text(0)))].second = s.integer(1);
  return out;
}

std::int64_t JobStore::stored_bytes() const {
  const std::lock_guard lock(mutex_);
  std::int64_t total = 0;
  {
    Statement s(db_.get(),
                "SELECT COALESCE(SUM(result_bytes), 0) + COALESCE(SUM(CASE WHEN upload != '' "
                "THEN file_bytes ELSE 0 END), 0) FROM jobs");
    if (s.step()) total += s.integer(0);
  }
  Statement s(db_.get(), "SELECT COALESCE(SUM(LENGTH(segments)), 0) FROM windows");
  if (s.step()) total += s.integer(0);
  return total;
}

}  // namespace ifw::server
