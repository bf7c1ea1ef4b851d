#pragma once
// The project's one exception type for bad input and failed operations.
//
// Every message names what was wrong and where (a file, a key, a field), so that
// the CLI can print it as it is and the app can show it on a job. Code that
// catches c10::Error (TORCH_CHECK) at a boundary converts it with rethrow_as().
#include <atomic>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace kinora {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Thrown where a job polls its cancel token (a std::atomic<bool>, set by the
// studio's Cancel or a signal: base/signals.h) and finds it set; whatever the
// job was writing has been removed by then.
class Cancelled : public Error {
 public:
  Cancelled() : Error("cancelled; no output was written") {}
};

// Polls a cancel token (null: never cancelled).
inline void throw_if_cancelled(const std::atomic<bool>* token) {
  if (token && token->load()) throw Cancelled();
}

// "FILE: what" — the form every file-related message takes.
[[noreturn]] void fail_file(const std::filesystem::path& file, const std::string& what);

}  // namespace kinora
