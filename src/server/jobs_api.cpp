#include "server/jobs_api.hpp"

#include <atomic>
#include <chrono>
#include <memory>
#include <set>

#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <ifw/error.hpp>

#include "formats/formats.hpp"
#include "server/http_replies.hpp"
#include "server/job_manager.hpp"
#include "server/openai_api.hpp"
#include "util/zip_writer.hpp"

namespace ifw::server {
namespace {

constexpr auto kKeepAlive = std::chrono::seconds(15);
constexpr std::string_view kId = "(job_[0-9a-f]{16})";

std::string dump(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::ordered_json job_list(const std::vector<JobRecord>& jobs) {
  nlohmann::ordered_json data = nlohmann::ordered_json::array();
  for (const JobRecord& j : jobs)
    data.push_back(JobManager::to_json(j));
  return {{"object", "list"}, {"data", data}};
}

// The fields of POST /v1/jobs: every file part, and the options (the first of each name).
std::pair<JobRequest, std::vector<UploadedFile>> parse_job_form(const httplib::Request& req) {
  if (!req.is_multipart_form_data()) {
    throw ApiError::bad_request(
        "The body must be multipart/form-data with the audio in one or more 'file' fields", "file");
  }
  JobRequest r;
  std::vector<UploadedFile> files;
  const auto field = [&](const char* name) -> std::optional<std::string> {
    const auto it = req.files.find(name);
    if (it == req.files.end()) return std::nullopt;
    return it->second.content;
  };
  for (const auto& [name, part] : req.files) {
    if (name == "file" || name == "file[]" || name == "files" || name == "files[]") {
      files.push_back({part.filename.empty() ? "upload" : part.filename, part.content});
    }
  }
  r.model = field("model").value_or("");
  r.task = field("task").value_or("transcribe");
  if (const auto language = field("language");
      language && !language->empty() && *language != "auto") {
    r.language = *language;
  }
  r.prompt = field("prompt").value_or("");
  if (const auto t = field("temperature"); t && !t->empty()) {
    try {
      std::size_t used = 0;
      r.temperature = std::stod(*t, &used);
      if (used != t->size()) throw std::invalid_argument("trailing characters");
    } catch (const std::exception&) {
      throw ApiError::bad_request(fmt::format("temperature '{}' is not a number", t->substr(0, 40)),
                                  "temperature");
    }
  }
  for (const char* name : {"timestamp_granularities[]", "timestamp_granularities"}) {
    const auto range = req.files.equal_range(name);
    for (auto it = range.first; it != range.second; ++it) {
      if (it->second.content == "word") {
        r.word_timestamps = true;
      } else if (it->second.content != "segment") {
        throw ApiError::bad_request(fmt::format("timestamp_granularities '{}': use word or segment",
                                                it->second.content.substr(0, 40)),
                                    "timestamp_granularities[]");
      }
    }
  }
  return {std::move(r), std::move(files)};
}

std::string_view content_type_of(formats::Format f) {
  switch (f) {
    case formats::Format::kTxt:
      return "text/plain; charset=utf-8";
    case formats::Format::kSrt:
      return "application/x-subrip; charset=utf-8";
    case formats::Format::kVtt:
      return "text/vtt; charset=utf-8";
    case formats::Format::kTsv:
      return "text/tab-separated-values; charset=utf-8";
    case formats::Format::kJson:
    case formats::Format::kVerboseJson:
      return "application/json";
  }
  return "application/octet-stream";
}

// "talk" for "talk.mp3": what the job's files are called, also inside archives, so never a
// name that climbs out of a folder or hides ("..", ".x").
std::string stem_of(const std::string& file_name) {
  const auto dot = file_name.rfind('.');
  std::string stem = dot == std::string::npos ? file_name : file_name.substr(0, dot);
  stem.erase(0, stem.find_first_not_of('.'));
  return stem.empty() ? "transcript" : stem;
}

std::string file_name(const std::string& stem, formats::Format f) {
  return stem + "." + std::string(formats::extension(f));
}

// RFC 6266: a plain fallback and the UTF-8 name.
std::string attachment(const std::string& name) {
  std::string plain, encoded;
  for (const unsigned char c : name) {
    plain += (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? static_cast<char>(c) : '_';
    if (std::isalnum(c) || c == '.' || c == '-' || c == '_') {
      encoded += static_cast<char>(c);
    } else {
      encoded += fmt::format("%{:02X}", c);
    }
  }
  return fmt::format("attachment; filename=\"{}\"; filename*=UTF-8''{}", plain, encoded);
}

// The transcript as a job's client asked for it: verbose_json lists words only where word
// timestamps were (subtitles always use them, for readable cues).
std::string render(Transcript t, formats::Format f, bool word_timestamps) {
  if (!word_timestamps && f == formats::Format::kVerboseJson) {
    for (Segment& s : t.segments)
      s.words.clear();
  }
  return formats::render(t, f);
}

constexpr formats::Format kAllFormats[] = {formats::Format::kTxt,  formats::Format::kSrt,
                                           formats::Format::kVtt,  formats::Format::kTsv,
                                           formats::Format::kJson, formats::Format::kVerboseJson};

void add_job_files(util::ZipWriter& zip, const std::string& folder, const std::string& stem,
                   const Transcript& t, bool word_timestamps) {
  for (const formats::Format f : kAllFormats)
    zip.add(folder + file_name(stem, f), render(t, f, word_timestamps));
}

}  // namespace

void add_job_routes(httplib::Server& s, JobManager& jobs, int max_streams) {
  // Every route answers ApiErrors in OpenAI's shape; anything else is the server's exception
  // handler's (500, logged).
  const auto handle = [](auto body) {
    return [body](const httplib::Request& req, httplib::Response& res) {
      try {
        body(req, res);
      } catch (const ApiError& e) {
        send_error(res, e);
      }
    };
  };
  const std::string one = "/v1/jobs/" + std::string(kId);  // a job's path

  s.Post("/v1/jobs", handle([&jobs](const httplib::Request& req, httplib::Response& res) {
           const auto [request, files] = parse_job_form(req);
           const std::vector<JobRecord> created = jobs.submit(request, files);
           res.status = 201;
           res.set_content(dump(job_list(created)) + "\n", kJsonContentType);
         }));
  s.Get("/v1/jobs", handle([&jobs](const httplib::Request&, httplib::Response& res) {
          res.set_content(dump(job_list(jobs.list())) + "\n", kJsonContentType);
        }));

  // Registered before /v1/jobs/{id}: "archive" is not an id.
  s.Get("/v1/jobs/archive", handle([&jobs](const httplib::Request& req, httplib::Response& res) {
          std::vector<JobRecord> chosen;
          if (req.has_param("ids")) {
            const std::string ids = req.get_param_value("ids");
            for (std::size_t at = 0; at <= ids.size();) {
              const std::size_t comma = std::min(ids.find(',', at), ids.size());
              if (comma > at) chosen.push_back(jobs.get(ids.substr(at, comma - at)));
              at = comma + 1;
            }
          } else {
            for (JobRecord& j : jobs.list()) {
              if (j.status == JobStatus::kDone) chosen.push_back(std::move(j));
            }
          }
          if (chosen.empty()) {
            throw ApiError(404, "There is no finished job to put in an archive",
                           "invalid_request_error", "ids", "no_results");
          }
          util::ZipWriter zip;
          std::set<std::string> folders;
          for (const JobRecord& j : chosen) {
            const Transcript t = jobs.result(j.id);  // 409 for one without a result
            const std::string stem = stem_of(j.file_name);
            std::string folder = stem;
            for (int n = 2; folders.contains(folder); ++n)
              folder = fmt::format("{}-{}", stem, n);
            folders.insert(folder);
            add_job_files(zip, folder + "/", stem, t, j.word_timestamps);
          }
          res.set_header("Content-Disposition", attachment("transcripts.zip"));
          res.set_content(zip.finish(), "application/zip");
        }));

  s.Get(one, handle([&jobs](const httplib::Request& req, httplib::Response& res) {
          res.set_content(dump(JobManager::to_json(jobs.get(req.matches[1]))) + "\n",
                          kJsonContentType);
        }));

  s.Delete(
      one, handle([&jobs](const httplib::Request& req, httplib::Response& res) {
        const std::string job = req.matches[1];
        if (!has_ended(jobs.get(job).status)) {
          try {
            res.set_content(dump(JobManager::to_json(jobs.cancel(job))) + "\n", kJsonContentType);
            return;
          } catch (const ApiError& e) {
            if (e.code() != "job_ended") throw;  // it ended meanwhile: removed below
          }
        }
        jobs.remove(job);
        res.set_content(dump({{"id", job}, {"object", "job.deleted"}, {"deleted", true}}) + "\n",
                        kJsonContentType);
      }));

  s.Get(one + "/result", handle([&jobs](const httplib::Request& req, httplib::Response& res) {
          const std::string name = req.has_param("format") ? req.get_param_value("format") : "json";
          std::vector<formats::Format> chosen;
          try {
            chosen = formats::parse_formats(name);
          } catch (const Error&) {
            chosen.clear();  // answered below, with the formats a job's result comes in
          }
          if (chosen.size() != 1) {
            throw ApiError::bad_request(
                fmt::format("format '{}': use one of txt, srt, vtt, tsv, json, verbose_json "
                            "(the archive has them all)",
                            name.substr(0, 40)),
                "format");
          }
          const JobRecord job = jobs.get(req.matches[1]);
          const Transcript t = jobs.result(job.id);
          res.set_header("Content-Disposition",
                         attachment(file_name(stem_of(job.file_name), chosen.front())));
          res.set_content(render(t, chosen.front(), job.word_timestamps),
                          std::string(content_type_of(chosen.front())));
        }));

  s.Get(one + "/archive", handle([&jobs](const httplib::Request& req, httplib::Response& res) {
          const JobRecord job = jobs.get(req.matches[1]);
          const Transcript t = jobs.result(job.id);
          util::ZipWriter zip;
          const std::string stem = stem_of(job.file_name);
          add_job_files(zip, "", stem, t, job.word_timestamps);
          res.set_header("Content-Disposition", attachment(stem + ".zip"));
          res.set_content(zip.finish(), "application/zip");
        }));

  auto streams = std::make_shared<std::atomic<int>>(0);
  s.Get(one + "/events",
        handle([&jobs, streams, max_streams](const httplib::Request& req, httplib::Response& res) {
          const std::string id = req.matches[1];
          if (streams->fetch_add(1) >= max_streams) {
            --*streams;
            throw ApiError::busy(fmt::format("{} event streams are open, the most this server "
                                             "keeps; poll GET /v1/jobs/{} instead, or close one",
                                             max_streams, id),
                                 429);
          }
          // Held by the stream's provider: the place is given back when the stream ends.
          std::shared_ptr<void> slot(nullptr, [streams](void*) { --*streams; });
          // The latest event before the state: what happens after reading it is not missed.
          const std::uint64_t after = jobs.events().latest(id);
          const JobRecord job = jobs.get(id);
          res.set_header("Cache-Control", "no-cache");
          res.set_header("X-Accel-Buffering", "no");  // proxies must not hold the stream back
          res.set_chunked_content_provider(
              "text/event-stream",
              [&jobs, id, job, after, slot](std::size_t, httplib::DataSink& sink) {
                const auto send = [&sink](std::uint64_t n, std::string_view type,
                                          const std::string& data) {
                  const std::string e =
                      fmt::format("event: {}\nid: {}\ndata: {}\n\n", type, n, data);
                  return sink.write(e.data(), e.size());
                };
                const auto final_event = [](std::string_view type) {
                  return type == "done" || type == "failed" || type == "cancelled";
                };
                try {
                  const std::string_view first = job.status == JobStatus::kQueued ? "queued"
                                                 : job.status == JobStatus::kRunning
                                                     ? "progress"
                                                     : status_name(job.status);
                  if (!send(after, first, dump(JobManager::to_json(job)))) return false;
                  if (final_event(first)) {
                    sink.done();
                    return true;
                  }
                  for (std::uint64_t last = after;;) {
                    const std::vector<JobEvent> events =
                        jobs.events().wait(id, last, std::chrono::milliseconds(kKeepAlive));
                    if (jobs.events().closed()) break;  // a shutdown
                    if (events.empty()) {
                      jobs.get(id);  // 404 once deleted: the stream ends
                      static constexpr std::string_view kComment = ": keep-alive\n\n";
                      if (!sink.write(kComment.data(), kComment.size())) return false;
                      continue;
                    }
                    for (const JobEvent& e : events) {
                      last = e.id;
                      if (!send(e.id, e.type, e.data)) return false;
                      if (final_event(e.type)) {
                        sink.done();
                        return true;
                      }
                    }
                  }
                } catch (const ApiError&) {
                  // The job was deleted while streaming: the stream just ends.
                } catch (const std::exception& e) {
                  // Past cpp-httplib's own exception handling: nothing may escape this thread.
                  spdlog::error("streaming the events of {}: {}", id, e.what());
                  return false;
                }
                sink.done();
                return true;
              });
        }));
}

}  // namespace ifw::server
