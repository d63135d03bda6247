#include "auth/token_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "auth/detail/crypto.h"
#include "common/clock.h"
#include "storage/files.h"

namespace kadr::auth {
namespace {

using nlohmann::json;

constexpr std::string_view kTokenPrefix = "kadr_";
constexpr std::size_t kIdBytes = 6;       // 12 hex digits
constexpr std::size_t kSecretBytes = 32;  // 256 bits, 64 hex digits
constexpr std::size_t kSaltBytes = 16;
constexpr std::size_t kSessionKeyBytes = 32;
constexpr std::string_view kHashScheme = "sha256";

bool IsHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

Status ValidName(std::string_view name) {
  if (name.empty() || name.size() > 64) {
    return InvalidArgumentError("a token's name must have 1 to 64 characters");
  }
  for (const char c : name) {
    if (c < 0x20 || c > 0x7e) {
      return InvalidArgumentError("a token's name must be printable ASCII");
    }
  }
  return Status::Ok();
}

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// An exclusive flock on `<file>.lock`, released by the destructor.
class FileLock {
 public:
  static Result<FileLock> Take(const std::filesystem::path& file) {
    const std::string path = file.string() + ".lock";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return UnavailableError(Errno("cannot open " + path));
    while (::flock(fd, LOCK_EX) != 0) {
      if (errno == EINTR) continue;
      const Status s = UnavailableError(Errno("cannot lock " + path));
      ::close(fd);
      return s;
    }
    return FileLock(fd);
  }
  FileLock(FileLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  FileLock& operator=(FileLock&&) = delete;
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the lock
  }

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace

TokenStore::TokenStore(std::filesystem::path file) : file_(std::move(file)) {}

Result<std::unique_ptr<TokenStore>> TokenStore::Open(const std::filesystem::path& file) {
  if (file.empty() || !file.has_filename()) {
    return InvalidArgumentError("the token file needs a file name");
  }
  const std::filesystem::path dir = file.has_parent_path() ? file.parent_path() : ".";
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) {
    std::filesystem::create_directories(dir, ec);
    if (ec) return UnavailableError("cannot create " + dir.string() + ": " + ec.message());
    // Owner only, whatever the umask: the file holds the session key.
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, ec);
    if (ec) return UnavailableError("cannot restrict " + dir.string() + ": " + ec.message());
  }
  std::unique_ptr<TokenStore> store(new TokenStore(file));
  std::lock_guard lock(store->mu_);
  RETURN_IF_ERROR(store->RefreshLocked().WithContext("token file " + file.string()));
  return store;
}

Result<TokenStore::FileId> TokenStore::Stat() const {
  struct stat st {};
  if (::stat(file_.c_str(), &st) != 0) {
    if (errno == ENOENT) return FileId{};
    return UnavailableError(Errno("cannot stat " + file_.string()));
  }
  FileId id;
  id.exists = true;
  id.dev = st.st_dev;
  id.ino = st.st_ino;
  id.size = static_cast<std::uint64_t>(st.st_size);
  id.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return id;
}

Status TokenStore::RefreshLocked() {
  auto id = Stat();
  if (!id) return id.error();
  if (loaded_once_ && *id == loaded_) return Status::Ok();
  if (!id->exists) {
    contents_ = Contents{};
    loaded_ = *id;
    loaded_once_ = true;
    return Status::Ok();
  }
  auto text = storage::ReadFileText(file_);
  if (!text) {
    if (text.error().code() == StatusCode::kNotFound) {  // removed since the stat
      contents_ = Contents{};
      loaded_ = FileId{};
      loaded_once_ = true;
      return Status::Ok();
    }
    return text.error();
  }
  auto parsed = Parse(*text);
  if (!parsed) return parsed.error();
  contents_ = std::move(*parsed);
  loaded_ = *id;
  loaded_once_ = true;
  return Status::Ok();
}

void TokenStore::RefreshOrKeepLocked() {
  const Status s = RefreshLocked();
  if (s.ok()) return;
  // Once per change of the file, not once per request: remember the bad file's identity.
  if (auto id = Stat()) loaded_ = *id;
  spdlog::warn("auth: token file {} not reloaded, the last good copy stays in use: {}",
               file_.string(), s.ToString());
}

Result<TokenStore::Contents> TokenStore::Parse(const std::string& text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgumentError("not a JSON object");
  if (j.value("version", 0) != 1) return InvalidArgumentError("unknown version (want 1)");
  Contents c;
  if (j.contains("session_key")) {
    const json& k = j["session_key"];
    auto key = k.is_string() ? detail::FromHex(k.get<std::string>()) : std::nullopt;
    if (!key || key->size() < 16) return InvalidArgumentError("bad session_key");
    c.session_key = std::move(*key);
  }
  if (!j.contains("tokens")) return c;
  if (!j["tokens"].is_array()) return InvalidArgumentError("\"tokens\" must be a list");
  for (const json& t : j["tokens"]) {
    if (!t.is_object()) return InvalidArgumentError("a token must be an object");
    Entry e;
    if (!t.contains("id") || !t["id"].is_string() || !t.contains("name") ||
        !t["name"].is_string() || !t.contains("role") || !t["role"].is_string() ||
        !t.contains("hash") || !t["hash"].is_string()) {
      return InvalidArgumentError("a token needs string id, name, role and hash");
    }
    e.info.id = t["id"].get<std::string>();
    if (e.info.id.size() != 2 * kIdBytes || !IsHex(e.info.id)) {
      return InvalidArgumentError("bad token id '" + e.info.id + "'");
    }
    e.info.name = t["name"].get<std::string>();
    const auto role = ParseRole(t["role"].get<std::string>());
    if (!role) {
      return InvalidArgumentError("token " + e.info.id + ": unknown role '" +
                                  t["role"].get<std::string>() + "'");
    }
    e.info.role = *role;
    if (t.contains("created_ms") && t["created_ms"].is_number_integer()) {
      e.info.created_ms = t["created_ms"].get<std::int64_t>();
    }
    // sha256:<salt hex>:<digest hex>
    const std::string hash = t["hash"].get<std::string>();
    const auto a = hash.find(':');
    const auto b = a == std::string::npos ? a : hash.find(':', a + 1);
    std::optional<std::string> salt, digest;
    if (b != std::string::npos && hash.substr(0, a) == kHashScheme) {
      salt = detail::FromHex(hash.substr(a + 1, b - a - 1));
      digest = detail::FromHex(hash.substr(b + 1));
    }
    if (!salt || !digest || salt->empty() || digest->size() != 32) {
      return InvalidArgumentError("token " + e.info.id +
                                  ": bad hash (want sha256:<salt>:<digest>)");
    }
    e.salt = std::move(*salt);
    e.digest = std::move(*digest);
    c.tokens.push_back(std::move(e));
  }
  return c;
}

std::string TokenStore::Serialize(const Contents& contents) {
  json j = json::object();
  j["version"] = 1;
  if (!contents.session_key.empty()) j["session_key"] = detail::ToHex(contents.session_key);
  json tokens = json::array();
  for (const Entry& e : contents.tokens) {
    tokens.push_back({{"id", e.info.id},
                      {"name", e.info.name},
                      {"role", RoleName(e.info.role)},
                      {"hash", std::string(kHashScheme) + ":" + detail::ToHex(e.salt) + ":" +
                                   detail::ToHex(e.digest)},
                      {"created_ms", e.info.created_ms}});
  }
  j["tokens"] = std::move(tokens);
  return j.dump(2) + "\n";
}

Status TokenStore::Modify(const std::function<Result<bool>(Contents&)>& change) {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(FileLock file_lock, FileLock::Take(file_));
  // Read afresh under the lock: another process may have written since our last look.
  loaded_once_ = false;
  RETURN_IF_ERROR(RefreshLocked().WithContext("token file " + file_.string()));
  Contents next = contents_;
  ASSIGN_OR_RETURN(const bool changed, change(next));
  if (!changed) return Status::Ok();
  if (next.session_key.empty()) next.session_key = detail::RandomBytes(kSessionKeyBytes);
  RETURN_IF_ERROR(storage::WriteFileAtomically(file_, Serialize(next), 0600));
  contents_ = std::move(next);
  auto id = Stat();
  if (id) loaded_ = *id;
  loaded_once_ = id.has_value();
  return Status::Ok();
}

CreatedToken TokenStore::AddToken(Contents& contents, std::string_view name, Role role) {
  Entry e;
  do {
    e.info.id = detail::ToHex(detail::RandomBytes(kIdBytes));
  } while (std::any_of(contents.tokens.begin(), contents.tokens.end(),
                       [&](const Entry& other) { return other.info.id == e.info.id; }));
  e.info.name = std::string(name);
  e.info.role = role;
  e.info.created_ms = UnixMillis();
  const std::string secret = detail::ToHex(detail::RandomBytes(kSecretBytes));
  e.salt = detail::RandomBytes(kSaltBytes);
  e.digest = detail::Sha256(e.salt + secret);
  CreatedToken created{e.info, std::string(kTokenPrefix) + e.info.id + "_" + secret};
  contents.tokens.push_back(std::move(e));
  return created;
}

Result<CreatedToken> TokenStore::Create(std::string_view name, Role role) {
  RETURN_IF_ERROR(ValidName(name));
  CreatedToken created;
  RETURN_IF_ERROR(Modify([&](Contents& c) -> Result<bool> {
    created = AddToken(c, name, role);
    return true;
  }));
  return created;
}

Status TokenStore::Revoke(std::string_view id) {
  return Modify([&](Contents& c) -> Result<bool> {
    const auto n = std::erase_if(c.tokens, [&](const Entry& e) { return e.info.id == id; });
    if (n == 0) return NotFoundError("no token with id '" + std::string(id) + "'");
    return true;
  });
}

Result<std::vector<TokenInfo>> TokenStore::List() {
  std::lock_guard lock(mu_);
  RETURN_IF_ERROR(RefreshLocked());
  std::vector<TokenInfo> out;
  out.reserve(contents_.tokens.size());
  for (const Entry& e : contents_.tokens) out.push_back(e.info);
  return out;
}

Result<TokenInfo> TokenStore::Verify(std::string_view token) {
  // kadr_<12 hex>_<64 hex>
  const auto bad = [] { return UnauthenticatedError("invalid or revoked token"); };
  if (!token.starts_with(kTokenPrefix)) return bad();
  const std::string_view rest = token.substr(kTokenPrefix.size());
  if (rest.size() != 2 * kIdBytes + 1 + 2 * kSecretBytes || rest[2 * kIdBytes] != '_') {
    return bad();
  }
  const std::string_view id = rest.substr(0, 2 * kIdBytes);
  const std::string_view secret = rest.substr(2 * kIdBytes + 1);
  if (!IsHex(id) || !IsHex(secret)) return bad();
  std::lock_guard lock(mu_);
  RefreshOrKeepLocked();
  for (const Entry& e : contents_.tokens) {
    if (e.info.id != id) continue;
    std::string salted = e.salt;
    salted.append(secret);
    if (detail::ConstantTimeEquals(detail::Sha256(salted), e.digest)) return e.info;
    return bad();
  }
  return bad();
}

Result<TokenInfo> TokenStore::Find(std::string_view id) {
  std::lock_guard lock(mu_);
  RefreshOrKeepLocked();
  for (const Entry& e : contents_.tokens) {
    if (e.info.id == id) return e.info;
  }
  return NotFoundError("no token with id '" + std::string(id) + "'");
}

Result<std::string> TokenStore::SessionKey() {
  {
    std::lock_guard lock(mu_);
    RefreshOrKeepLocked();
    if (!contents_.session_key.empty()) return contents_.session_key;
  }
  // Modify adds the key whenever it writes.
  RETURN_IF_ERROR(Modify([](Contents& c) -> Result<bool> { return c.session_key.empty(); }));
  std::lock_guard lock(mu_);
  if (contents_.session_key.empty()) return InternalError("the session key was not stored");
  return contents_.session_key;
}

Result<std::optional<CreatedToken>> TokenStore::EnsureAdmin(std::string_view name) {
  RETURN_IF_ERROR(ValidName(name));
  std::optional<CreatedToken> created;
  RETURN_IF_ERROR(Modify([&](Contents& c) -> Result<bool> {
    const bool has_admin = std::any_of(c.tokens.begin(), c.tokens.end(),
                                       [](const Entry& e) { return e.info.role == Role::kAdmin; });
    if (has_admin) return c.session_key.empty();
    created = AddToken(c, name, Role::kAdmin);
    return true;
  }));
  return created;
}

}  // namespace kadr::auth
