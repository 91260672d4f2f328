#pragma once
// The rule of the relay decision as one pure function over facts already
// looked up (relay/policy.hpp gathers them and is what callers use). No I/O.
#include <string_view>

namespace popgate::proto {

enum class relay_verdict {
    local,            // recipient domain is ours: deliver into the Maildir
    relay_auth,       // SMTP AUTH in this session
    relay_grant,      // unexpired POP-before-SMTP grant for the client address
    relay_network,    // client inside an allowed network
    over_quota,       // the grant's hourly quota is used up: 452 4.7.1, never a relay
    deny,             // 554 5.7.1 <rcpt>: Relay access denied
    tempfail,         // the facts could not be read: 451 4.3.0, never a relay
};

struct relay_facts {
    bool local_domain = false;
    bool authenticated = false;
    bool auth_required = false;  // submission listener: grants and networks do not count
    bool has_grant = false;
    bool grant_over_quota = false;  // relaying this on the grant would pass its hourly quota
    bool in_network = false;
    bool local_needs_auth = false;  // a submission listener: local recipients need AUTH too (RFC 6409)
};

constexpr relay_verdict decide_relay(relay_facts const& f) noexcept
{
    if (f.local_domain) return f.local_needs_auth && !f.authenticated ? relay_verdict::deny : relay_verdict::local;
    if (f.authenticated) return relay_verdict::relay_auth;
    if (f.auth_required) return relay_verdict::deny;
    if (f.has_grant && !f.grant_over_quota) return relay_verdict::relay_grant;
    // An allowed network relays for its own reason, with no quota.
    if (f.in_network) return relay_verdict::relay_network;
    if (f.has_grant) return relay_verdict::over_quota;
    return relay_verdict::deny;
}

constexpr std::string_view to_string(relay_verdict v) noexcept
{
    switch (v) {
    case relay_verdict::local: return "local";
    case relay_verdict::relay_auth: return "auth";
    case relay_verdict::relay_grant: return "grant";
    case relay_verdict::relay_network: return "network";
    case relay_verdict::over_quota: return "quota";
    case relay_verdict::deny: return "denied";
    case relay_verdict::tempfail: return "error";
    }
    return "?";
}

}  // namespace popgate::proto
