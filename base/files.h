#pragma once
// Files written whole or not at all. The bytes go to a temporary name beside the
// destination (the same folder, so the same file system and an atomic rename),
// which is renamed over it only when complete: a full disk, a cancelled render or a
// crash never leaves a half-written file under the real name.
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string_view>

namespace kinora {

// ".NAME.tmp-PID.EXT" beside `path`; the extension kept for tools that pick a
// format by it (FFmpeg does).
std::filesystem::path temp_beside(const std::filesystem::path& path);

// Moves the finished temporary `tmp` into place as `path`; on failure removes
// `tmp` and throws an Error naming `path`.
void commit_temp(const std::filesystem::path& tmp, const std::filesystem::path& path);

// `path` written that way: `write` streams the contents into the open
// temporary and returns false if a write failed; the file is flushed to the disk
// before the rename. Throws an Error naming `path` (a full disk, a folder that
// cannot be written), leaving whatever was at `path` before untouched and no
// temporary behind.
void write_file_atomically(const std::filesystem::path& path,
                           const std::function<bool(std::FILE*)>& write);
// The same with the whole contents at hand.
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

}  // namespace kinora
