#pragma once
// What POP3 and SMTP share when a client authenticates: the SASL
// challenge/response exchange (RFC 5034, RFC 4954), the challenge and
// timestamp generator, and the brute-force accounting of a failure.
#include "popgate/auth/failure_tracker.hpp"
#include "popgate/proto/sasl.hpp"
#include "popgate/session/channel.hpp"
#include "popgate/store/write_queue.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace popgate::session {

// The brute-force defence and its audit trail.
struct auth_guard {
    auth::failure_tracker& failures;
    store::write_queue& writes;
};

// "<pid.time.random@host>", unique per call, the random part from OpenSSL:
// the APOP timestamp (RFC 1939 §7) and the CRAM-MD5 challenge (RFC 2195).
std::string unique_challenge(std::string_view host);

struct sasl_outcome {
    proto::sasl_step step;                       // the last step (check_*, failed, cancelled)
    io::read_status status = io::read_status::ok;  // not ok: ended early (too_long, or the peer is gone)
};

// Runs the exchange from the command's optional initial response to the
// mechanism's verdict: each challenge is written as `prompt` + base64 + CRLF
// ("+ " for POP3, "334 " for SMTP), each response read with the line limit
// raised to `max_line` (RFC 4954 §4 lifts the command limit for them).
// `at_prompt` is true while a response is awaited (the challenge written):
// the session's watchdog may then say its last words, as at the command
// prompt.
asio::awaitable<sasl_outcome> sasl_exchange(channel& ch, proto::sasl_server& sasl,
                                            std::optional<std::string_view> initial, std::string_view prompt,
                                            std::size_t max_line, bool& at_prompt);

// A failed authentication (wrong credentials, not a store failure): an
// audit row and one more failure for the address and the name (`kind`: only
// unknown names count toward a spray, auth::result::known_user). The caller
// logs the result (and the block, when now_blocked) in its protocol's words,
// then waits the delay with pause_after_failure.
// The delay runs from `started`, when the check began: the reply comes at
// started + delay whatever the check cost (crypt(3) of a cheap or a costly
// hash, a name with no hash at all), so its timing does not tell them apart
// while the check takes less than the delay.
auth::failure_tracker::failure_verdict record_auth_failure(auth_guard& g, server::connection const& c,
                                                           std::string const& user, auth::name_kind kind,
                                                           std::string audit_detail);
asio::awaitable<void> pause_after_failure(channel& ch, std::chrono::milliseconds delay, io::clock::time_point started);

// Whether the client's address, or `user` at that address (when the name is
// known yet), is refused by the brute-force defence, and for how long.
std::optional<auth::failure_tracker::block> auth_blocked(auth_guard& g, server::connection const& c,
                                                         std::string const& user = {});
// The same before a check of `user`'s credentials, which is then held in
// `reserve` as under way until its verdict (failure_tracker::attempt: record
// the failure, then release). While other checks under way would reach a
// limit if they failed, waits for them (a correct password beside a
// parallel one is not refused for their sake), up to a few seconds; still
// busy then, the answer is that busy block.
asio::awaitable<std::optional<auth::failure_tracker::block>> auth_admit(auth_guard& g, server::connection const& c,
                                                                        std::string const& user,
                                                                        auth::failure_tracker::attempt& reserve);
// "from your address" / "for this user from your address", for replies.
std::string_view blocked_what(auth::failure_tracker::block const& b) noexcept;
// The log line's fields of a block or a new block: "scope=user ..." etc.
std::string block_fields(auth::block_scope scope, std::string const& user);

// Counts one login in popgate_logins_total: `mech` as the log line has it
// ("pass", "sasl-plain", "PLAIN") becomes the lower-case mechanism name
// ("pass", "plain"), "" is "none" (refused before the mechanism was known);
// `result` is ok, fail, blocked or unavailable.
void count_login(std::string_view protocol, std::string_view mech, std::string_view result);

}  // namespace popgate::session
