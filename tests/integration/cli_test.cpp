// The real `ifw` binary, run as a user runs it: exit codes, stdout, stderr.
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sched.h>

#include "integration/run_ifw.hpp"
#include "support/golden.hpp"
#include "support/model_builder.hpp"
#include "support/temp_dir.hpp"
#include "support/wav_files.hpp"

namespace ifw::test {
namespace {

TEST(Cli, Version) {
  const CliRun r = run_ifw({"version"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("ifw 0."), std::string::npos);
  EXPECT_NE(r.out.find("cuda:"), std::string::npos);
}

// Where the CUDA backend module is, or why it cannot be used: a missing or broken module is
// reported, not fatal (the CPU still runs).
TEST(Cli, VersionSaysWhetherTheCudaBackendCanBeUsed) {
#ifndef IFW_HAVE_CUDA
  GTEST_SKIP() << "this build has no CUDA backend";
#else
  const CliRun found = run_ifw({"version"});
  EXPECT_EQ(found.exit_code, 0) << found.err;
  EXPECT_NE(found.out.find("cuda backend: /"), std::string::npos) << found.out;
  EXPECT_NE(found.out.find("/libifw-cuda.so\n"), std::string::npos) << found.out;

  const TempDir tmp;
  const std::string not_a_module = (tmp / "libifw-cuda.so").string();
  write_file(not_a_module, "not a shared library");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {(tmp / "missing.so").string(), "no such file"}, {not_a_module, "could not be loaded"}};
  for (const auto& [path, expected] : cases) {
    ::setenv("IFW_CUDA_MODULE", path.c_str(), 1);
    const CliRun r = run_ifw({"version"});
    ::unsetenv("IFW_CUDA_MODULE");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("cuda backend: not usable: "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(path), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(expected), std::string::npos) << r.out;
  }
#endif
}

// `cmake --install` puts ifw in <prefix>/bin and the CUDA module in <prefix>/<libdir>/ifw, where
// the installed program finds it (and the module still finds the toolkit's cuBLAS).
TEST(Cli, AnInstalledIfwFindsItsCudaModule) {
  const TempDir prefix;
  const TempDir tmp;
  const std::string log = (tmp / "log").string();
  ASSERT_EQ(run_shell(shell_quote(IFW_CMAKE_COMMAND) + " --install " + shell_quote(IFW_BUILD_DIR) +
                      " --prefix " + shell_quote(prefix.path().string()) + " >" + shell_quote(log) +
                      " 2>&1"),
            0)
      << read_file(log);
  const std::string installed = (prefix / "bin" / "ifw").string();
  ASSERT_TRUE(std::filesystem::exists(installed)) << read_file(log);
  ASSERT_EQ(run_shell(shell_quote(installed) + " version >" + shell_quote(log) + " 2>&1"), 0)
      << read_file(log);
#ifdef IFW_HAVE_CUDA
  const std::string version = read_file(log);
  // The module's path comes from /proc/self/exe, which has no symbolic links.
  const std::string expected =
      "cuda backend: " + std::filesystem::canonical(prefix.path()).string() + "/";
  EXPECT_NE(version.find(expected), std::string::npos) << version;
  EXPECT_NE(version.find("/ifw/libifw-cuda.so\n"), std::string::npos) << version;
#endif
}

// Limited to one CPU (taskset here; a container's cpuset or CPU quota alike), ifw counts one
// core, and the CPU backend runs one thread, not one per CPU of the machine.
TEST(Cli, OneUsableCpuMeansOneThread) {
  IFW_REQUIRE_GOLDEN();
  if (!have_program("taskset")) GTEST_SKIP() << "the taskset program is not installed";
  // The first CPU this process may use (CPU 0 may be outside a container's cpuset).
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  ASSERT_EQ(sched_getaffinity(0, sizeof allowed, &allowed), 0);
  int cpu = 0;
  while (cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &allowed))
    ++cpu;
  ASSERT_LT(cpu, CPU_SETSIZE);
  const std::string pin = "taskset -c " + std::to_string(cpu) + " ";
  const TempDir tmp;
  const std::string out = (tmp / "out").string(), err = (tmp / "err").string();
  ASSERT_EQ(run_shell(pin + shell_quote(IFW_BINARY) + " version >" + shell_quote(out)), 0);
  EXPECT_NE(read_file(out).find("cores: 1 usable"), std::string::npos) << read_file(out);
  const std::string transcribe =
      pin + shell_quote(IFW_BINARY) + " -v transcribe " + shell_quote(jfk()) + " --model " +
      shell_quote(golden_model("tiny-random-v3")) + " --device cpu --max-new-tokens 4 -o " +
      shell_quote((tmp / "o").string());
  ASSERT_EQ(run_shell(transcribe + " >/dev/null 2>" + shell_quote(err)), 0) << read_file(err);
  EXPECT_NE(read_file(err).find("on cpu (1 threads"), std::string::npos) << read_file(err);
}

TEST(Cli, UsageErrorsExitTwo) {
  EXPECT_EQ(run_ifw({}).exit_code, 2);
  EXPECT_EQ(run_ifw({"inspect"}).exit_code, 2);
  EXPECT_EQ(run_ifw({"frobnicate"}).exit_code, 2);
  EXPECT_EQ(run_ifw({"inspect", "x", "--no-such-flag"}).exit_code, 2);
  const CliRun help = run_ifw({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("inspect"), std::string::npos);
}

TEST(Cli, InspectASyntheticFolder) {
  const TempDir dir;
  write_synthetic_model(dir.path());
  const CliRun text = run_ifw({"inspect", dir.path().string()});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("d_model 8"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("1869 tokens"), std::string::npos) << text.out;
  EXPECT_TRUE(text.err.empty()) << text.err;

  const CliRun json = run_ifw({"inspect", "--json", dir.path().string()});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  const auto j = nlohmann::json::parse(json.out);
  EXPECT_EQ(j["architecture"]["decoder_layers"], 2);
  EXPECT_EQ(j["dtype"], "float32");
  EXPECT_EQ(j["multilingual"], false);
}

TEST(Cli, InspectReportsWhatIsWrong) {
  const TempDir dir;
  write_synthetic_model(dir.path());
  const auto bytes = read_file(dir / "model.safetensors");
  write_file(dir / "model.safetensors", bytes.substr(0, 100));
  const CliRun r = run_ifw({"inspect", dir.path().string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.out.empty());
  EXPECT_NE(r.err.find("model.safetensors"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("error"), std::string::npos) << r.err;

  const CliRun json = run_ifw({"inspect", "--json", dir.path().string()});
  EXPECT_EQ(json.exit_code, 1);
  const auto j = nlohmann::json::parse(json.out);
  EXPECT_NE(j["error"]["message"].get<std::string>().find("model.safetensors"), std::string::npos);
  EXPECT_EQ(j["error"]["type"], "invalid model");

  const CliRun missing = run_ifw({"inspect", (dir / "nowhere").string()});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("nowhere: no such model folder"), std::string::npos) << missing.err;
}

TEST(Cli, BenchReportsEveryFigure) {
  const CliRun r = run_ifw({"bench", "--arch", "tiny", "--threads", "2", "--tokens", "3",
                            "--repetitions", "1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  for (const char* key : {"encoder_ms", "decode_ms_per_token", "decode_ms_per_token_batch5",
                          "decode_ms_per_step", "decode_ms_per_token_shrinking", "rtfx"}) {
    EXPECT_GT(j.at(key).get<double>(), 0.0) << key;
  }
  EXPECT_EQ(j["arch"], "tiny");
  EXPECT_EQ(j["step_graphs"], false);  // the CPU issues operations directly
  EXPECT_EQ(j["graph_launches"], 0);
  EXPECT_EQ(run_ifw({"bench", "--arch", "gigantic"}).exit_code, 2);
  EXPECT_EQ(run_ifw({"bench", "--batch", "0"}).exit_code, 2);
}

// `bench --ops`: every operation of a layer timed alone, with its share of a window or a step
// and the rate it reaches; the totals are the shares' sums.
TEST(Cli, BenchOpsTimesEachOperation) {
  const CliRun r = run_ifw({"bench", "--ops", "--arch", "tiny", "--threads", "2", "--batch", "2",
                            "--repetitions", "1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["arch"], "tiny");
  EXPECT_EQ(j["batch"], 2);
  std::set<std::string> names;
  for (const auto& op : j.at("ops")) {
    const std::string name = op.at("name");
    names.insert(name);
    EXPECT_GT(op.at("ms_per_call").get<double>(), 0.0) << name;
    EXPECT_GT(op.at("rate").get<double>(), 0.0) << name;
    EXPECT_TRUE(op.at("unit") == "TFLOP/s" || op.at("unit") == "GB/s") << name;
    // An encoder operation counts per window, and so does the decoder's product made once per
    // window; the others per step; the comparison row neither.
    const bool per_window = name.starts_with("encoder") || name.starts_with("log-mel") ||
                            name.ends_with("(per window)");
    const bool per_step =
        !per_window && (name.starts_with("decoder") || name.starts_with("logits"));
    EXPECT_EQ(op.at("ms_per_window").get<double>() > 0.0, per_window) << name;
    EXPECT_EQ(op.at("ms_per_step").get<double>() > 0.0, per_step) << name;
  }
  for (const char* name :
       {"log-mel upload (host to device)", "encoder layer norm", "encoder self-attention",
        "encoder fc1 product + bias + GELU", "  (the product alone)", "decoder cross-attention",
        "decoder self-attention", "decoder fc2 product", "logits product",
        "decoder cross k|v product (per window)"}) {
    EXPECT_TRUE(names.contains(name)) << name;
  }
  EXPECT_EQ(names.size(), 20u);

  const CliRun text =
      run_ifw({"bench", "--ops", "--arch", "tiny", "--threads", "2", "--repetitions", "1"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("encoder self-attention"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("\ntotal"), std::string::npos) << text.out;
  // Whole transcriptions and single operations are different benchmarks.
  const TempDir tmp;
  const std::filesystem::path wav = tmp.path() / "a.wav";
  write_file(wav, wav_of(std::vector<float>(16000, 0.0f)));
  const CliRun both = run_ifw({"bench", "--ops", "--audio", wav.string()});
  EXPECT_EQ(both.exit_code, 2);
  EXPECT_NE(both.err.find("excludes"), std::string::npos) << both.err;
  EXPECT_EQ(run_ifw({"bench", "--ops", "--tokenizer", tmp.path().string()}).exit_code, 2);
}

TEST(Cli, InspectEveryGoldenModel) {
  IFW_REQUIRE_GOLDEN();
  for (const auto& name : golden_model_names()) {
    const CliRun r = run_ifw({"inspect", "--json", (*golden_dir() / "models" / name).string()});
    ASSERT_EQ(r.exit_code, 0) << name << ": " << r.err;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_TRUE(j["multilingual"].get<bool>()) << name;
    EXPECT_GT(j["parameter_count"].get<long>(), 0) << name;
  }
}

}  // namespace
}  // namespace ifw::test
