#include "schedulers/registry.h"

#include "base/error.h"
#include "schedulers/solvers.h"

namespace kinora::schedulers {

const std::vector<SchedulerEntry>& available_schedulers() {
  // Listed explicitly rather than self-registered from static initialisers, which
  // a static library silently drops when nothing references their object file.
  static const std::vector<SchedulerEntry> entries = {
      {"flow_unipc",
       {"unipc", "uni_pc_bh2"},
       "Wan's flow UniPC, order 2 (bh2), the Wan default",
       make_flow_unipc},
      {"flow_dpmpp_2m", {"dpm++", "dpmpp_2m"}, "Wan's flow DPM-Solver++ 2M", make_flow_dpmpp_2m},
      {"flow_euler",
       {"euler"},
       "flow-matching Euler (FLUX's sampler; Wan with shift)",
       make_flow_euler},
  };
  return entries;
}

namespace {
const SchedulerEntry& find_entry(std::string_view name) {
  for (const auto& e : available_schedulers()) {
    if (e.name == name) return e;
    for (const auto& a : e.aliases)
      if (a == name) return e;
  }
  std::string known;
  for (const auto& e : available_schedulers()) known += (known.empty() ? "" : ", ") + e.name;
  throw Error("unknown sampler '" + std::string(name) + "' (known: " + known + ")");
}
}  // namespace

std::unique_ptr<Scheduler> make_scheduler(std::string_view name) {
  return find_entry(name).create();
}
std::string canonical_scheduler_name(std::string_view name) {
  return find_entry(name).name;
}

}  // namespace kinora::schedulers
