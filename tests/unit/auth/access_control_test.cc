// The authorizer (401 / 403 / 429, bearer header and session cookie), session cookies (signing,
// expiry, forgery, revocation), the failed-attempt limiter, auth modes, and the login routes
// over real HTTP.
#include "auth/access_control.h"

#include <unistd.h>

#include <filesystem>
#include <string>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "auth/detail/failure_limiter.h"
#include "auth/detail/session.h"

namespace kadr::auth {
namespace {

namespace fs = std::filesystem;
using http::Access;
using http::HttpRequest;
using nlohmann::json;

TEST(SessionTest, SignedSessionVerifiesUntilItExpires) {
  const std::string key(32, 'k');
  const std::string cookie = detail::SignSession(key, "0123456789ab", 1000);
  EXPECT_EQ(detail::VerifySession(key, cookie, 999), "0123456789ab");
  EXPECT_EQ(detail::VerifySession(key, cookie, 1000), std::nullopt);                  // expired
  EXPECT_EQ(detail::VerifySession(std::string(32, 'x'), cookie, 999), std::nullopt);  // other key
}

TEST(SessionTest, TamperedSessionsAreRefused) {
  const std::string key(32, 'k');
  const std::string cookie = detail::SignSession(key, "0123456789ab", 1000);
  // A later expiry or another id with the old MAC.
  std::string later = cookie;
  later.replace(later.find(".1000."), 6, ".9000.");
  EXPECT_EQ(detail::VerifySession(key, later, 999), std::nullopt);
  std::string other = cookie;
  other[0] = '1';
  EXPECT_EQ(detail::VerifySession(key, other, 999), std::nullopt);
  for (const std::string v : {"", "..", "a.b.c", "0123456789ab.1000", "0123456789ab.x1000.00"}) {
    EXPECT_EQ(detail::VerifySession(key, v, 999), std::nullopt) << v;
  }
  EXPECT_EQ(detail::VerifySession("", cookie, 999), std::nullopt);
}

TEST(FailureLimiterTest, BlocksAfterTheLimitUntilTheWindowEnds) {
  detail::FailureLimiter limiter(3, std::chrono::seconds(60), 100);
  const auto t0 = detail::FailureLimiter::Clock::now();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(limiter.RetryAfter("a", t0).count(), 0);
    limiter.Fail("a", t0);
  }
  EXPECT_EQ(limiter.RetryAfter("a", t0).count(), 60);
  EXPECT_EQ(limiter.RetryAfter("a", t0 + std::chrono::seconds(50)).count(), 10);
  EXPECT_EQ(limiter.RetryAfter("b", t0).count(), 0);  // per address
  EXPECT_EQ(limiter.RetryAfter("a", t0 + std::chrono::seconds(60)).count(), 0);
}

TEST(FailureLimiterTest, MemoryIsBounded) {
  detail::FailureLimiter limiter(3, std::chrono::seconds(60), 100);
  const auto t0 = detail::FailureLimiter::Clock::now();
  for (int i = 0; i < 10000; ++i) {
    limiter.Fail("10.0." + std::to_string(i), t0 + std::chrono::milliseconds(i));
  }
  EXPECT_LE(limiter.size(), 100u);
}

TEST(AuthModeTest, AutoIsOnBeyondLoopback) {
  EXPECT_FALSE(AuthRequired(AuthMode::kAuto, "127.0.0.1"));
  EXPECT_FALSE(AuthRequired(AuthMode::kAuto, "127.1.2.3"));
  EXPECT_FALSE(AuthRequired(AuthMode::kAuto, "::1"));
  EXPECT_FALSE(AuthRequired(AuthMode::kAuto, "[::1]"));
  EXPECT_FALSE(AuthRequired(AuthMode::kAuto, "localhost"));
  EXPECT_TRUE(AuthRequired(AuthMode::kAuto, "0.0.0.0"));
  EXPECT_TRUE(AuthRequired(AuthMode::kAuto, "::"));
  EXPECT_TRUE(AuthRequired(AuthMode::kAuto, "192.168.1.5"));
  EXPECT_TRUE(AuthRequired(AuthMode::kAuto, "kadr.example.com"));
  EXPECT_TRUE(AuthRequired(AuthMode::kOn, "127.0.0.1"));
  EXPECT_FALSE(AuthRequired(AuthMode::kOff, "0.0.0.0"));
  EXPECT_EQ(ParseAuthMode("on").value(), AuthMode::kOn);
  EXPECT_FALSE(ParseAuthMode("yes").has_value());
}

class AccessControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("kadr_access_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    auto s = TokenStore::Open(dir_ / "tokens.json");
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    store_ = std::shared_ptr<TokenStore>(std::move(*s));
    AccessOptions o;
    o.max_failures = 10;
    access_ = std::make_shared<AccessControl>(o, store_);
    viewer_ = store_->Create("v", Role::kViewer)->token;
    op_ = store_->Create("o", Role::kOperator)->token;
    admin_ = store_->Create("a", Role::kAdmin)->token;
  }
  void TearDown() override { fs::remove_all(dir_); }

  static HttpRequest Bearer(const std::string& token, const std::string& addr = "10.0.0.1") {
    HttpRequest r;
    r.method = "GET";
    r.path = "/api/v1/jobs";
    r.remote_addr = addr;
    r.headers.emplace("Authorization", "Bearer " + token);
    return r;
  }

  int Code(HttpRequest r, Access level) {
    auto out = access_->Authorize(r, level);
    return out ? out->status : 200;
  }

  fs::path dir_;
  std::shared_ptr<TokenStore> store_;
  std::shared_ptr<AccessControl> access_;
  std::string viewer_, op_, admin_;
};

TEST_F(AccessControlTest, RolesReachTheirLevelsAndNoHigher) {
  HttpRequest none;
  none.remote_addr = "10.0.0.1";
  EXPECT_EQ(Code(none, Access::kPublic), 200);
  auto missing = access_->Authorize(none, Access::kRead);
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(missing->status, 401);
  EXPECT_NE(missing->headers.find("WWW-Authenticate"), missing->headers.end());
  EXPECT_NE(missing->body.find("unauthenticated"), std::string::npos);

  EXPECT_EQ(Code(Bearer(viewer_), Access::kRead), 200);
  EXPECT_EQ(Code(Bearer(viewer_), Access::kOperate), 403);
  EXPECT_EQ(Code(Bearer(op_), Access::kOperate), 200);
  EXPECT_EQ(Code(Bearer(op_), Access::kAdmin), 403);
  EXPECT_EQ(Code(Bearer(admin_), Access::kAdmin), 200);

  HttpRequest as_viewer = Bearer(viewer_);
  auto denied = access_->Authorize(as_viewer, Access::kAdmin);
  ASSERT_TRUE(denied.has_value());
  EXPECT_NE(denied->body.find("permission_denied"), std::string::npos);
  EXPECT_NE(denied->body.find("admin role"), std::string::npos) << denied->body;
}

TEST_F(AccessControlTest, PrincipalIsTheTokensName) {
  HttpRequest r = Bearer(op_);
  EXPECT_FALSE(access_->Authorize(r, Access::kOperate).has_value());
  EXPECT_EQ(r.principal, "o");
}

TEST_F(AccessControlTest, ElevenWrongTokensFromOneAddressGet429) {
  for (int i = 0; i < 10; ++i) EXPECT_EQ(Code(Bearer("kadr_nope"), Access::kRead), 401) << i;
  HttpRequest r = Bearer("kadr_nope");
  auto out = access_->Authorize(r, Access::kRead);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->status, 429);
  const auto retry = out->headers.find("Retry-After");
  ASSERT_NE(retry, out->headers.end());
  EXPECT_GT(std::stoi(retry->second), 0);
  EXPECT_EQ(Code(Bearer(admin_), Access::kRead), 429);              // that address waits
  EXPECT_EQ(Code(Bearer(admin_, "10.0.0.2"), Access::kRead), 200);  // others do not
}

TEST_F(AccessControlTest, ARevokedTokenIsRefused) {
  auto t = store_->Create("gone", Role::kAdmin);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(Code(Bearer(t->token), Access::kRead), 200);
  ASSERT_TRUE(store_->Revoke(t->info.id).ok());
  EXPECT_EQ(Code(Bearer(t->token), Access::kRead), 401);
}

TEST_F(AccessControlTest, SessionCookieActsForItsTokenUntilRevoked) {
  auto t = store_->Create("browser", Role::kOperator);
  ASSERT_TRUE(t.has_value());
  const std::string value =
      detail::SignSession(store_->SessionKey().value(), t->info.id, 4102444800);  // 2100
  HttpRequest r;
  r.remote_addr = "10.0.0.1";
  r.headers.emplace("Cookie", "theme=dark; kadr_session=" + value);
  EXPECT_EQ(Code(r, Access::kOperate), 200);
  EXPECT_EQ(Code(r, Access::kAdmin), 403);
  ASSERT_TRUE(store_->Revoke(t->info.id).ok());
  auto out = access_->Authorize(r, Access::kRead);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->status, 401);
  const auto cleared = out->headers.find("Set-Cookie");
  ASSERT_NE(cleared, out->headers.end());
  EXPECT_NE(cleared->second.find("Max-Age=0"), std::string::npos);
}

TEST_F(AccessControlTest, ExpiredOrForgedSessionsAreRefusedButNotCountedAsGuesses) {
  const std::string expired =
      detail::SignSession(store_->SessionKey().value(), "0123456789ab", 1000);
  HttpRequest r;
  r.remote_addr = "10.0.0.9";
  r.headers.emplace("Cookie", "kadr_session=" + expired);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(Code(r, Access::kRead), 401);
  EXPECT_EQ(Code(Bearer(viewer_, "10.0.0.9"), Access::kRead), 200);
}

TEST(AccessControlOffTest, WithoutAStoreEveryRouteIsOpen) {
  auto access = std::make_shared<AccessControl>(AccessOptions{}, nullptr);
  EXPECT_FALSE(access->enabled());
  EXPECT_EQ(MakeAuthorizer(access), nullptr);
  HttpRequest r;
  EXPECT_FALSE(access->Authorize(r, Access::kAdmin).has_value());
}

TEST_F(AccessControlTest, LoginSetsASessionCookieThatWhoamiAccepts) {
  http::HttpServerOptions o;
  o.port = 0;
  o.threads = 2;
  auto server = http::HttpServer::Create(o);
  ASSERT_TRUE(server.has_value());
  ASSERT_TRUE(access_->RegisterRoutes(**server).ok());
  ASSERT_TRUE((*server)->Start().ok());
  httplib::Client c("127.0.0.1", (*server)->port());

  auto anonymous = c.Get("/api/v1/whoami");
  ASSERT_TRUE(anonymous);
  EXPECT_EQ(anonymous->status, 401);

  auto wrong = c.Post("/api/v1/login", R"({"token":"kadr_wrong"})", "application/json");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);

  auto login = c.Post("/api/v1/login", json{{"token", op_}}.dump(), "application/json");
  ASSERT_TRUE(login);
  ASSERT_EQ(login->status, 200) << login->body;
  EXPECT_EQ(json::parse(login->body)["role"], "operator");
  const std::string set_cookie = login->get_header_value("Set-Cookie");
  EXPECT_NE(set_cookie.find("kadr_session="), std::string::npos);
  EXPECT_NE(set_cookie.find("HttpOnly"), std::string::npos);
  EXPECT_NE(set_cookie.find("SameSite=Strict"), std::string::npos);
  EXPECT_NE(set_cookie.find("Max-Age=43200"), std::string::npos);
  EXPECT_EQ(set_cookie.find("Secure"), std::string::npos);  // plain HTTP
  const std::string cookie = set_cookie.substr(0, set_cookie.find(';'));

  auto me = c.Get("/api/v1/whoami", {{"Cookie", cookie}});
  ASSERT_TRUE(me);
  ASSERT_EQ(me->status, 200);
  EXPECT_EQ(json::parse(me->body)["name"], "o");
  EXPECT_EQ(json::parse(me->body)["auth"], true);

  auto logout = c.Post("/api/v1/logout", {{"Cookie", cookie}}, "", "");
  ASSERT_TRUE(logout);
  EXPECT_EQ(logout->status, 204);
  EXPECT_NE(logout->get_header_value("Set-Cookie").find("Max-Age=0"), std::string::npos);
  (*server)->Stop();
}

}  // namespace
}  // namespace kadr::auth
