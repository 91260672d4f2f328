// The libFuzzer build links the parsers without the daemon, so without the
// protocol registry (daemon/protocols.cpp) that names the protocols a
// [[listener]] may use. The config fuzzer gets the same names here.
#include "popgate/config/config.hpp"

#include <array>

std::span<std::string_view const> popgate::config::listener_protocols() noexcept
{
    static constexpr std::array<std::string_view, 4> names{"pop3", "smtp", "policy", "http"};
    return names;
}
