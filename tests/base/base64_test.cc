// Base64 (base/base64.h), which carries terminal bytes in the agent's JSON messages: RFC 4648's
// test vectors, every byte value through a round trip, and text that is not base64 refused.
#include <catch2/catch.hpp>

#include <string>

#include "base/base64.h"

TEST_CASE("Base64 encodes RFC 4648's vectors and gives back every byte it was given", "[base]") {
  CHECK(lab::Base64Encode("") == "");
  CHECK(lab::Base64Encode("f") == "Zg==");
  CHECK(lab::Base64Encode("fo") == "Zm8=");
  CHECK(lab::Base64Encode("foo") == "Zm9v");
  CHECK(lab::Base64Encode("foob") == "Zm9vYg==");
  CHECK(lab::Base64Encode("fooba") == "Zm9vYmE=");
  CHECK(lab::Base64Encode("foobar") == "Zm9vYmFy");
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (size_t n : {size_t{1}, size_t{2}, size_t{3}, size_t{255}, size_t{256}}) {
    auto back = lab::Base64Decode(lab::Base64Encode(all.substr(0, n)));
    REQUIRE(back.has_value());
    CHECK(*back == all.substr(0, n));
  }
  CHECK(lab::Base64Decode("Zm9vYmFy") == std::optional<std::string>("foobar"));
  CHECK_FALSE(lab::Base64Decode("Zm9").has_value());    // not a multiple of 4
  CHECK_FALSE(lab::Base64Decode("Zm=v").has_value());   // data after padding
  CHECK_FALSE(lab::Base64Decode("Zm9v!A==").has_value());  // not of the alphabet
}
