#pragma once
// Factories of the built-in solvers, one per file; the registry lists them.
#include <memory>

#include "schedulers/scheduler.h"

namespace kinora::schedulers {
std::unique_ptr<Scheduler> make_flow_euler();
std::unique_ptr<Scheduler> make_flow_unipc();
std::unique_ptr<Scheduler> make_flow_dpmpp_2m();
std::unique_ptr<Scheduler> make_euler();
std::unique_ptr<Scheduler> make_euler_ancestral();
std::unique_ptr<Scheduler> make_dpmpp_2m();
std::unique_ptr<Scheduler> make_dpmpp_2m_karras();
}  // namespace kinora::schedulers
