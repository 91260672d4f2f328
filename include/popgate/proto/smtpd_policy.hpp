#pragma once
// Postfix SMTPD access policy delegation (Postfix SMTPD_POLICY_README), the
// protocol of `check_policy_service`: the client sends `name=value` lines,
// each ended by LF, then an empty line; the server answers one
// `action=...` line and an empty line, and keeps the connection for the
// next request. Pure: lines in (the LF already stripped), the request and
// the answer out; no I/O. The session is session/policy.
#include "popgate/proto/errc.hpp"
#include "popgate/proto/policy.hpp"

#include <cstddef>
#include <string>
#include <string_view>

namespace popgate::proto {

// One line, LF included. Postfix's longest values (a client certificate's
// subject, an address of 254 octets with its local part) fit with room.
inline constexpr std::size_t policy_max_line = 4096;
// name=value lines in one request; Postfix 3.7 sends about 35.
inline constexpr std::size_t policy_max_attributes = 100;

// What Postfix sends: request=smtpd_access_policy.
inline constexpr std::string_view policy_request_type = "smtpd_access_policy";

// The attributes popgate reads from one request; the others are counted
// and ignored.
struct policy_request {
    std::string request;         // "smtpd_access_policy"; "" when not sent
    std::string protocol_state;  // "RCPT", "DATA", ...; "" when not sent
    std::string client_address;
    std::string sasl_username;   // "" when the client did not authenticate at the MTA
    std::string recipient;
    std::string instance;        // Postfix: the same for every request of one message
    std::size_t attributes = 0;  // name=value lines so far
    unsigned seen = 0;           // which of the six above were sent (a second one is refused)
};

enum class policy_line { attribute, end };

// Adds one line (LF stripped) to `r`. `end`: the empty line, the request is
// complete (an empty line before any attribute is an empty request, also
// `end`). Errors: bad_attribute (no '=', an empty name, one of popgate's
// five attributes twice), too_many_attributes (more than
// policy_max_attributes), line_too_long (more than policy_max_line with its
// LF), nul_byte.
result<policy_line> policy_add_line(policy_request& r, std::string_view line);

// Whether a complete request asks what popgate answers: may this client
// relay? Only at RCPT: Postfix's protocol_state, or none given (a minimal
// client, such as an Exim ${readsocket} that sends only client_address).
enum class policy_scope { relay, other_request, other_state };
policy_scope policy_scope_of(policy_request const& r) noexcept;

// No opinion: Postfix goes on with its next restriction.
inline constexpr std::string_view policy_dunno = "DUNNO";

// The action for a relay verdict. A client that may relay (grant, allowed
// network, SASL at the MTA) gets `ok_action` (a listener's
// policy_action_ok, "OK" by default). Any other verdict is DUNNO: popgate
// has no grant for it, and Postfix's later restrictions decide (its own
// domains are accepted, the rest meets reject_unauth_destination). When the
// facts could not be read: DEFER_IF_REJECT, so that what Postfix would
// refuse (a relay attempt) is deferred with a 4xx and retried, while what
// it accepts anyway (mail to its own domains) is not held up.
// (DEFER_IF_PERMIT would not do: a later reject_unauth_destination turns it
// into a permanent 554 for a client whose grant could not be read.)
std::string policy_action(relay_verdict v, std::string_view ok_action);

// The action for a request that broke the protocol (the connection is then
// closed): the same tempfail class as an unreadable database, so a real
// request that outgrew a limit is retried, never refused for good.
std::string policy_violation_action(boost::system::error_code e);

// "action=<action>\n\n".
std::string policy_answer(std::string_view action);

// Whether `a` can be policy_action_ok: 1 to 200 printable ASCII characters,
// no leading or trailing space, and an action with which Postfix accepts
// (access(5)): OK or PERMIT (any case, text after it allowed) or a number
// alone. Any other action (PREPEND, FILTER, DUNNO ...) lets Postfix go on
// to reject_unauth_destination, which refuses the granted client.
bool policy_action_valid(std::string_view a) noexcept;

}  // namespace popgate::proto
