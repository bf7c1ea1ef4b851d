#pragma once
// Samplers by name, for the CLI, presets and the app.
//
// A name can mean a sampler in each space: "euler" is flow_euler for a flow
// model (Wan, FLUX) and euler for a noise-prediction model (SDXL), "dpmpp_2m"
// likewise. The pipeline resolves a preset's name with the model's space.
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
  Space space = Space::Flow;  // the models it drives
};

// "flow-matching" or "noise-prediction".
const char* space_name(Space space);

// Flow samplers first, then the noise ones.
const std::vector<SchedulerEntry>& available_schedulers();
// By name or alias, a flow sampler where the name means one in each space;
// throws kinora::Error listing the known names.
std::unique_ptr<Scheduler> make_scheduler(std::string_view name);
// The canonical name for a name or alias; throws like make_scheduler.
std::string canonical_scheduler_name(std::string_view name);

// For a model of `space`: the sampler of that space by name or alias. Throws
// kinora::Error when the name is unknown, or names only a sampler of the other
// space (the message says so and lists this space's samplers).
std::unique_ptr<Scheduler> make_scheduler(std::string_view name, Space space);
std::string canonical_scheduler_name(std::string_view name, Space space);

// The name a preset keeps: the canonical name, or the name as given where it
// means a sampler in each space ("euler"), for the model's space to resolve.
// Throws like make_scheduler.
std::string preset_scheduler_name(std::string_view name);

}  // namespace kinora::schedulers
