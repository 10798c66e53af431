// Log lines on stderr (spdlog): `lab: warning: ...` as text, or one JSON object a line with
// --log-format json; -v lets the debug lines through (the executor's steps with their timings,
// the commands run inside machines, what drift observation found).
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "cli/cli.h"

namespace lab::cli {

namespace {

/// Fields beyond ts, level and msg for the line being logged on this thread (LogWith).
thread_local const nlohmann::json* t_fields = nullptr;
bool g_json_logs = false;

const char* LevelName(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace: return "trace";
    case spdlog::level::debug: return "debug";
    case spdlog::level::info: return "info";
    case spdlog::level::warn: return "warning";
    case spdlog::level::err: return "error";
    case spdlog::level::critical: return "critical";
    default: return "info";
  }
}

/// "2026-12-07T08:40:01.123Z" (UTC, milliseconds).
std::string Timestamp(std::chrono::system_clock::time_point t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm {};
  ::gmtime_r(&secs, &tm);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

/// {"ts","level","msg", ...fields}: one line, whatever the message holds (dump escapes newlines).
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    nlohmann::ordered_json line{{"ts", Timestamp(msg.time)},
                        {"level", LevelName(msg.level)},
                        {"msg", std::string(msg.payload.data(), msg.payload.size())}};
    if (t_fields)
      for (const auto& [k, v] : t_fields->items())
        if (!line.contains(k)) line[k] = nlohmann::ordered_json::parse(v.dump());
    // Invalid UTF-8 in a message (a command's output) is replaced, never a line that fails to parse.
    std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    dest.append(text.data(), text.data() + text.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

/// "lab: MESSAGE" for errors and information, "lab: warning: MESSAGE", "lab: debug: MESSAGE":
/// the words lab printed before it logged through spdlog, so scripts matching them still do.
class TextFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    std::string text = "lab: ";
    if (msg.level == spdlog::level::warn) text += "warning: ";
    else if (msg.level <= spdlog::level::debug) text += "debug: ";
    text.append(msg.payload.data(), msg.payload.size());
    text += "\n";
    dest.append(text.data(), text.data() + text.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<TextFormatter>(); }
};

}  // namespace

void SetUpLogging(const Globals& g) {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>("lab", sink);
  if (g.log_format == "json") logger->set_formatter(std::make_unique<JsonFormatter>());
  else logger->set_formatter(std::make_unique<TextFormatter>());
  // -q keeps warnings: what is wrong is never hidden, only what went well.
  logger->set_level(g.verbose ? spdlog::level::debug : g.quiet ? spdlog::level::warn : spdlog::level::info);
  g_json_logs = g.log_format == "json";
  logger->flush_on(spdlog::level::trace);  // each line as it happens: progress and pipes interleave
  spdlog::set_default_logger(logger);
}

bool JsonLogs() { return g_json_logs; }

void LogWith(spdlog::level::level_enum level, const std::string& message, const nlohmann::json& fields) {
  const nlohmann::json* before = t_fields;
  t_fields = &fields;
  spdlog::log(level, "{}", message);
  t_fields = before;
}

}  // namespace lab::cli
