#include "storage/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

namespace kadr::storage {
namespace {

namespace fs = std::filesystem;

Status ErrnoError(std::string_view what, const fs::path& path, int err) {
  return UnavailableError(std::string(what) + " " + path.string() + ": " + std::strerror(err));
}

Status FsyncPath(const fs::path& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return ErrnoError("cannot open", path, errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoError("cannot fsync", path, err);
  return Status::Ok();
}

template <typename Bytes>
Result<Bytes> ReadWhole(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return NotFoundError("no file " + path.string());
    return ErrnoError("cannot open", path, err);
  }
  Bytes out;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) out.reserve(static_cast<std::size_t>(st.st_size));
  char buf[64 * 1024];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return ErrnoError("cannot read", path, err);
    }
    if (n == 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  ::close(fd);
  return out;
}

}  // namespace

Status WriteFileAtomically(const fs::path& path, std::span<const std::uint8_t> bytes, mode_t mode) {
  fs::path tmp = path;
  tmp += ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoError("cannot create", tmp, errno);
  std::size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return ErrnoError("cannot write", tmp, err);
    }
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoError("cannot flush", tmp, err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoError("cannot rename into", path, err);
  }
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  return FsyncPath(dir, O_RDONLY | O_DIRECTORY);
}

Status WriteFileAtomically(const fs::path& path, std::string_view bytes, mode_t mode) {
  return WriteFileAtomically(path,
                             std::span<const std::uint8_t>(
                                 reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()),
                             mode);
}

Result<std::vector<std::uint8_t>> ReadFileBytes(const fs::path& path) {
  return ReadWhole<std::vector<std::uint8_t>>(path);
}

Result<std::string> ReadFileText(const fs::path& path) { return ReadWhole<std::string>(path); }

Result<std::string> ReadFileRange(const fs::path& path, std::uint64_t offset, std::size_t length) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::error_code ec;
    if (!fs::exists(path, ec)) return NotFoundError("no such file " + path.string());
    return UnavailableError("cannot read " + path.string());
  }
  in.seekg(static_cast<std::streamoff>(offset));
  std::string out(length, '\0');
  in.read(out.data(), static_cast<std::streamsize>(length));
  if (in.bad()) return UnavailableError("cannot read " + path.string());
  out.resize(static_cast<std::size_t>(std::max<std::streamsize>(0, in.gcount())));
  return out;
}

Result<std::uint64_t> FileSize(const fs::path& path) {
  std::error_code ec;
  const std::uintmax_t size = fs::file_size(path, ec);
  if (ec || !fs::is_regular_file(path, ec)) return NotFoundError("no such file " + path.string());
  return static_cast<std::uint64_t>(size);
}

}  // namespace kadr::storage
