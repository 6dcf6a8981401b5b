// The wgmma flash-attention kernels' PTX (built for sm_90a beside the module) against PTX's
// ordering rules for asynchronous warpgroup products, without a GPU; and the check itself on
// small listings that break each rule. A host emulation of the kernels found the compiler sinking
// the output's rescaling below a wgmma.fence; this keeps that from coming back unseen.
#include "support/wgmma_ordering.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

namespace ifw::test {
namespace {

// A kernel body around `instructions`: the registers the way nvcc's PTX writes them.
std::string listing(const std::string& instructions) {
  return ".version 8.8\n.target sm_90a\n.address_size 64\n"
         ".visible .entry kernel(\n\t.param .u64 kernel_param_0\n)\n.maxntid 128, 1, 1\n{\n"
         "\t.reg .pred %p<4>;\n\t.reg .b32 %r<40>;\n\t.reg .f32 %f<40>;\n\t.reg .b64 %rd<8>;\n" +
         instructions + "\tret;\n}\n";
}

// One product of 4 accumulators %f1..%f4 (a stand-in for the real 32 or 64) with operands from
// descriptors, the accumulate flag %r1, in nvcc's inline-asm braces.
const char* const kProduct =
    "\t// begin inline asm\n\t{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %r1, 0;\n"
    "\twgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16 {%f1, %f2, %f3, %f4}, %rd1, %rd2, p, 1, "
    "1, 0, 0;\n\t}\n\t// end inline asm\n";
// The same with its first operand from registers %r2..%r5.
const char* const kRegisterProduct =
    "\t{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %r1, 0;\n"
    "\twgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16 {%f1, %f2, %f3, %f4}, {%r2, %r3, %r4, "
    "%r5}, %rd2, p, 1, 1, 1;\n\t}\n";
const char* const kFence = "\twgmma.fence.sync.aligned;\n";
const char* const kCommit = "\twgmma.commit_group.sync.aligned;\n";
std::string wait(int pending) {
  return "\twgmma.wait_group.sync.aligned " + std::to_string(pending) + ";\n";
}

std::vector<std::string> rules(const std::string& ptx) {
  const auto reports = check_wgmma_ordering(ptx);
  EXPECT_EQ(reports.size(), 1u);
  std::vector<std::string> out;
  for (const auto& r : reports) {
    for (const auto& v : r.violations)
      out.push_back(v.rule);
  }
  return out;
}

TEST(WgmmaOrdering, AProductBetweenFenceAndWaitKeepsTheRules) {
  const std::string ptx = listing("\tmul.f32 %f1, %f1, %f5;\n" + std::string(kFence) + kProduct +
                                  kProduct + kCommit + wait(0) + "\tadd.f32 %f6, %f1, %f2;\n");
  const auto reports = check_wgmma_ordering(ptx);
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].name, "kernel");
  EXPECT_EQ(reports[0].fences, 1);
  EXPECT_EQ(reports[0].products, 2);
  EXPECT_EQ(reports[0].commits, 1);
  EXPECT_EQ(reports[0].waits, 1);
  EXPECT_TRUE(reports[0].violations.empty());
}

TEST(WgmmaOrdering, AnAccumulatorWrittenAfterTheFenceBreaksIt) {
  // What the compiler did to version 6: the output's rescaling sunk below the fence.
  EXPECT_EQ(rules(listing(std::string(kFence) + "\tmul.f32 %f3, %f3, %f5;\n" + kProduct + kCommit +
                          wait(0))),
            std::vector<std::string>{"fence"});
  // A register operand written after the fence, likewise.
  EXPECT_EQ(rules(listing(std::string(kFence) + "\tmov.b32 %r4, %r9;\n" + kRegisterProduct +
                          kCommit + wait(0))),
            std::vector<std::string>{"fence"});
  // With no fence at all.
  EXPECT_EQ(
      rules(listing("\tmov.f32 %f2, 0f00000000;\n" + std::string(kProduct) + kCommit + wait(0))),
      std::vector<std::string>{"fence"});
}

TEST(WgmmaOrdering, ResultsReadBeforeTheirWaitBreakIt) {
  EXPECT_EQ(rules(listing(std::string(kFence) + kProduct + kCommit + "\tadd.f32 %f6, %f1, %f2;\n" +
                          wait(0))),
            std::vector<std::string>{"running"});
  // wait_group 1 leaves the newest group running: its results may not be read yet.
  EXPECT_EQ(rules(listing(std::string(kFence) + kProduct + kCommit + wait(1) +
                          "\tadd.f32 %f6, %f1, %f2;\n" + wait(0))),
            std::vector<std::string>{"running"});
  // A register operand reused while its product runs.
  EXPECT_EQ(rules(listing(std::string(kFence) + kRegisterProduct + kCommit +
                          "\tmov.b32 %r3, %r9;\n" + wait(0))),
            std::vector<std::string>{"running"});
}

TEST(WgmmaOrdering, UncommittedOrUnwaitedProductsBreakIt) {
  // At the wait, and at the exit the product still has not been committed by.
  EXPECT_EQ(rules(listing(std::string(kFence) + kProduct + wait(0))),
            (std::vector<std::string>{"wait", "wait"}));
  EXPECT_EQ(rules(listing(std::string(kFence) + kProduct + kCommit)),
            std::vector<std::string>{"wait"});
}

TEST(WgmmaOrdering, EveryPathIsFollowed) {
  // The read before the wait only on the branch's taken side; a loop around it all.
  const std::string body = std::string("$L__BB0_1:\n") + kFence + kProduct + kCommit +
                           "\t@%p1 bra \t$L__BB0_2;\n" + wait(0) + "\tbra.uni \t$L__BB0_3;\n" +
                           "$L__BB0_2:\n\tadd.f32 %f6, %f1, %f2;\n" + wait(0) +
                           "$L__BB0_3:\n\t@%p2 bra \t$L__BB0_1;\n";
  EXPECT_EQ(rules(listing(body)), std::vector<std::string>{"running"});
  // Without it, the loop keeps the rules.
  const std::string clean = std::string("$L__BB0_1:\n") + kFence + kProduct + kCommit + wait(0) +
                            "\tadd.f32 %f6, %f1, %f2;\n\t@%p2 bra \t$L__BB0_1;\n";
  EXPECT_TRUE(rules(listing(clean)).empty());
}

TEST(WgmmaOrdering, ALoopThatNeverWaitsIsSaidAndEnds) {
  // Each round commits one more group and none is waited for: the checker must not follow the
  // growing list for ever.
  const std::string body = std::string("$L__BB0_1:\n") + kFence + kProduct + kCommit +
                           "\t@%p2 bra \t$L__BB0_1;\n" + wait(0);
  const auto found = rules(listing(body));
  // The second round's product on the first's running registers, and the groups piling up.
  EXPECT_NE(std::find(found.begin(), found.end(), "running"), found.end());
  EXPECT_NE(std::find(found.begin(), found.end(), "wait"), found.end());
}

TEST(WgmmaOrdering, LineInformationIsNotAnInstruction) {
  // nvcc -lineinfo puts .loc lines (no ';') between instructions.
  const std::string body = std::string("\t.loc\t1 23 5\n") + kFence + "\t.loc\t1 24 5\n" +
                           kProduct + "\t.loc\t1 25 5\n" + kCommit + wait(0);
  const auto reports = check_wgmma_ordering(listing(body));
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].fences, 1);
  EXPECT_EQ(reports[0].products, 1);
  EXPECT_EQ(reports[0].waits, 1);
  EXPECT_TRUE(reports[0].violations.empty());
}

#ifdef IFW_HOPPER_PTX
TEST(WgmmaOrdering, TheFlashKernelsPtxKeepsTheRules) {
  std::ifstream file(IFW_HOPPER_PTX);
  ASSERT_TRUE(file) << IFW_HOPPER_PTX;
  std::stringstream text;
  text << file.rdbuf();
  const auto reports = check_wgmma_ordering(text.str());
  // Versions 6, 7 and 8 in fp16 and bf16.
  ASSERT_EQ(reports.size(), 6u);
  for (const auto& r : reports) {
    SCOPED_TRACE(r.name);
    EXPECT_GE(r.fences, 2);
    EXPECT_GE(r.products, 12);  // 4 for the scores, 4 or 8 for the output
    EXPECT_GE(r.waits, 2);
    for (const auto& v : r.violations)
      ADD_FAILURE() << v.rule << " at instruction " << v.instruction << ": " << v.text;
  }
}
#else
TEST(WgmmaOrdering, TheFlashKernelsPtxKeepsTheRules) {
  GTEST_SKIP() << "no sm_90a PTX in this build (no CUDA 12+ toolkit, or no 9.0 architecture)";
}
#endif

}  // namespace
}  // namespace ifw::test
