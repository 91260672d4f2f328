#include "popgate/proto/smtpd_policy.hpp"

#include "popgate/proto/ascii.hpp"

#include <algorithm>
#include <array>
#include <utility>

namespace popgate::proto {
namespace {

// The attributes popgate reads, each with its member and its bit in `seen`.
struct known_attribute {
    std::string_view name;
    std::string policy_request::*member;
};
constexpr std::array<known_attribute, 6> known{{
    {"request", &policy_request::request},
    {"protocol_state", &policy_request::protocol_state},
    {"client_address", &policy_request::client_address},
    {"sasl_username", &policy_request::sasl_username},
    {"recipient", &policy_request::recipient},
    {"instance", &policy_request::instance},
}};

}  // namespace

result<policy_line> policy_add_line(policy_request& r, std::string_view line)
{
    if (line.size() + 1 > policy_max_line) return errc::line_too_long;
    if (line.empty()) return policy_line::end;
    if (line.find('\0') != std::string_view::npos) return errc::nul_byte;
    if (r.attributes >= policy_max_attributes) return errc::too_many_attributes;
    auto const eq = line.find('=');
    if (eq == std::string_view::npos || eq == 0) return errc::bad_attribute;
    ++r.attributes;
    auto const name = line.substr(0, eq);
    for (std::size_t i = 0; i < known.size(); ++i) {
        if (name != known[i].name) continue;
        unsigned const bit = 1u << i;
        // Postfix never repeats one; which of two client_address lines
        // would be meant is anybody's guess.
        if (r.seen & bit) return errc::bad_attribute;
        r.seen |= bit;
        r.*(known[i].member) = line.substr(eq + 1);
        break;
    }
    return policy_line::attribute;
}

policy_scope policy_scope_of(policy_request const& r) noexcept
{
    if (!r.request.empty() && r.request != policy_request_type) return policy_scope::other_request;
    if (!r.protocol_state.empty() && !iequals(r.protocol_state, "RCPT")) return policy_scope::other_state;
    return policy_scope::relay;
}

std::string policy_action(relay_verdict v, std::string_view ok_action)
{
    switch (v) {
    case relay_verdict::relay_auth:
    case relay_verdict::relay_grant:
    case relay_verdict::relay_network: return std::string(ok_action);
    case relay_verdict::tempfail: return "DEFER_IF_REJECT 4.3.0 Temporary lookup failure, try again later";
    // Past the grant's hourly quota: a relay attempt is deferred (what the
    // MTA would reject becomes 450), mail for the MTA's own domains passes.
    case relay_verdict::over_quota:
        return "DEFER_IF_REJECT 4.7.1 Relay quota exceeded for your address, try again later";
    case relay_verdict::local:
    case relay_verdict::deny: break;
    }
    return std::string(policy_dunno);
}

std::string policy_violation_action(boost::system::error_code e)
{
    char const* why = "malformed request";
    if (e == errc::line_too_long) why = "request line too long";
    if (e == errc::too_many_attributes) why = "too many attributes in the request";
    return std::string("DEFER_IF_REJECT 4.3.5 Policy request refused: ") + why;
}

std::string policy_answer(std::string_view action)
{
    std::string out;
    out.reserve(action.size() + 9);
    out += "action=";
    out += action;
    out += "\n\n";
    return out;
}

bool policy_action_valid(std::string_view a) noexcept
{
    if (a.empty() || a.size() > 200 || a.front() == ' ' || a.back() == ' ') return false;
    if (!std::all_of(a.begin(), a.end(), [](char c) { return c >= 0x20 && c < 0x7f; })) return false;
    auto const digit = [](char c) { return c >= '0' && c <= '9'; };
    if (std::all_of(a.begin(), a.end(), digit)) return true;  // "an all-numerical result is treated as OK"
    auto const word = a.substr(0, a.find_first_of(" \t"));
    return iequals(word, "OK") || iequals(word, "PERMIT");
}

}  // namespace popgate::proto
