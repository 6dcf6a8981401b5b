// `ifw serve`: the OpenAI-compatible transcription service.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace ifw::cli {

struct ServeArgs {
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string model;                // what whisper-1 means (default: $IFW_MODEL)
  std::vector<std::string> models;  // further models requests may name
  std::string revision = "main";
  int threads = 0;
  std::string device = "auto";
  std::string precision = "auto";
  int batch_size = 0;       // 0: 8 on the CPU, planned from free device memory on a GPU
  int max_concurrent = 16;  // requests decoded side by side, per model
  int queue_size = 64;      // requests waiting beyond those, per model
  int max_new_tokens = 224;
  std::string max_upload = "256MiB";
  double shutdown_timeout = 30.0;  // seconds
  int read_timeout = 30;           // seconds
  int connections = 0;             // 0: from the concurrency and queue sizes
  std::string upload_dir;          // default: the system's temporary folder
  // Jobs (docs/JOBS.md).
  std::string data_dir;  // default: $IFW_DATA_DIR, else $XDG_DATA_HOME/ifw or ~/.local/share/ifw
  double keep_results_days = 30.0;
  std::string max_data_size = "10GiB";
  int max_job_files = 100;
  int max_jobs = 1000;
  int job_concurrency = 4;
};

void add_serve_options(CLI::App& command, ServeArgs& args);

int run_serve(const ServeArgs& args);

}  // namespace ifw::cli
