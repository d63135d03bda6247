#include "camera/detail/stream_store.h"

#include <iterator>
#include <mutex>
#include <system_error>

#include <spdlog/spdlog.h>

#include "storage/sqlite.h"

namespace kadr::camera {
namespace {

constexpr char kDbFileName[] = "streams.db";
// Step v: PRAGMA user_version v -> v + 1 (storage/sqlite.h).
constexpr std::string_view kMigrations[] = {
    R"sql(
CREATE TABLE IF NOT EXISTS streams (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  id         TEXT NOT NULL UNIQUE,
  spec_json  TEXT NOT NULL
);
)sql",
};

}  // namespace

struct StreamStore::Impl {
  mutable std::mutex mu;
  // Declared first so that it is destroyed after its statements.
  std::unique_ptr<storage::Database> db;
  std::unique_ptr<storage::Statement> put, remove, list;
};

StreamStore::StreamStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StreamStore::~StreamStore() = default;

Result<std::unique_ptr<StreamStore>> StreamStore::Create(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return UnavailableError("cannot create " + dir.string() + ": " + ec.message());
  storage::DatabaseOptions options;
  options.path = dir / kDbFileName;
  options.name = "streams database";
  options.migrations.assign(std::begin(kMigrations), std::end(kMigrations));
  options.file_mode = 0600;  // it holds source URLs with their credentials
  auto impl = std::make_unique<Impl>();
  ASSIGN_OR_RETURN(impl->db, storage::Database::Open(options));
  ASSIGN_OR_RETURN(impl->put,
                   impl->db->Prepare("INSERT INTO streams (id, spec_json) VALUES (?1, ?2) "
                                     "ON CONFLICT(id) DO UPDATE SET spec_json = "
                                     "excluded.spec_json"));
  ASSIGN_OR_RETURN(impl->remove, impl->db->Prepare("DELETE FROM streams WHERE id = ?1"));
  ASSIGN_OR_RETURN(impl->list, impl->db->Prepare("SELECT id, spec_json FROM streams ORDER BY seq"));
  return std::unique_ptr<StreamStore>(new StreamStore(std::move(impl)));
}

Status StreamStore::Put(const StreamSpec& spec) {
  const std::string json = SpecToStorageJson(spec);
  std::lock_guard lock(impl_->mu);
  storage::Statement::Use put(*impl_->put);
  put->Bind(1, spec.id).Bind(2, json);
  return put->Run();
}

Status StreamStore::Delete(const std::string& id) {
  std::lock_guard lock(impl_->mu);
  storage::Statement::Use remove(*impl_->remove);
  remove->Bind(1, id);
  RETURN_IF_ERROR(remove->Run());
  if (impl_->db->Changes() == 0) return NotFoundError("unknown stream '" + id + "'");
  return Status::Ok();
}

Result<std::vector<StreamSpec>> StreamStore::List() const {
  std::lock_guard lock(impl_->mu);
  storage::Statement::Use list(*impl_->list);
  std::vector<StreamSpec> out;
  while (true) {
    ASSIGN_OR_RETURN(const bool row, list->Step());
    if (!row) return out;
    const std::string id = list->Text(0);
    auto spec = SpecFromStorageJson(list->Text(1));
    if (!spec) {
      spdlog::warn("camera: skipping stored stream id={} error=\"{}\"", id, spec.error().message());
      continue;
    }
    out.push_back(std::move(*spec));
  }
}

}  // namespace kadr::camera
