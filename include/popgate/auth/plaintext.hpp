#pragma once
// auth.plaintext: whether a connection counts as secure enough for USER/PASS,
// AUTH PLAIN and AUTH LOGIN (the secret crosses the wire in a replayable form).
#include "popgate/config/config.hpp"
#include "popgate/net/ip.hpp"

namespace popgate::auth {

// The listener's `plaintext` if it has one, else auth.plaintext.
bool plaintext_allowed(config::settings const& s, config::listener const& l, bool tls_active,
                       net::ip_address const& peer) noexcept;

}  // namespace popgate::auth
