#pragma once
// The one way a login becomes a relay grant, whoever saw the login: popgate's
// own POP3 session and the Dovecot auth-policy report alike. The grant row
// and its audit row are committed together before the call returns, so the
// caller answers only once an SMTP connection that follows would see it
// (DESIGN decision 4).
#include "popgate/net/ip.hpp"
#include "popgate/relay/decider.hpp"
#include "popgate/store/write_queue.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <string>

namespace popgate::session {

struct login_event {
    net::ip_address client;  // the address that logged in: the one granted
    std::string client_text; // as logged and audited
    std::string user;
    std::string method;      // relay_grants.method: pass, apop, sasl-*, dovecot-pop3, dovecot-imap
    bool tls = false;        // the login ran over TLS
    std::string listener;    // the listener that learnt of it
    std::string source;      // first word of the audit detail: "pop3", "dovecot"
};

// Writes the grant for `l` (its key: relay::decider::grant_keys) valid for
// `ttl`, with an audit row, and returns it once committed. Throws
// store::store_error when it was not committed.
boost::asio::awaitable<store::grant> commit_login_grant(store::write_queue& writes, relay::decider const& grants,
                                                        login_event const& l, std::chrono::seconds ttl);

// "2026-12-03T12:00:00Z", as the logs and audit rows show times.
std::string iso_utc(store::unix_time t);

}  // namespace popgate::session
