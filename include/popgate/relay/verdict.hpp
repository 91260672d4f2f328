#pragma once
// What the relay decision (relay/policy.hpp) is asked and what it answers:
// plain data, so that pure session code can turn a verdict into a reply.
#include "popgate/net/ip.hpp"
#include "popgate/proto/policy.hpp"

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace popgate::relay {

// Who asks. popgate's own SMTP listener decides for its own local domains
// too, and a refusal is final (a "deny" audit row). Another MTA asking over
// the policy listener asks only whether the client may relay: its own
// domains are its business, not mail.local_domains, and a "no" is no
// refusal (its later restrictions decide; most such requests are inbound
// mail to its own domains), so it leaves no audit row.
enum class asker { smtp_listener, mta };

struct request {
    net::ip_address client;
    std::string_view local_part;  // of the recipient, unquoted
    std::string_view domain;      // "" for <postmaster>
    std::string_view address;     // the recipient as written in logs and the audit
    bool authenticated = false;   // SMTP AUTH succeeded in this session
    bool auth_required = false;   // the listener relays for AUTH only
    bool local_needs_auth = false;  // ... and delivers locally for AUTH only
    // No recipient of this transaction has been relayed on a grant yet: if
    // this one is, it counts a message against the grant's quota.
    bool new_message = true;
    asker from = asker::smtp_listener;
    // false: `client` is a trusted proxy's own address, which a PROXY header
    // that named no client left (server::connection::client_named). It
    // stands for every client reaching the proxy that way, so neither a
    // grant nor an allowed network of that address relays for them.
    bool client_named = true;
};

// A local recipient's mailbox (verdict local).
struct mailbox {
    std::string user;
    std::filesystem::path maildir;
};

struct verdict {
    proto::relay_verdict what = proto::relay_verdict::deny;
    // For the log: "user=alice", "grant_user=alice grant=192.0.2.7",
    // "network=192.0.2.0/24", "sasl", "no grant or network", "unknown-user",
    // or the store's error (tempfail).
    std::string detail;
    std::optional<mailbox> box;  // local: the mailbox; unset = no such user (550)
    // over_quota: the limit passed, for the client ("3 messages per hour").
    std::string reason;
};

}  // namespace popgate::relay
