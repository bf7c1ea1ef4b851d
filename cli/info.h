#pragma once
#include <filesystem>
#include <iosfwd>

namespace kinora::cli {
// Prints what a checkpoint holds and what it is. Throws kinora::Error on a
// malformed file.
void print_info(const std::filesystem::path& path, std::ostream& out);
}  // namespace kinora::cli
