#pragma once
// Gathers the grant and network facts for proto::decide_relay from the store: the client's grant
// (indexed read, every time, so a row written or deleted with sqlite3 counts at
// the next RCPT) and the allowed networks (held in memory, reloaded whenever the
// network_generation counter that triggers bump has moved).
#include "popgate/net/ip.hpp"
#include "popgate/proto/policy.hpp"
#include "popgate/relay/quota.hpp"
#include "popgate/store/store.hpp"

#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace popgate::relay {

struct decision {
    proto::relay_verdict verdict = proto::relay_verdict::deny;
    std::string detail;                // "user=alice" / "network=192.0.2.0/24" / "no grant or network"
    std::string grant_address;         // set when a grant decided it (to count the hit)
    quota_use quota;                   // the grant's quota use (relay_grant, over_quota)
    std::string reason;                // over_quota: the limit, for the client's reply
};

// What the quota check needs of the request: whether this recipient starts a
// message on the grant (the transaction has none relayed on it yet), and the
// limits.
struct quota_request {
    bool new_message = true;
    quota_limits limits;
};

class decider {
public:
    decider(store::store& db, unsigned ipv6_prefix) : db_(db), ipv6_prefix_(ipv6_prefix) {}

    // SIGHUP: read by I/O threads at the same time, hence atomic.
    void set_ipv6_prefix(unsigned p) noexcept { ipv6_prefix_.store(p, std::memory_order_relaxed); }
    // relay.no_grant_networks (at start and SIGHUP). An IPv6 client in one
    // relays on a grant of its own address only, never on its prefix's: a
    // login elsewhere in a wider ipv6_prefix must not let a guest network
    // relay.
    void set_no_grant_networks(std::vector<net::cidr> nets);

    // The verdict of proto::decide_relay over the facts of this client and
    // recipient domain; for a local domain no lookup is made (relay::policy
    // finds the mailbox). Blocking but short (indexed reads); throws
    // store_error if the database is unusable, which the caller answers with
    // a 451 (never a relay).
    // A grant's quota use is counted here, in the same step as the check.
    // An unnamed client (relay::request::client_named) relays by AUTH only.
    decision decide(net::ip_address const& client, bool authenticated, bool auth_required,
                    bool local_domain = false, bool local_needs_auth = false, quota_request const& quota = {},
                    bool client_named = true);

    // The grant keys of a client: its grant_key and, for IPv6, its full address
    // (that alone in a no-grant network).
    std::vector<std::string> grant_keys(net::ip_address const& client) const;

    // Logs one warning per stored row that decisions cannot use as written,
    // the first time it is seen (a row changed or added again is seen anew):
    // a network ignored (host bits under the prefix, or no network at all),
    // a network spelt other than canonically (used as what it means), an
    // unexpired IPv6 grant spelt other than canonically (it never matches:
    // grants are looked up by the canonical text). Networks are checked at
    // every reload of the list anyway; this also reloads it if it changed.
    // Grants only here: one read of the IPv6 grant addresses (IPv4 ones are
    // canonical by the table rules), which the daemon does at start and at
    // every purge. Blocking.
    void check_rows();

private:
    struct net_entry {
        net::cidr net;
        std::optional<store::unix_time> expires_at;
        std::string text;
    };
    std::optional<std::string> find_network(net::ip_address const& client, store::unix_time now);
    void reload_networks_locked(std::int64_t generation);  // under mutex_; nothing if unchanged

    // Networks grouped by (family, prefix length), each group keyed by its
    // base address: a lookup masks the client once per distinct prefix length
    // instead of testing every row (10,000 rows cost a third of the decision
    // rate as a linear scan; see bench/README.md).
    struct bucket {
        bool v4 = false;
        unsigned prefix = 0;
        std::map<net::ip_address, std::vector<net_entry>> by_base;
    };

    store::store& db_;
    std::atomic<unsigned> ipv6_prefix_;
    quota_book quota_;
    std::mutex mutex_;
    std::int64_t generation_ = -1;
    std::vector<bucket> buckets_;
    // Rows already warned about, as (id, cidr) and as grant address: each
    // warning is logged once, not at every reload or purge.
    std::set<std::pair<std::int64_t, std::string>> warned_networks_;  // under mutex_
    std::mutex grants_mutex_;
    std::set<std::string> warned_grants_;  // under grants_mutex_
    mutable std::mutex no_grant_mutex_;
    std::vector<net::cidr> no_grant_networks_;  // under no_grant_mutex_
};

}  // namespace popgate::relay
