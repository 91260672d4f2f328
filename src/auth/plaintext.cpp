#include "popgate/auth/plaintext.hpp"

namespace popgate::auth {

bool plaintext_allowed(config::settings const& s, config::listener const& l, bool tls_active,
                       net::ip_address const& peer) noexcept
{
    switch (l.plaintext.value_or(s.plaintext)) {
    case config::plaintext_policy::always: return true;
    case config::plaintext_policy::never: return false;
    case config::plaintext_policy::tls_only: return tls_active || (s.loopback_is_secure && peer.is_loopback());
    }
    return false;
}

}  // namespace popgate::auth
