#include "conformance/components.h"

namespace kinora::conformance {

std::optional<Component> find_component(const std::string& name) {
  static const std::map<std::string, Component> all = [] {
    std::map<std::string, Component> m;
    add_scheduler_components(m);
    add_text_components(m);
    add_wan_components(m);
    add_flux_components(m);
    add_sdxl_components(m);
    return m;
  }();
  const auto it = all.find(name);
  if (it == all.end()) return std::nullopt;
  return it->second;
}

}  // namespace kinora::conformance
