// ifw-bench: `ifw bench` alone, for GPU hosts that have the CUDA toolkit but not the libraries the
// whole `ifw` command links (FFmpeg, libcurl, cpp-httplib).
#include <iostream>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <ifw/version.hpp>

#include "cli/bench_command.hpp"

int main(int argc, char** argv) {
  CLI::App app("ifw bench: encoder and decoder speed of an architecture with random weights");
  ifw::cli::BenchArgs args;
  ifw::cli::add_bench_options(app, args);
  // As `ifw version`: what this build can use, the CUDA module included.
  app.set_version_flag("--version", [] { return ifw::build_info(); });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    return ifw::cli::run_bench(args);
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
}
