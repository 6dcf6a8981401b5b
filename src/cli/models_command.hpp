// `ifw models list|download|rm`, and finding the model a command names (a folder or a Hub id).
#pragma once

#include <filesystem>
#include <string>

#include <CLI/CLI.hpp>

namespace ifw::cli {

// A local folder as it is; anything else as a Hub id, resolved through the Hugging Face cache
// and downloaded when missing (with a progress bar on a terminal unless quiet).
std::filesystem::path locate_model(const std::string& model, const std::string& revision,
                                   bool quiet);

struct ModelsArgs {
  std::string repo_id;
  std::string revision = "main";
  bool json = false;
};

void add_models_commands(CLI::App& models, ModelsArgs& args);
// Exit codes: 0 done, 1 failed, 2 usage.
int run_models(const CLI::App& models, const ModelsArgs& args);

}  // namespace ifw::cli
