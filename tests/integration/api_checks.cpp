#include "integration/api_checks.hpp"

namespace ifw::test {

using nlohmann::json;

json error_of(const httplib::Result& r) {
  if (!r) {
    ADD_FAILURE() << "no response: " << httplib::to_string(r.error());
    return json::object();
  }
  const json j = json::parse(r->body, nullptr, false);
  EXPECT_TRUE(j.is_object() && j.contains("error")) << r->body;
  if (!j.is_object() || !j.contains("error")) return json::object();
  const json& e = j["error"];
  for (const char* key : {"message", "type", "param", "code"})
    EXPECT_TRUE(e.contains(key)) << key << " missing in " << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  return e;
}

std::vector<std::vector<int>> tokens_of(const std::string& verbose_json) {
  std::vector<std::vector<int>> out;
  const json parsed = json::parse(verbose_json);
  for (const json& s : parsed.at("segments"))
    out.push_back(s.at("tokens").get<std::vector<int>>());
  return out;
}

}  // namespace ifw::test
