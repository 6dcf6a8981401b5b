// The `ifw` command.
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <ifw/ifw.hpp>

namespace {

// Exit codes, shared by every subcommand.
constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }
  if (verbose) spdlog::set_level(spdlog::level::debug);

  try {
    if (*inspect) return run_inspect(model_dir, json);
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
