#include "engine/checks.h"

#include "base/text.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include <spdlog/spdlog.h>

namespace lab::engine {

CheckOutcome Judge(const schema::Check& c, const Result<hv::ProbeAnswer>& answer) {
  CheckOutcome o;
  o.check = c;
  if (!answer) {
    o.observed = "error";
    o.reason = answer.message();
    return o;
  }
  const auto& a = *answer;
  if (a.ok) {
    switch (c.kind) {
      case schema::CheckKind::kPing: o.observed = "reply from " + a.value; break;
      case schema::CheckKind::kResolve: o.observed = "resolves to " + Join(Split(a.value, ' '), ", "); break;
      case schema::CheckKind::kTcp: o.observed = "connected"; break;
      case schema::CheckKind::kHttp: o.observed = "source " + a.value; break;
    }
  } else {
    o.observed = a.detail.empty() ? "failed" : a.detail;
  }
  if (!c.expect_success) {
    o.passed = !a.ok;
    if (!o.passed) o.reason = "expected failure, but it succeeded (" + o.observed + ")";
    return o;
  }
  if (!a.ok) {
    o.reason = o.observed;
    return o;
  }
  if (c.expect_address && (" " + a.value + " ").find(" " + c.expect_address->ToString() + " ") == std::string::npos) {
    o.reason = "address " + Join(Split(a.value, ' '), ", ") + ", expected " + c.expect_address->ToString();
    return o;
  }
  if (c.expect_source && a.value != c.expect_source->ToString()) {
    o.reason = "source " + a.value + ", expected " + c.expect_source->ToString();
    return o;
  }
  o.passed = true;
  return o;
}

std::vector<CheckOutcome> RunChecks(const std::vector<schema::Check>& checks,
                                    const std::map<std::string, hv::PartitionSpec>& machines,
                                    hv::Hypervisor& hv, int jobs) {
  std::vector<CheckOutcome> out(checks.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < checks.size(); i = next++) {
      const auto& c = checks[i];
      auto t0 = std::chrono::steady_clock::now();
      auto it = machines.find(c.from);
      CheckOutcome o;
      if (it == machines.end()) {
        o.check = c;
        o.observed = "error";
        o.reason = "machine '" + c.from + "' is not running in this lab";
      } else {
        hv::ProbeRequest req{schema::ToString(c.kind), c.target, c.timeout_ms};
        const int attempts = 1 + std::max(0, c.retries);
        for (int attempt = 1; attempt <= attempts; ++attempt) {
          auto ta = std::chrono::steady_clock::now();
          auto answer = hv.Probe(it->second, req);
          o = Judge(c, answer);
          o.attempts = attempt;
          // -v: the probe run inside the machine and what it answered.
          spdlog::debug("check {}: inside '{}': {} {} (timeout {} ms), attempt {}/{}: {} in {:.1f} ms", i + 1, c.from,
                        req.kind, req.target, req.timeout_ms, attempt, attempts,
                        answer ? (answer->ok ? "answered " + answer->value : "no answer: " + answer->detail)
                               : "error: " + answer.message(),
                        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - ta).count());
          // An expected failure is not retried: retrying would only wait longer for the same answer.
          // Nor is the last attempt followed by a pause: nothing comes after it.
          if (o.passed || !c.expect_success || attempt == attempts) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
      }
      o.millis = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      out[i] = std::move(o);
    }
  };
  std::vector<std::thread> pool;
  for (int i = 0; i < std::max(1, jobs); ++i) pool.emplace_back(work);
  for (auto& t : pool) t.join();
  return out;
}

}  // namespace lab::engine
