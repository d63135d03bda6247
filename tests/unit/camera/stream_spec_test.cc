#include <sys/stat.h>

#include <string>

#include <gtest/gtest.h>

#include "camera/detail/stream_store.h"
#include "camera/stream_runner.h"
#include "support/test_data.h"

namespace kadr::camera {
namespace {

std::string ErrorOf(std::string_view body, std::string_view default_model = "m") {
  auto r = ParseStreamRequest(body, default_model);
  if (r.has_value()) return "<accepted>";
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
  return r.error().message();
}

TEST(StreamSpecTest, AppliesDefaults) {
  auto r = ParseStreamRequest(R"({"source":"rtsp://u:p@cam:8554/x"})", "yolox_nano");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  const StreamSpec& s = r->spec;
  EXPECT_EQ(s.model, "yolox_nano");
  EXPECT_EQ(s.name, "rtsp://***@cam:8554/x");  // the redacted source
  EXPECT_EQ(s.source, "rtsp://u:p@cam:8554/x");
  EXPECT_EQ(s.mode, StreamMode::kLive);
  EXPECT_FALSE(s.loop);
  EXPECT_FALSE(s.fps.has_value());
  EXPECT_EQ(s.window, 2);
  EXPECT_EQ(s.max_latency_ms, 2000);
  EXPECT_TRUE(r->probe);
}

// Found by fuzz/stream_spec_fuzzer: a long source without a name (its redacted form is the
// default name) was accepted, but its stored form was refused when read back, so the stream
// vanished at the next restart.
TEST(StreamSpecTest, ALongSourcesDefaultNameIsCutSoTheStreamSurvivesARestart) {
  const std::string source = "rtsp://u:p@cam.example/" + std::string(300, 'a');
  auto r = ParseStreamRequest(R"({"source":")" + source + R"(","probe":false})", "yolox_nano");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->spec.name.size(), 200u);
  EXPECT_TRUE(r->spec.name.starts_with("rtsp://***@cam.example/aaa"));
  StreamSpec spec = r->spec;
  spec.id = "s1";
  spec.created_ms = 1;
  auto back = SpecFromStorageJson(SpecToStorageJson(spec));
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(back->name, spec.name);
  EXPECT_EQ(back->source, source);
}

TEST(StreamSpecTest, FilesLoopInLiveModeAndNotInLosslessMode) {
  EXPECT_TRUE(ParseStreamRequest(R"({"source":"/v.mp4"})", "m")->spec.loop);
  EXPECT_FALSE(ParseStreamRequest(R"({"source":"/v.mp4","mode":"lossless"})", "m")->spec.loop);
  EXPECT_FALSE(ParseStreamRequest(R"({"source":"/v.mp4","loop":false})", "m")->spec.loop);
}

TEST(StreamSpecTest, ReadsEveryField) {
  auto r = ParseStreamRequest(
      R"({"source":"file:///v.mp4","model":"people","name":"dock","fps":5,"mode":"lossless",
          "loop":true,"max_width":640,"max_height":480,"window":4,"max_latency_ms":3000,
          "conf":0.3,"probe":false})",
      "");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  const StreamSpec& s = r->spec;
  EXPECT_EQ(s.model, "people");
  EXPECT_EQ(s.name, "dock");
  EXPECT_DOUBLE_EQ(*s.fps, 5);
  EXPECT_EQ(s.mode, StreamMode::kLossless);
  EXPECT_TRUE(s.loop);
  EXPECT_EQ(s.max_width, 640);
  EXPECT_EQ(s.max_height, 480);
  EXPECT_EQ(s.window, 4);
  EXPECT_EQ(s.max_latency_ms, 3000);
  EXPECT_FLOAT_EQ(*s.conf, 0.3f);
  EXPECT_FALSE(r->probe);
}

TEST(StreamSpecTest, ErrorsNameTheField) {
  EXPECT_NE(ErrorOf(R"({})").find("source is required"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"source":"rtsp://h/x"})", "").find("model is required"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"source":"rtsp://h/x","fps":0})").find("fps"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"source":"rtsp://h/x","fps":"5"})").find("fps"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"source":"rtsp://h/x","mode":"fast"})").find("mode"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"source":"rtsp://h/x","window":17})").find("window"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"source":"rtsp://h/x","window":1.5})").find("window"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"source":"rtsp://h/x","conf":2})").find("conf"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"source":"rtsp://h/x","max_width":0})").find("max_width"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"source":"rtsp://h/x","loop":true})").find("loop applies to video files"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"source":"rtsp://h/x","fsp":5})").find("unknown field 'fsp'"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"source":"relative.mp4"})").find("absolute"), std::string::npos);
  EXPECT_NE(ErrorOf(R"(not json)").find("not valid JSON"), std::string::npos);
  EXPECT_NE(ErrorOf(R"([1])").find("JSON object"), std::string::npos);
}

TEST(StreamSpecTest, ErrorsNeverCarryCredentials) {
  const std::string e = ErrorOf(R"({"source":"rtsp://admin:hunter2@h:0/x"})");
  EXPECT_EQ(e.find("hunter2"), std::string::npos) << e;
  // A display name that is itself a URL with credentials is stored redacted.
  auto r = ParseStreamRequest(R"({"source":"rtsp://h/x","name":"rtsp://a:hunter2@h/x"})", "m");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->spec.name, "rtsp://***@h/x");
}

TEST(StreamSpecTest, StorageRoundTripKeepsEverything) {
  auto r = ParseStreamRequest(
      R"({"source":"rtsp://u:p@cam/x","model":"m","fps":2.5,"conf":0.5,"window":3})", "");
  ASSERT_TRUE(r.has_value());
  StreamSpec s = r->spec;
  s.id = "s00000000000000ab";
  s.created_ms = 1234;
  auto back = SpecFromStorageJson(SpecToStorageJson(s));
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(back->id, s.id);
  EXPECT_EQ(back->source, "rtsp://u:p@cam/x");  // the capture needs the credentials
  EXPECT_EQ(back->created_ms, 1234);
  EXPECT_DOUBLE_EQ(*back->fps, 2.5);
  EXPECT_FLOAT_EQ(*back->conf, 0.5f);
  EXPECT_EQ(back->window, 3);
}

TEST(StreamStoreTest, StreamsSurviveReopeningInCreationOrder) {
  const auto dir = testing::MakeTempDir();
  StreamSpec a = ParseStreamRequest(R"({"source":"rtsp://h/a"})", "m")->spec;
  StreamSpec b = ParseStreamRequest(R"({"source":"/b.mp4"})", "m")->spec;
  StreamSpec c = ParseStreamRequest(R"({"source":"/dev/video0"})", "m")->spec;
  a.id = "sa";
  b.id = "sb";
  c.id = "sc";
  {
    auto store = StreamStore::Create(dir);
    ASSERT_TRUE(store.has_value()) << store.error().ToString();
    ASSERT_TRUE((*store)->Put(a).ok());
    ASSERT_TRUE((*store)->Put(b).ok());
    ASSERT_TRUE((*store)->Put(c).ok());
    ASSERT_TRUE((*store)->Delete("sb").ok());
    EXPECT_EQ((*store)->Delete("sb").code(), StatusCode::kNotFound);
  }
  auto store = StreamStore::Create(dir);
  ASSERT_TRUE(store.has_value());
  auto list = (*store)->List();
  ASSERT_TRUE(list.has_value());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].id, "sa");
  EXPECT_EQ((*list)[1].id, "sc");
  EXPECT_EQ((*list)[0].source, "rtsp://h/a");
  // The database holds credentials: only its owner may read it.
  struct stat st {};
  ASSERT_EQ(::stat((dir / "streams.db").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0077, 0u);
}

}  // namespace
}  // namespace kadr::camera
