// RFC 4648 base64 (with padding): bytes carried in JSON text (the agent's terminal streams).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace lab {

std::string Base64Encode(std::string_view bytes);
/// The bytes of `text`; nullopt when it is not base64.
std::optional<std::string> Base64Decode(std::string_view text);

}  // namespace lab
