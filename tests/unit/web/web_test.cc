#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "http/server.h"
#include "web/assets.h"

namespace kadr::web {
namespace {

std::string ReadSourceFile(const std::string& relative) {
  std::ifstream in(std::string(KADR_SOURCE_DIR) + "/" + relative, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

TEST(WebAssetsTest, EmbedsTheUiFilesByteForByte) {
  for (const char* name : {"index.html", "app.js", "app.css", "favicon.svg"}) {
    auto asset = FindAsset(std::string("/") + name);
    ASSERT_TRUE(asset.has_value()) << name;
    EXPECT_EQ(asset->body, ReadSourceFile(std::string("web/") + name)) << name;
  }
}

TEST(WebAssetsTest, RootIsIndexHtml) {
  auto root = FindAsset("/");
  ASSERT_TRUE(root.has_value());
  EXPECT_EQ(root->path, "/index.html");
  EXPECT_EQ(root->content_type, "text/html; charset=utf-8");
}

TEST(WebAssetsTest, ContentTypesFollowTheExtension) {
  EXPECT_EQ(FindAsset("/app.js")->content_type, "text/javascript; charset=utf-8");
  EXPECT_EQ(FindAsset("/app.css")->content_type, "text/css; charset=utf-8");
  EXPECT_EQ(FindAsset("/favicon.svg")->content_type, "image/svg+xml");
  EXPECT_EQ(FindAsset("/api/v1/openapi.json")->content_type, "application/json");
}

TEST(WebAssetsTest, UnknownPathsAreNotFound) {
  EXPECT_FALSE(FindAsset("/nope.js").has_value());
  EXPECT_FALSE(FindAsset("/web/app.js").has_value());
  EXPECT_FALSE(FindAsset("/docs/openapi.json").has_value());
  EXPECT_FALSE(FindAsset("").has_value());
}

TEST(WebAssetsTest, AssetPathsAreSortedAndIncludeOpenApi) {
  auto paths = AssetPaths();
  EXPECT_TRUE(std::is_sorted(paths.begin(), paths.end()));
  EXPECT_NE(std::find(paths.begin(), paths.end(), "/index.html"), paths.end());
  EXPECT_NE(std::find(paths.begin(), paths.end(), "/api/v1/openapi.json"), paths.end());
  for (auto path : paths) EXPECT_TRUE(FindAsset(path).has_value()) << path;
}

class WebRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    http::HttpServerOptions options;
    options.port = 0;
    options.threads = 2;
    auto created = http::HttpServer::Create(options);
    ASSERT_TRUE(created.has_value()) << created.error().ToString();
    server_ = std::move(created).value();
    ASSERT_TRUE(RegisterRoutes(*server_).ok());
    ASSERT_TRUE(server_->Start().ok());
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(std::chrono::seconds(5));
  }

  std::unique_ptr<http::HttpServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(WebRoutesTest, ServesIndexAtRoot) {
  auto r = client_->Get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/html; charset=utf-8");
  EXPECT_EQ(r->get_header_value("Cache-Control"), "no-cache");
  EXPECT_NE(r->body.find("<title>kadr"), std::string::npos);
  EXPECT_EQ(r->body, ReadSourceFile("web/index.html"));
}

TEST_F(WebRoutesTest, ServesScriptsAndStyles) {
  auto js = client_->Get("/app.js");
  ASSERT_TRUE(js);
  EXPECT_EQ(js->status, 200);
  EXPECT_EQ(js->get_header_value("Content-Type"), "text/javascript; charset=utf-8");
  EXPECT_EQ(js->body, ReadSourceFile("web/app.js"));
  auto css = client_->Get("/app.css");
  ASSERT_TRUE(css);
  EXPECT_EQ(css->status, 200);
}

TEST_F(WebRoutesTest, ServesOpenApiDocumentAsJson) {
  auto r = client_->Get("/api/v1/openapi.json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  auto doc = nlohmann::json::parse(r->body, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(doc.is_discarded());
  ASSERT_TRUE(doc.contains("openapi"));
  EXPECT_TRUE(doc["openapi"].get<std::string>().starts_with("3."));
}

TEST_F(WebRoutesTest, MatchingEtagGets304) {
  auto first = client_->Get("/app.js");
  ASSERT_TRUE(first);
  std::string etag = first->get_header_value("ETag");
  ASSERT_FALSE(etag.empty());
  EXPECT_EQ(etag.front(), '"');
  auto again = client_->Get("/app.js", {{"If-None-Match", etag}});
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 304);
  EXPECT_TRUE(again->body.empty());
  auto stale = client_->Get("/app.js", {{"If-None-Match", "\"0000\""}});
  ASSERT_TRUE(stale);
  EXPECT_EQ(stale->status, 200);
}

TEST_F(WebRoutesTest, HeadAnswersWithoutBody) {
  auto r = client_->Head("/index.html");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(r->body.empty());
}

TEST_F(WebRoutesTest, UnknownAssetIsJsonNotFound) {
  auto r = client_->Get("/missing.js");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  auto body = nlohmann::json::parse(r->body);
  EXPECT_EQ(body["error"]["code"], "not_found");
}

}  // namespace
}  // namespace kadr::web
