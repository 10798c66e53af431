#include "engine/drift.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "engine/executor.h"

namespace lab::engine {

hv::ObserveRequest ObserveRequestFor(const state::Snapshot& snap) {
  hv::ObserveRequest req;
  for (const auto& entry : snap.resources) {
    // Not a structured binding: clang 14 (the sanitizer build) cannot capture one in a lambda.
    const std::string& key = entry.first;
    const auto& rec = entry.second;
    if (IsPending(rec.facts)) continue;
    auto r = Resource::FromRecordJson(key, rec.spec);
    if (!r) continue;
    auto add = [&](auto& list) {
      using Spec = decltype(list.front().spec);
      list.push_back({key, r->spec.get<Spec>(), rec.facts});
    };
    switch (r->kind) {
      case Kind::kNetwork: add(req.networks); break;
      case Kind::kPartition: add(req.partitions); break;
      case Kind::kNic: add(req.nics); break;
      case Kind::kSwitch: add(req.switches); break;
      case Kind::kAdapter: add(req.adapters); break;
      case Kind::kNat: add(req.nats); break;
      case Kind::kDns: add(req.dns); break;
      case Kind::kStandIn: add(req.standins); break;
      case Kind::kRun: break;  // commands that ran: nothing to observe
    }
  }
  return req;
}

Observed ObserveDrift(hv::Hypervisor& hv, const state::Snapshot& snap,
                      const std::vector<state::JournalEntry>& interrupted, hv::Seen* seen) {
  Observed found;
  for (const auto& [key, rec] : snap.resources)
    if (IsPending(rec.facts)) found.insert(key, "interrupted while being made");
  for (const auto& e : interrupted) {
    if (!snap.resources.count(e.key)) continue;  // begun but nothing recorded: nothing was made
    std::string done = e.action == "delete" ? "removed" : e.action == "update" ? "updated" : "made";
    found.insert(e.key, "interrupted while being " + done);
  }
  hv::ObserveRequest req = ObserveRequestFor(snap);
  req.seen = seen;
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& [key, f] : hv.Observe(req)) found.insert(key, f.what, f.in_place);
  // -v: what observation saw, the objects looked at and each one found drifted.
  spdlog::debug("observed {} recorded objects in {:.1f} ms: {} drifted", snap.resources.size(),
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(),
                found.all().size());
  for (const auto& [key, what] : found.all())
    spdlog::debug("observed {}: {}{}", key, what.empty() ? "not running" : what,
                  found.in_place(key) ? " (settings only: repaired in place)" : "");
  return found;
}

}  // namespace lab::engine
