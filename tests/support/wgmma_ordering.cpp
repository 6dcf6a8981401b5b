#include "support/wgmma_ordering.hpp"

#include <algorithm>
#include <cctype>
#include <compare>
#include <cstdint>
#include <map>
#include <set>
#include <stdexcept>
#include <utility>

namespace ifw::test {
namespace {

// A set of the registers that products touch (numbered in order of appearance).
class RegisterSet {
 public:
  explicit RegisterSet(std::size_t size = 0) : words_((size + 63) / 64) {}
  void set(std::size_t i) { words_[i / 64] |= std::uint64_t{1} << (i % 64); }
  void clear() { std::fill(words_.begin(), words_.end(), 0); }
  bool any() const {
    return std::any_of(words_.begin(), words_.end(), [](std::uint64_t w) { return w != 0; });
  }
  bool intersects(const RegisterSet& o) const {
    for (std::size_t i = 0; i < words_.size(); ++i) {
      if ((words_[i] & o.words_[i]) != 0) return true;
    }
    return false;
  }
  // Whether this adds anything.
  bool add(const RegisterSet& o) {
    bool grew = false;
    for (std::size_t i = 0; i < words_.size(); ++i) {
      grew = grew || (o.words_[i] & ~words_[i]) != 0;
      words_[i] |= o.words_[i];
    }
    return grew;
  }
  auto operator<=>(const RegisterSet&) const = default;

 private:
  std::vector<std::uint64_t> words_;
};

struct Instruction {
  std::string text;
  std::string op;                                   // opcode and suffixes, without a guard
  bool guarded = false;                             // @%p... / @!%p...
  std::vector<std::string> names;                   // every register it names
  std::vector<std::string> accumulators, operands;  // a product's first two { } lists
  std::string target;                               // a branch's label
};

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
    s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
    s.remove_suffix(1);
  return s;
}

bool is_lower(char c) {
  return c >= 'a' && c <= 'z';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_name(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$';
}

// Every register s names: '%', lower-case letters, digits (%r12, %rd3, %f7; not %tid.x).
std::vector<std::string> registers_in(std::string_view s) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') continue;
    std::size_t j = i + 1;
    while (j < s.size() && is_lower(s[j]))
      ++j;
    const std::size_t letters_end = j;
    while (j < s.size() && is_digit(s[j]))
      ++j;
    if (letters_end > i + 1 && j > letters_end) out.emplace_back(s.substr(i, j - i));
    i = j - 1;
  }
  return out;
}

// A label opening s ("$L__BB0_3:"): its name, and s past it; nothing if s opens otherwise.
bool take_label(std::string_view& s, std::string& name) {
  std::size_t j = 0;
  while (j < s.size() && is_name(s[j]))
    ++j;
  if (j == 0 || j >= s.size() || s[j] != ':' || is_digit(s[0])) return false;
  name = std::string(s.substr(0, j));
  s.remove_prefix(j + 1);
  return true;
}

// A statement (the text before a ';') as an instruction, after the scope braces and labels that
// may open it (labels are recorded at the index the instruction will have). False for
// declarations and empty statements.
bool parse_statement(std::string_view s, std::size_t index,
                     std::map<std::string, std::size_t, std::less<>>& labels, Instruction& out) {
  while (true) {
    s = trim(s);
    if (!s.empty() && (s.front() == '{' || s.front() == '}')) {
      s.remove_prefix(1);
      continue;
    }
    std::string label;
    if (!take_label(s, label)) break;
    labels[label] = index;
  }
  if (s.empty() || s.front() == '.') return false;
  out = Instruction{};
  out.text = std::string(s);
  if (s.front() == '@') {
    out.guarded = true;
    s = trim(s.substr(std::min(s.size(), s.find_first_of(" \t"))));
  }
  out.op = std::string(s.substr(0, s.find_first_of(" \t")));
  out.names = registers_in(s);
  if (starts_with(out.op, "wgmma.mma_async")) {
    const std::size_t a = s.find('{'), a_end = s.find('}', a);
    if (a == std::string_view::npos || a_end == std::string_view::npos) {
      throw std::runtime_error("wgmma product without an accumulator list: " + out.text);
    }
    out.accumulators = registers_in(s.substr(a, a_end - a));
    const std::size_t b = s.find('{', a_end), b_end = s.find('}', b);
    if (b != std::string_view::npos && b_end != std::string_view::npos)
      out.operands = registers_in(s.substr(b, b_end - b));
  }
  if (starts_with(out.op, "bra")) out.target = std::string(trim(s.substr(s.find_last_of(" \t"))));
  return true;
}

// The instructions of one entry's body and where its labels point.
struct Body {
  std::vector<Instruction> instructions;
  std::map<std::string, std::size_t, std::less<>> labels;
};

Body parse_body(std::string_view body) {
  Body out;
  std::string statement;
  bool line_start = true;
  for (std::size_t i = 0; i < body.size(); ++i) {
    const bool skip_line =
        body.substr(i, 2) == "//" ||  // comments (inline asm markers among them)
        (line_start && (body.substr(i, 4) == ".loc" || body.substr(i, 5) == ".file"));  // -lineinfo
    if (body[i] == '\n') {
      line_start = true;
    } else if (!std::isspace(static_cast<unsigned char>(body[i]))) {
      line_start = false;
    }
    if (skip_line) {  // up to the line's end: these have no ';'
      while (i < body.size() && body[i] != '\n')
        ++i;
      statement += '\n';
      line_start = true;
    } else if (body[i] == ';') {
      Instruction ins;
      if (parse_statement(statement, out.instructions.size(), out.labels, ins))
        out.instructions.push_back(std::move(ins));
      statement.clear();
    } else {
      statement += body[i];
    }
  }
  return out;
}

// Committed groups a path may have running at once: wgmma.wait_group takes 0 to 7.
constexpr std::size_t kMaxRunningGroups = 8;

// Where a path stands with the products: the open (uncommitted) group's registers and the
// committed groups still running, oldest first. Paths are told apart by it; the registers
// accessed since the last fence are merged over paths that meet (a broken rule on any path is
// one).
struct Products {
  RegisterSet open;
  std::vector<RegisterSet> running;
  auto operator<=>(const Products&) const = default;
};

class Checker {
 public:
  Checker(std::string name, Body body) : body_(std::move(body)) {
    report_.name = std::move(name);
    for (const Instruction& ins : body_.instructions) {
      if (starts_with(ins.op, "wgmma.mma_async")) {
        ++report_.products;
        for (const auto& r : ins.accumulators)
          number(r);
        for (const auto& r : ins.operands)
          number(r);
      } else if (starts_with(ins.op, "wgmma.fence")) {
        ++report_.fences;
      } else if (starts_with(ins.op, "wgmma.commit_group")) {
        ++report_.commits;
      } else if (starts_with(ins.op, "wgmma.wait_group")) {
        ++report_.waits;
      }
    }
  }

  WgmmaKernelReport run() {
    const std::size_t n = body_.instructions.size();
    if (n == 0) return report_;
    // Per instruction: each way the products stand there, with the registers accessed since
    // the last fence on the paths that arrive so.
    std::vector<std::map<Products, RegisterSet>> seen(n);
    const Products start{RegisterSet(index_.size()), {}};
    seen[0].emplace(start, RegisterSet(index_.size()));
    std::vector<std::pair<std::size_t, Products>> work{{0, start}};
    while (!work.empty()) {
      auto [i, products] = std::move(work.back());
      work.pop_back();
      RegisterSet accessed = seen[i].at(products);
      if (!step(i, products, accessed)) continue;
      for (const std::size_t next : successors(i)) {
        if (next >= n) continue;
        const auto [it, inserted] = seen[next].try_emplace(products, accessed);
        if (inserted || it->second.add(accessed)) work.emplace_back(next, products);
      }
    }
    return report_;
  }

 private:
  void number(const std::string& r) { index_.try_emplace(r, index_.size()); }

  RegisterSet product_registers(const std::vector<std::string>& names) const {
    RegisterSet out(index_.size());
    for (const auto& r : names) {
      if (const auto it = index_.find(r); it != index_.end()) out.set(it->second);
    }
    return out;
  }

  void violation(std::size_t i, const char* rule) {
    if (!reported_.insert({i, rule}).second) return;
    report_.violations.push_back({i, rule, body_.instructions[i].text});
  }

  // Applies instruction i to a path; false where the path is not followed further.
  bool step(std::size_t i, Products& p, RegisterSet& accessed) {
    const Instruction& ins = body_.instructions[i];
    if (starts_with(ins.op, "wgmma.fence")) {
      accessed.clear();
    } else if (starts_with(ins.op, "wgmma.mma_async")) {
      RegisterSet mine = product_registers(ins.accumulators);
      mine.add(product_registers(ins.operands));
      if (mine.intersects(accessed)) violation(i, "fence");
      for (const RegisterSet& group : p.running) {
        if (mine.intersects(group)) violation(i, "running");
      }
      p.open.add(mine);
    } else if (starts_with(ins.op, "wgmma.commit_group")) {
      if (p.open.any()) p.running.push_back(p.open);
      p.open.clear();
      // More groups running than a loop could need: one goes round without waiting (and the
      // path would grow its list for ever). Said, and not followed further.
      if (p.running.size() > kMaxRunningGroups) {
        violation(i, "wait");
        return false;
      }
    } else if (starts_with(ins.op, "wgmma.wait_group")) {
      if (p.open.any()) violation(i, "wait");
      const std::size_t keep = std::stoul(
          std::string(trim(std::string_view(ins.text).substr(ins.text.find_last_of(" \t")))));
      if (p.running.size() > keep) {
        p.running.erase(p.running.begin(), p.running.end() - static_cast<std::ptrdiff_t>(keep));
      }
    } else {
      const RegisterSet touched = product_registers(ins.names);
      bool busy = touched.intersects(p.open);
      for (const RegisterSet& group : p.running)
        busy = busy || touched.intersects(group);
      if (busy) violation(i, "running");
      accessed.add(touched);
      const bool any_running = p.open.any() || !p.running.empty();
      if ((ins.op == "ret" || ins.op == "exit") && any_running) violation(i, "wait");
    }
    return true;
  }

  std::vector<std::size_t> successors(std::size_t i) const {
    const Instruction& ins = body_.instructions[i];
    if (starts_with(ins.op, "bra")) {
      const auto it = body_.labels.find(ins.target);
      if (it == body_.labels.end()) throw std::runtime_error("no label " + ins.target);
      if (ins.guarded) return {it->second, i + 1};
      return {it->second};
    }
    if ((ins.op == "ret" || ins.op == "exit") && !ins.guarded) return {};
    return {i + 1};
  }

  Body body_;
  WgmmaKernelReport report_;
  std::map<std::string, std::size_t, std::less<>> index_;
  std::set<std::pair<std::size_t, std::string>> reported_;
};

}  // namespace

std::vector<WgmmaKernelReport> check_wgmma_ordering(std::string_view ptx) {
  std::vector<WgmmaKernelReport> reports;
  std::vector<std::pair<std::string, std::size_t>> entries;  // name, where its body starts
  const std::string text(ptx);
  for (std::size_t at = text.find(".entry"); at != std::string::npos;
       at = text.find(".entry", at + 1)) {
    std::size_t name = at + 6;
    while (name < text.size() && std::isspace(static_cast<unsigned char>(text[name])))
      ++name;
    std::size_t name_end = name;
    while (name_end < text.size() && is_name(text[name_end]))
      ++name_end;
    const std::size_t params_end = text.find(')', name_end);
    const std::size_t body = text.find('{', params_end);
    if (name_end == name || params_end == std::string::npos || body == std::string::npos) {
      throw std::runtime_error("an .entry without a name or body at offset " + std::to_string(at));
    }
    entries.emplace_back(text.substr(name, name_end - name), body + 1);
  }
  for (std::size_t e = 0; e < entries.size(); ++e) {
    const std::size_t end =
        e + 1 < entries.size() ? text.rfind(".entry", entries[e + 1].second) : text.size();
    Checker checker(entries[e].first, parse_body(std::string_view(text).substr(
                                          entries[e].second, end - entries[e].second)));
    reports.push_back(checker.run());
  }
  return reports;
}

}  // namespace ifw::test
