#pragma once
// The one relay decision. Every path that asks "may this client send to this
// recipient?" calls relay::policy::decide: the SMTP listener at each RCPT
// today, a policy listener or any other integration tomorrow. It gathers the
// facts (local domain and mailbox, SMTP AUTH, an unexpired grant, an allowed
// network), applies proto::decide_relay, and records its own effects: a grant
// hit (touch) when a grant decided it, a deny row in the audit log when it
// refused. It never throws for a store failure: that is the tempfail verdict.
#include "popgate/config/config.hpp"
#include "popgate/net/ip.hpp"
#include "popgate/proto/policy.hpp"
#include "popgate/relay/decider.hpp"
#include "popgate/relay/verdict.hpp"
#include "popgate/store/store.hpp"
#include "popgate/store/write_queue.hpp"

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace popgate::relay {

class policy {
public:
    policy(decider& d, store::store& db, store::write_queue& writes) : decider_(d), db_(db), writes_(writes) {}

    // Blocking: indexed reads and a cached network table. With SQLite short
    // enough to run in place; when in_place() is false (PostgreSQL: a round
    // trip) callers run it on the blocking pool. `s` is the caller's
    // settings snapshot (local domains, maildirs).
    verdict decide(request const& r, config::settings const& s);
    bool in_place() const noexcept { return !db_.crosses_network(); }

private:
    verdict gather(request const& r, config::settings const& s);  // decide() without the count
    std::optional<store::user_record> mailbox_user(request const& r);
    verdict local(request const& r, config::settings const& s);

    decider& decider_;
    store::store& db_;
    store::write_queue& writes_;
};

// Whether `domain` is one of mail.local_domains (case-insensitive); the empty
// domain of <postmaster> is always local.
bool is_local_domain(config::settings const& s, std::string_view domain);

}  // namespace popgate::relay
