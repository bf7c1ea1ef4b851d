#include "schedulers/registry.h"

#include "base/error.h"
#include "schedulers/solvers.h"

namespace kinora::schedulers {

const char* space_name(Space space) {
  return space == Space::Flow ? "flow-matching" : "noise-prediction";
}

const std::vector<SchedulerEntry>& available_schedulers() {
  // Listed explicitly rather than self-registered from static initialisers, which
  // a static library silently drops when nothing references their object file.
  static const std::vector<SchedulerEntry> entries = {
      {"flow_unipc",
       {"unipc", "uni_pc_bh2"},
       "Wan's flow UniPC, order 2 (bh2), the Wan default",
       make_flow_unipc,
       Space::Flow},
      {"flow_dpmpp_2m",
       {"dpm++", "dpmpp_2m"},
       "Wan's flow DPM-Solver++ 2M",
       make_flow_dpmpp_2m,
       Space::Flow},
      {"flow_euler",
       {"euler"},
       "flow-matching Euler (FLUX's sampler; Wan with shift)",
       make_flow_euler,
       Space::Flow},
      {"euler", {}, "Euler for noise-prediction models (SDXL), ε or v", make_euler, Space::Noise},
      {"euler_ancestral",
       {"euler_a"},
       "Euler ancestral for noise-prediction models: fresh noise each step, from the seed",
       make_euler_ancestral,
       Space::Noise},
      {"dpmpp_2m", {}, "DPM-Solver++ 2M for noise-prediction models", make_dpmpp_2m, Space::Noise},
      {"dpmpp_2m_karras",
       {},
       "DPM-Solver++ 2M with Karras sigmas for noise-prediction models, the SDXL default",
       make_dpmpp_2m_karras,
       Space::Noise},
  };
  return entries;
}

namespace {
bool matches(const SchedulerEntry& e, std::string_view name) {
  if (e.name == name) return true;
  for (const auto& a : e.aliases)
    if (a == name) return true;
  return false;
}

const SchedulerEntry* find_in(std::string_view name, Space space) {
  for (const auto& e : available_schedulers())
    if (e.space == space && matches(e, name)) return &e;
  return nullptr;
}

std::string names_of(const Space* space) {
  std::string known;
  for (const auto& e : available_schedulers())
    if (!space || e.space == *space) known.append(known.empty() ? "" : ", ").append(e.name);
  return known;
}

[[noreturn]] void unknown(std::string_view name) {
  throw Error(std::string("unknown sampler '")
                  .append(name)
                  .append("' (known: ")
                  .append(names_of(nullptr))
                  .append(")"));
}

const SchedulerEntry& find_entry(std::string_view name) {
  if (const auto* e = find_in(name, Space::Flow)) return *e;
  if (const auto* e = find_in(name, Space::Noise)) return *e;
  unknown(name);
}

const SchedulerEntry& find_entry(std::string_view name, Space space) {
  if (const auto* e = find_in(name, space)) return *e;
  const Space other = space == Space::Flow ? Space::Noise : Space::Flow;
  if (find_in(name, other))
    throw Error(std::string("sampler '")
                    .append(name)
                    .append("' is for ")
                    .append(space_name(other))
                    .append(" models, and this model is a ")
                    .append(space_name(space))
                    .append(" model; its samplers: ")
                    .append(names_of(&space)));
  unknown(name);
}
}  // namespace

std::unique_ptr<Scheduler> make_scheduler(std::string_view name) {
  return find_entry(name).create();
}
std::string canonical_scheduler_name(std::string_view name) {
  return find_entry(name).name;
}
std::unique_ptr<Scheduler> make_scheduler(std::string_view name, Space space) {
  return find_entry(name, space).create();
}
std::string canonical_scheduler_name(std::string_view name, Space space) {
  return find_entry(name, space).name;
}

std::string preset_scheduler_name(std::string_view name) {
  const auto* flow = find_in(name, Space::Flow);
  const auto* noise = find_in(name, Space::Noise);
  if (flow && noise && flow != noise) return std::string(name);
  return find_entry(name).name;
}

}  // namespace kinora::schedulers
