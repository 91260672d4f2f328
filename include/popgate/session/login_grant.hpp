#pragma once
// The one way a login becomes a relay grant, whoever saw the login: popgate's
// own POP3 session and the Dovecot auth-policy report alike. The guard rails
// (relay::grant_issuer) decide whether it grants; the grant, what it
// replaces and the audit row are committed together before the call
// returns, so the caller answers only once an SMTP connection that follows
// would see it (DESIGN decision 4).
#include "popgate/config/config.hpp"
#include "popgate/net/ip.hpp"
#include "popgate/relay/grant_issuer.hpp"
#include "popgate/store/write_queue.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>

#include <string>
#include <string_view>

namespace popgate::session {

struct login_event {
    net::ip_address client;  // the address that logged in: the one granted
    std::string user;
    std::string method;      // relay_grants.method: pass, apop, sasl-*, dovecot-pop3, dovecot-imap
    bool tls = false;        // the login ran over TLS
    std::string listener;    // the listener that learnt of it
    bool listener_grants = true;  // its [[listener]] grant
    std::string_view via;    // first word of the audit detail: "pop3", "dovecot"
    bool client_named = true;  // server::connection::client_named
    // popgate's own login: the credentials it checked (auth::result::checked).
    std::optional<store::credentials> checked{};
};

// Plans the grant for `l` under the guard rails of `s` (on `blocking` when
// the plan reads a store that is a round trip away) and commits it (or the
// audit row saying why there is none). Throws store::store_error when
// nothing was committed.
boost::asio::awaitable<relay::grant_plan> commit_login_grant(boost::asio::thread_pool& blocking,
                                                             store::write_queue& writes,
                                                             relay::grant_issuer const& issuer, login_event const& l,
                                                             config::settings const& s);

}  // namespace popgate::session
