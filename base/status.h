// Status and Result<T>: errors as values across the layers.
//
// A Status is either ok or carries one human-readable message that already says what went
// wrong with which object and, where there is one, what to do about it. Result<T> is a value
// or such a message. Exceptions stop at the edge where a library throws them.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace lab {

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  static Status Error(std::string message) { return Status(std::move(message)); }

  bool ok() const { return !message_.has_value(); }
  explicit operator bool() const { return ok(); }
  /// The error message; empty when ok.
  const std::string& message() const {
    static const std::string kEmpty;
    return message_ ? *message_ : kEmpty;
  }
  /// A copy of this error with `context: ` put in front of the message.
  Status Prefixed(const std::string& context) const {
    return ok() ? *this : Status(context + ": " + *message_);
  }

 private:
  explicit Status(std::string message) : message_(std::move(message)) {}
  std::optional<std::string> message_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}            // NOLINT: implicit by design
  Result(Status error) : v_(std::move(error)) { assert(!std::get<Status>(v_).ok()); }  // NOLINT

  bool ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  /// The error; an ok Status when this holds a value.
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(v_); }
  const std::string& message() const {
    static const std::string kEmpty;
    return ok() ? kEmpty : std::get<Status>(v_).message();
  }

 private:
  std::variant<T, Status> v_;
};

/// errno as text, e.g. "No such file or directory".
std::string ErrnoText(int err);
/// Status::Error("WHAT: strerror(errno)") with the current errno.
Status ErrnoStatus(const std::string& what);

}  // namespace lab

#define LAB_RETURN_IF_ERROR(expr)             \
  do {                                        \
    ::lab::Status lab_status_ = (expr);       \
    if (!lab_status_.ok()) return lab_status_; \
  } while (0)
