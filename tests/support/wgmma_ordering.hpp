// PTX's ordering rules for Hopper's asynchronous warpgroup products (wgmma), checked on a PTX
// listing without a GPU: the class of bug that only shows on hardware, as wrong numbers, when the
// compiler moves a register access across a fence or a wait.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace ifw::test {

// One broken rule at one instruction of a kernel.
struct WgmmaViolation {
  std::size_t instruction = 0;  // index among the kernel's instructions
  std::string rule;             // "fence", "running" or "wait"
  std::string text;             // the instruction
};

struct WgmmaKernelReport {
  std::string name;  // the .entry's (mangled) name
  int fences = 0, products = 0, commits = 0, waits = 0;
  std::vector<WgmmaViolation> violations;
};

// Every .entry of `ptx`, with every path through its control flow followed:
//  - fence: a product whose accumulator or register operand another instruction accessed since
//    the last wgmma.fence (PTX requires the fence between them);
//  - running: an instruction other than a product of the same open group that accesses a
//    register of a product issued and not yet waited for;
//  - wait: a wait_group with products not yet committed, or products still running at exit.
// Register names are PTX's (virtual registers); an inline asm's own `.reg` names without '%' are
// not registers of the kernel.
std::vector<WgmmaKernelReport> check_wgmma_ordering(std::string_view ptx);

}  // namespace ifw::test
