#include "base/error.h"

namespace kinora {

void fail_file(const std::filesystem::path& file, const std::string& what) {
  throw Error(file.string() + ": " + what);
}

}  // namespace kinora
