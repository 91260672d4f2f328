#pragma once
// The one place a successful login becomes a relay grant, for every writer
// of login grants (POP3 logins here, Dovecot's auth-policy reports): the
// guard rails of [relay] and [[listener]] grant decide whether the login
// grants, and the plan holds the writes to commit as one unit.
//   listener grant = false       -> no grant, reason=listener
//   relay.no_grant_networks      -> no grant, reason=no-grant-network
//   relay.grant_requires_tls     -> no grant, reason=no-tls
//   relay.max_grants_per_user    -> the user's oldest grants are revoked in
//                                   the same transaction (replace-oldest), or
//                                   no grant, reason=max-grants-per-user
// The login itself succeeds whatever the plan; without a grant the user can
// still relay with SMTP AUTH. Each outcome leaves an audit row ('grant', or
// 'no-grant' with the reason).
#include "popgate/config/config.hpp"
#include "popgate/net/ip.hpp"
#include "popgate/relay/decider.hpp"
#include "popgate/store/store.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace popgate::relay {

struct login_facts {
    net::ip_address client;
    std::string user;
    std::string method;       // pass | apop | sasl-plain ... (relay_grants.method)
    bool tls = false;         // the login ran over TLS
    std::string listener;     // its name
    bool listener_grants = true;  // [[listener]] grant
    std::string_view via = "pop3";  // the login's protocol, for the audit detail
    // false: the address is a proxy's own, its header having named no
    // client (server::connection::client_named); never granted.
    bool client_named = true;
    // The credentials the login checked, when popgate checked them.
    std::optional<store::credentials> checked{};
};

enum class no_grant_reason { none, listener, no_client_address, no_grant_network, no_tls, max_grants_per_user };
std::string_view to_string(no_grant_reason r) noexcept;

struct grant_plan {
    no_grant_reason refused = no_grant_reason::none;
    store::grant grant;                  // what is written unless refused
    std::vector<std::string> replaced;   // replace-oldest: the grants it revokes, as last read
    // The grant (ops[0], when granted), the cap on the user's grants, the
    // audit row: commit them together (write_queue::commit).
    std::vector<store::write_op> ops;
    // For the login's log line: "grant=192.0.2.7 grant_until=..." or
    // "grant=no reason=no-tls".
    std::string log_fields;
};

class grant_issuer {
public:
    grant_issuer(decider const& d, store::store& db) : decider_(d), db_(db) {}
    // Whether plan() may run on an I/O thread: it reads the store only for
    // max_grants_per_user, and a PostgreSQL read is a round trip.
    bool in_place(config::settings const& s) const noexcept
    {
        return s.max_grants_per_user == 0 || !db_.crosses_network();
    }

    // Blocking but short: one indexed read of the user's grants when
    // max_grants_per_user is set, none otherwise. Throws store_error.
    grant_plan plan(login_facts const& l, config::settings const& s) const;

private:
    decider const& decider_;
    store::store& db_;
};

// Counts a committed plan: popgate_grants_withheld_total by the guard rail
// that withheld the grant, popgate_grants_replaced_total by the grants
// replace-oldest revoked. `via` is login_facts::via (pop3, dovecot).
void count_grant_plan(grant_plan const& p, std::string_view via);

// "2026-12-03T12:00:00Z"
std::string iso_utc(store::unix_time t);

}  // namespace popgate::relay
