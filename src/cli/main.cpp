// The `ifw` command.
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <ifw/ifw.hpp>

#include "cli/bench_command.hpp"
#include "cli/exit_codes.hpp"
#include "cli/models_command.hpp"
#include "cli/serve_command.hpp"
#include "cli/transcribe_command.hpp"
#include "engine/benchmark.hpp"
#include "engine/weight_source.hpp"
#include "util/heap.hpp"

using ifw::cli::kExitFailed;
using ifw::cli::kExitOk;
using ifw::cli::kExitUsage;

namespace {

int run_inspect(const std::string& model_dir, bool json) {
  try {
    const ifw::ModelInfo info = ifw::inspect_model(model_dir);
    std::cout << (json ? ifw::model_info_json(info) : ifw::format_model_info(info));
    return kExitOk;
  } catch (const std::exception& e) {
    const auto* error = dynamic_cast<const ifw::Error*>(&e);
    if (json) {
      const nlohmann::json out = {
          {"error",
           {{"message", e.what()},
            {"type", error != nullptr ? ifw::to_string(error->kind()) : "internal error"}}}};
      std::cout << out.dump(2) << "\n";
    }
    spdlog::error("{}", e.what());
    return kExitFailed;
  }
}

}  // namespace

int main(int argc, char** argv) {
  ifw::util::tune_heap_for_long_runs();
  // Logs go to stderr so that stdout carries only results.
  spdlog::set_default_logger(spdlog::stderr_color_st("ifw"));
  spdlog::set_pattern("ifw: %^%l%$: %v");

  CLI::App app{"ifw: fast, faithful Whisper speech-to-text"};
  app.require_subcommand(1);
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "More log output");

  auto* inspect = app.add_subcommand(
      "inspect", "Show what a Whisper model folder holds, or what is wrong with it");
  std::string model_dir;
  bool json = false;
  inspect
      ->add_option("MODEL_DIR", model_dir,
                   "Hugging Face model folder (config.json, weights, tokenizer)")
      ->required();
  inspect->add_flag("--json", json, "Print the summary as JSON");

  auto* version = app.add_subcommand("version", "Print the version and what this build can use");

  ifw::cli::TranscribeArgs transcribe_args;
  auto* transcribe = app.add_subcommand("transcribe", "Transcribe audio or video files");
  ifw::cli::add_transcribe_options(*transcribe, transcribe_args);
  ifw::cli::TranscribeArgs translate_args;
  auto* translate =
      app.add_subcommand("translate", "Translate speech in audio or video files into English");
  ifw::cli::add_transcribe_options(*translate, translate_args);

  ifw::cli::ModelsArgs models_args;
  auto* models =
      app.add_subcommand("models", "List, download or remove models in the Hugging Face cache");
  ifw::cli::add_models_commands(*models, models_args);

  ifw::cli::ServeArgs serve_args;
  auto* serve = app.add_subcommand(
      "serve", "Serve OpenAI's audio API (/v1/audio/transcriptions and translations) over HTTP");
  ifw::cli::add_serve_options(*serve, serve_args);

  auto* bench = app.add_subcommand(
      "bench", "Measure encoder and decoder speed of an architecture with random weights");
  ifw::cli::BenchArgs bench_args;
  ifw::cli::add_bench_options(*bench, bench_args);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }
  if (verbose) spdlog::set_level(spdlog::level::debug);

  try {
    if (*inspect) return run_inspect(model_dir, json);
    if (*transcribe) {
      if (transcribe_args.quiet) spdlog::set_level(spdlog::level::err);
      return ifw::cli::run_transcribe(transcribe_args, "transcribe");
    }
    if (*translate) {
      if (translate_args.quiet) spdlog::set_level(spdlog::level::err);
      return ifw::cli::run_transcribe(translate_args, "translate");
    }
    if (*models) return ifw::cli::run_models(*models, models_args);
    if (*serve) return ifw::cli::run_serve(serve_args);
    if (*bench) {
      return ifw::cli::run_bench(bench_args) == 0 ? kExitOk : kExitFailed;
    }
    if (*version) {
      std::cout << ifw::build_info();
      return kExitOk;
    }
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return kExitFailed;
  }
  return kExitUsage;
}
