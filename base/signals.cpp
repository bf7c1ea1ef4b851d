#include "base/signals.h"

#include <signal.h>
#include <unistd.h>

#include "base/files.h"

namespace kinora {

namespace {
std::atomic<bool> g_cancel{false};
std::atomic<int> g_signal{0};

void on_signal(int sig) {
  if (g_cancel.exchange(true)) {
    remove_registered_temporaries_from_signal_handler();
    ::_exit(128 + sig);
  }
  g_signal.store(sig);
}
}  // namespace

std::atomic<bool>& cancel_requested() {
  return g_cancel;
}

void install_cancel_signals() {
  struct sigaction sa = {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  ::signal(SIGXFSZ, SIG_IGN);
}

int cancel_signal() {
  return g_signal.load();
}

int cancel_exit_status() {
  const int sig = g_signal.load();
  return 128 + (sig ? sig : SIGINT);
}

}  // namespace kinora
