// The token file: tokens created, verified, listed and revoked; only hashes stored; owner-only
// permissions; several stores (processes) sharing one file; reload when another writer changes
// it; the first admin token created once.
#include "auth/token_store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace kadr::auth {
namespace {

namespace fs = std::filesystem;

class TokenStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("kadr_token_store_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    file_ = dir_ / "auth" / "tokens.json";
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<TokenStore> Open() {
    auto s = TokenStore::Open(file_);
    EXPECT_TRUE(s.has_value()) << s.error().ToString();
    return s ? std::move(*s) : nullptr;
  }

  std::string FileText() const {
    std::ifstream in(file_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  static mode_t Mode(const fs::path& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st.st_mode & 07777;
  }

  fs::path dir_;
  fs::path file_;
};

TEST_F(TokenStoreTest, CreatedTokenVerifiesWithItsRoleAndName) {
  auto store = Open();
  auto created = store->Create("ci", Role::kOperator);
  ASSERT_TRUE(created.has_value()) << created.error().ToString();
  EXPECT_TRUE(std::regex_match(created->token, std::regex("kadr_[0-9a-f]{12}_[0-9a-f]{64}")))
      << created->token;
  auto who = store->Verify(created->token);
  ASSERT_TRUE(who.has_value()) << who.error().ToString();
  EXPECT_EQ(who->id, created->info.id);
  EXPECT_EQ(who->name, "ci");
  EXPECT_EQ(who->role, Role::kOperator);
}

TEST_F(TokenStoreTest, WrongSecretsAndMalformedTokensAreUnauthenticated) {
  auto store = Open();
  auto created = store->Create("ci", Role::kViewer);
  ASSERT_TRUE(created.has_value());
  std::string wrong = created->token;
  wrong.back() = wrong.back() == '0' ? '1' : '0';
  for (const std::string& t :
       {wrong, std::string(""), std::string("kadr_"),
        created->token.substr(0, created->token.size() - 1), created->token + "0",
        "Bearer " + created->token, std::string("kadr_zzzzzzzzzzzz_") + std::string(64, 'a')}) {
    auto r = store->Verify(t);
    ASSERT_FALSE(r.has_value()) << t;
    EXPECT_EQ(r.error().code(), StatusCode::kUnauthenticated) << t;
  }
}

TEST_F(TokenStoreTest, FileHoldsOnlyHashesAndIsOwnerOnly) {
  ::umask(022);  // even with a lax umask
  auto store = Open();
  auto created = store->Create("admin", Role::kAdmin);
  ASSERT_TRUE(created.has_value());
  const std::string secret = created->token.substr(created->token.rfind('_') + 1);
  const std::string text = FileText();
  EXPECT_EQ(text.find(secret), std::string::npos) << text;
  EXPECT_EQ(text.find(created->token), std::string::npos);
  EXPECT_NE(text.find("\"hash\": \"sha256:"), std::string::npos) << text;
  EXPECT_NE(text.find(created->info.id), std::string::npos);
  EXPECT_EQ(Mode(file_), 0600);
  EXPECT_EQ(Mode(file_.parent_path()), 0700);
  ::umask(077);
}

TEST_F(TokenStoreTest, ListShowsTokensWithoutSecretsAndRevokeRemovesOne) {
  auto store = Open();
  auto a = store->Create("a", Role::kViewer);
  auto b = store->Create("b", Role::kAdmin);
  ASSERT_TRUE(a && b);
  auto list = store->List();
  ASSERT_TRUE(list.has_value());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "a");
  EXPECT_EQ((*list)[1].role, Role::kAdmin);
  ASSERT_TRUE(store->Revoke(a->info.id).ok());
  EXPECT_FALSE(store->Verify(a->token).has_value());
  EXPECT_TRUE(store->Verify(b->token).has_value());
  EXPECT_EQ(store->Revoke(a->info.id).code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Find(a->info.id).error().code(), StatusCode::kNotFound);
}

TEST_F(TokenStoreTest, ARevocationByAnotherProcessIsSeenWithoutARestart) {
  auto server = Open();  // a running service
  auto created = server->Create("ops", Role::kOperator);
  ASSERT_TRUE(created.has_value());
  ASSERT_TRUE(server->Verify(created->token).has_value());
  auto cli = Open();  // `kadr token revoke` in another process
  ASSERT_TRUE(cli->Revoke(created->info.id).ok());
  EXPECT_FALSE(server->Verify(created->token).has_value());
  // And a token created elsewhere works at once.
  auto later = cli->Create("later", Role::kViewer);
  ASSERT_TRUE(later.has_value());
  EXPECT_TRUE(server->Verify(later->token).has_value());
}

TEST_F(TokenStoreTest, ConcurrentWritersLoseNoToken) {
  std::vector<std::string> tokens(16);
  {
    std::vector<std::jthread> writers;
    for (int i = 0; i < 16; ++i) {
      writers.emplace_back([&, i] {
        auto store = TokenStore::Open(file_);  // a store each, as separate processes have
        ASSERT_TRUE(store.has_value());
        auto t = (*store)->Create("w" + std::to_string(i), Role::kViewer);
        ASSERT_TRUE(t.has_value()) << t.error().ToString();
        tokens[i] = t->token;
      });
    }
  }
  auto store = Open();
  EXPECT_EQ(store->List()->size(), 16u);
  for (const auto& t : tokens) EXPECT_TRUE(store->Verify(t).has_value()) << t;
}

TEST_F(TokenStoreTest, EnsureAdminCreatesTheFirstAdminOnce) {
  auto a = Open();
  auto b = Open();
  auto first = a->EnsureAdmin();
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  ASSERT_TRUE(first->has_value());
  EXPECT_EQ((*first)->info.role, Role::kAdmin);
  auto second = b->EnsureAdmin();  // another process starting at the same time
  ASSERT_TRUE(second.has_value());
  EXPECT_FALSE(second->has_value());
  EXPECT_EQ(b->List()->size(), 1u);
  EXPECT_TRUE(b->Verify((*first)->token).has_value());
  // A viewer token is no admin: still none? There is one, so nothing is created.
  ASSERT_TRUE(a->Create("v", Role::kViewer).has_value());
  EXPECT_FALSE(a->EnsureAdmin()->has_value());
}

TEST_F(TokenStoreTest, SessionKeyIsCreatedOnceAndShared) {
  auto a = Open();
  auto key = a->SessionKey();
  ASSERT_TRUE(key.has_value()) << key.error().ToString();
  EXPECT_EQ(key->size(), 32u);
  auto b = Open();
  EXPECT_EQ(b->SessionKey().value(), *key);
}

TEST_F(TokenStoreTest, MalformedFileIsRefusedAtOpenAndTheLastGoodCopyKeptLater) {
  auto store = Open();
  auto created = store->Create("x", Role::kViewer);
  ASSERT_TRUE(created.has_value());
  {
    std::ofstream out(file_, std::ios::trunc);
    out << "{not json";
  }
  EXPECT_EQ(TokenStore::Open(file_).error().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(store->Verify(created->token).has_value());  // the running service goes on
}

TEST_F(TokenStoreTest, RemovedFileRevokesEverything) {
  auto store = Open();
  auto created = store->Create("x", Role::kViewer);
  ASSERT_TRUE(created.has_value());
  fs::remove(file_);
  EXPECT_FALSE(store->Verify(created->token).has_value());
}

TEST_F(TokenStoreTest, BadNamesAreRefused) {
  auto store = Open();
  EXPECT_EQ(store->Create("", Role::kViewer).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Create(std::string(65, 'a'), Role::kViewer).error().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Create("a\nb", Role::kViewer).error().code(), StatusCode::kInvalidArgument);
}

TEST(RoleTest, AccessLevelsNeedTheirRoles) {
  using http::Access;
  EXPECT_TRUE(Allows(Role::kViewer, Access::kPublic));
  EXPECT_TRUE(Allows(Role::kViewer, Access::kRead));
  EXPECT_FALSE(Allows(Role::kViewer, Access::kOperate));
  EXPECT_TRUE(Allows(Role::kOperator, Access::kOperate));
  EXPECT_FALSE(Allows(Role::kOperator, Access::kAdmin));
  EXPECT_TRUE(Allows(Role::kAdmin, Access::kAdmin));
  EXPECT_EQ(ParseRole("operator"), Role::kOperator);
  EXPECT_EQ(ParseRole("Admin"), std::nullopt);
  EXPECT_EQ(RequiredRole(Access::kPublic), std::nullopt);
}

}  // namespace
}  // namespace kadr::auth
