// Files kept on disk next to the databases (annotated images, video-job claims, uploads):
// written so that a reader sees either the old file or the whole new one, also after a crash,
// and read back whole.
//
// Thread-safety: the functions are; two writers of one path race as rename does (the last
// wins).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kadr::storage {

// Writes `bytes` to `<path>.tmp` (created with `mode`), fsyncs it, renames it over `path` and
// fsyncs the folder. Errors: kUnavailable naming the file and the system's reason (the
// temporary file is removed).
Status WriteFileAtomically(const std::filesystem::path& path, std::span<const std::uint8_t> bytes,
                           mode_t mode = 0600);
Status WriteFileAtomically(const std::filesystem::path& path, std::string_view bytes,
                           mode_t mode = 0600);

// The whole file. Errors: kNotFound (no such file), kUnavailable (unreadable).
Result<std::vector<std::uint8_t>> ReadFileBytes(const std::filesystem::path& path);
Result<std::string> ReadFileText(const std::filesystem::path& path);

// At most `length` bytes of the file from `offset` (fewer at its end), without reading the
// rest. Errors: kNotFound (no such file), kUnavailable (unreadable).
Result<std::string> ReadFileRange(const std::filesystem::path& path, std::uint64_t offset,
                                  std::size_t length);

// The size of a regular file. Errors: kNotFound (no such regular file).
Result<std::uint64_t> FileSize(const std::filesystem::path& path);

}  // namespace kadr::storage
