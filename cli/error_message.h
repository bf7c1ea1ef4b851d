#pragma once
// What the command line prints for an exception a command ends with: a
// kinora::Error's message as it is; LibTorch's (c10::Error, whose what()
// carries a C++ backtrace) by its first line only, and an allocation that
// failed (LibTorch's or the C++ library's) as "out of memory".
#include <c10/util/Exception.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
#include <string>

namespace kinora::cli {

inline std::string error_message(const std::exception& e) {
  const auto* torch_error = dynamic_cast<const c10::Error*>(&e);
  const bool bad_alloc = dynamic_cast<const std::bad_alloc*>(&e) != nullptr;
  if (!torch_error && !bad_alloc) return e.what();
  std::string what = torch_error ? torch_error->what_without_backtrace() : e.what();
  what = what.substr(0, what.find('\n'));
  if (const auto at = what.find("DefaultCPUAllocator: "); at != std::string::npos)
    what.erase(0, at + 21);
  if (bad_alloc) return "out of memory; nothing was written";
  if (what.find("out of memory") != std::string::npos)  // CUDA's
    return "out of memory on the GPU: " + what + "; nothing was written";
  const std::string tried = "you tried to allocate ";
  if (const auto at = what.find(tried);
      what.find("can't allocate memory") != std::string::npos && at != std::string::npos) {
    const double bytes = std::strtod(what.c_str() + at + tried.size(), nullptr);
    char size[64];
    std::snprintf(size, sizeof size, "%.2f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
    std::string msg = "out of memory: ";
    msg.append(size).append(" could not be allocated; nothing was written");
    return msg;
  }
  if (what.find("can't allocate memory") != std::string::npos)
    return "out of memory: " + what + "; nothing was written";
  return "LibTorch: " + what;
}

}  // namespace kinora::cli
