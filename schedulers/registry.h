#pragma once
// Samplers by name, for the CLI, presets and the app.
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "schedulers/scheduler.h"

namespace kinora::schedulers {

struct SchedulerEntry {
  std::string name;                  // canonical name, stored in presets
  std::vector<std::string> aliases;  // other accepted spellings (Wan's --sample_solver names)
  std::string description;
  std::function<std::unique_ptr<Scheduler>()> create;
};

const std::vector<SchedulerEntry>& available_schedulers();
// By name or alias; throws kinora::Error listing the known names.
std::unique_ptr<Scheduler> make_scheduler(std::string_view name);
// The canonical name for a name or alias; throws like make_scheduler.
std::string canonical_scheduler_name(std::string_view name);

}  // namespace kinora::schedulers
