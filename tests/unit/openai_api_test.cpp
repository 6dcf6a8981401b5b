// OpenAI's audio API fields and error shape, as the server checks and answers them.
#include "server/openai_api.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace ifw::server {
namespace {

FormField file(std::string name = "talk.mp3") {
  return {"file", "ID3 some audio bytes", std::move(name), "audio/mpeg"};
}
FormField text(std::string name, std::string value) {
  return {std::move(name), std::move(value), "", ""};
}

// The request's parse error: its status, param and message.
ApiError rejection(const std::vector<FormField>& fields) {
  try {
    parse_transcription_request(fields, "transcribe");
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "accepted";
  return ApiError(0, "", "");
}

TEST(OpenAiApi, EveryFieldIsRead) {
  // The request's audio points into the fields: they outlive it.
  const std::vector<FormField> fields = {file("../../etc/talk.mp3"),
                                         text("model", "whisper-1"),
                                         text("language", "de"),
                                         text("prompt", "Names: Ada, Grace."),
                                         text("response_format", "verbose_json"),
                                         text("temperature", "0.2"),
                                         text("timestamp_granularities[]", "word"),
                                         text("timestamp_granularities[]", "segment"),
                                         text("chunking_strategy", "auto")};
  const auto r = parse_transcription_request(fields, "transcribe");
  EXPECT_EQ(r.task, "transcribe");
  EXPECT_EQ(r.audio, "ID3 some audio bytes");
  EXPECT_EQ(r.filename, "talk.mp3");
  EXPECT_EQ(r.model, "whisper-1");
  EXPECT_EQ(r.language, "de");
  EXPECT_EQ(r.prompt, "Names: Ada, Grace.");
  EXPECT_EQ(r.response_format, ResponseFormat::kVerboseJson);
  EXPECT_DOUBLE_EQ(r.temperature, 0.2);
  EXPECT_TRUE(r.word_timestamps);
  EXPECT_TRUE(r.segment_timestamps);
  EXPECT_FALSE(r.stream);

  const auto d = parse_transcription_request({file()}, "translate");
  EXPECT_EQ(d.task, "translate");
  EXPECT_EQ(d.model, "");
  EXPECT_FALSE(d.language);
  EXPECT_EQ(d.response_format, ResponseFormat::kJson);
  EXPECT_FALSE(d.word_timestamps);
}

TEST(OpenAiApi, BadFieldsAreNamed) {
  struct Case {
    std::vector<FormField> fields;
    std::string param;
    std::string message_part;
  };
  const std::vector<Case> cases = {
      {{text("model", "whisper-1")}, "file", "'file' is required"},
      {{text("file", "not a file part")}, "file", "uploaded file"},
      {{FormField{"file", "", "empty.wav", ""}}, "file", "empty"},
      {{file(), file()}, "file", "more than once"},
      {{file(), text("response_format", "docx")}, "response_format", "\"docx\""},
      {{file(), text("temperature", "hot")}, "temperature", "\"hot\""},
      {{file(), text("temperature", "1.5")}, "temperature", "from 0 to 1"},
      {{file(), text("temperature", "nan")}, "temperature", "\"nan\""},
      {{file(), text("language", "klingon")}, "language", "\"klingon\""},
      {{file(), text("timestamp_granularities[]", "sentence")},
       "timestamp_granularities[]",
       "\"sentence\""},
      {{file(), text("timestamp_granularities[]", "word")},
       "timestamp_granularities[]",
       "verbose_json"},
      {{file(), text("stream", "maybe")}, "stream", "true or false"},
      {{file(), text("stream", "true"), text("response_format", "srt")}, "stream", "srt"},
      {{file(), FormField{"model", "x", "model.bin", ""}}, "model", "text field"},
      {{file(), text("prompt", std::string(20000, 'a'))}, "prompt", "longer than"},
  };
  for (const Case& c : cases) {
    const ApiError e = rejection(c.fields);
    EXPECT_EQ(e.status(), 400) << c.message_part;
    EXPECT_EQ(e.param(), c.param) << e.what();
    EXPECT_NE(std::string(e.what()).find(c.message_part), std::string::npos) << e.what();
  }
}

TEST(OpenAiApi, ErrorsHaveOpenAisShape) {
  const auto j = nlohmann::json::parse(ApiError::model_not_found("whisper-9").body());
  ASSERT_TRUE(j.contains("error"));
  const auto& e = j["error"];
  EXPECT_EQ(e.size(), 4u);
  EXPECT_EQ(e.at("type"), "invalid_request_error");
  EXPECT_EQ(e.at("param"), "model");
  EXPECT_EQ(e.at("code"), "model_not_found");
  EXPECT_NE(e.at("message").get<std::string>().find("whisper-9"), std::string::npos);
  EXPECT_EQ(ApiError::model_not_found("whisper-9").status(), 404);

  const auto u = nlohmann::json::parse(ApiError::unauthorized("no key").body());
  EXPECT_TRUE(u["error"]["param"].is_null());
  EXPECT_EQ(ApiError::unauthorized("no key").status(), 401);
  EXPECT_EQ(ApiError::too_large(25u << 20).status(), 413);
  EXPECT_NE(std::string(ApiError::too_large(25u << 20).what()).find("25 MiB"), std::string::npos);
  EXPECT_EQ(ApiError::busy("queue full", 429).code(), "rate_limit_exceeded");
  EXPECT_EQ(ApiError::busy("shutting down", 503).type(), "server_error");
  // Bytes that are not UTF-8 in a message do not break the JSON.
  EXPECT_NO_THROW(nlohmann::json::parse(ApiError::bad_request("bad \xff byte").body()));
}

TEST(OpenAiApi, FileNamesLoseTheirFolders) {
  EXPECT_EQ(safe_filename("../../etc/passwd"), "passwd");
  EXPECT_EQ(safe_filename("C:\\Users\\a\\talk.wav"), "talk.wav");
  EXPECT_EQ(safe_filename(".."), "upload");
  EXPECT_EQ(safe_filename("dir/"), "upload");
  EXPECT_EQ(safe_filename("a\nb\"c.mp3"), "a_b_c.mp3");
}

TEST(OpenAiApi, ContentTypesAsOpenAiSendsThem) {
  EXPECT_EQ(content_type(ResponseFormat::kJson), "application/json");
  EXPECT_EQ(content_type(ResponseFormat::kVerboseJson), "application/json");
  EXPECT_EQ(content_type(ResponseFormat::kText), "text/plain; charset=utf-8");
  EXPECT_EQ(content_type(ResponseFormat::kSrt), "text/plain; charset=utf-8");
  EXPECT_EQ(content_type(ResponseFormat::kVtt), "text/plain; charset=utf-8");
  EXPECT_EQ(file_format(ResponseFormat::kVtt), formats::Format::kVtt);
}

}  // namespace
}  // namespace ifw::server
