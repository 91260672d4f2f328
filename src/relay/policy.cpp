#include "popgate/relay/policy.hpp"

#include "popgate/log/log.hpp"
#include "popgate/mail/maildir.hpp"
#include "popgate/metrics/catalog.hpp"

#include "popgate/proto/ascii.hpp"

#include <algorithm>

namespace popgate::relay {

using proto::iequals;

bool is_local_domain(config::settings const& s, std::string_view domain)
{
    if (domain.empty()) return true;  // <postmaster>
    return std::any_of(s.local_domains.begin(), s.local_domains.end(),
                       [&](std::string const& d) { return iequals(d, domain); });
}

std::optional<store::user_record> policy::mailbox_user(request const& r)
{
    // The user named by the full address, else by the local part alone:
    // first with the local part as written (the domain as written, then in
    // lower case: domains are case-insensitive, RFC 5321 §2.4), and only
    // then with the local part in lower case. A local part is
    // case-sensitive on the wire, but Postfix and Dovecot fold it for their
    // own mailboxes, and a miss here bounces the mail; a user whose name
    // matches as written always comes first. A local part with an '@' of its
    // own ("bob@example.org"@gw.test) names no user by itself:
    // bob@example.org is not of this domain.
    std::vector<std::string> names;
    auto const add = [&](std::string n) {
        if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(std::move(n));
    };
    bool const alone = r.local_part.find('@') == std::string_view::npos;
    for (auto const& local : {std::string(r.local_part), proto::ascii_lowered(r.local_part)}) {
        if (!r.domain.empty()) {
            if (local == r.local_part) add(std::string(r.address));
            add(local + "@" + proto::ascii_lowered(r.domain));
        }
        if (alone) add(local);
    }
    for (auto const& n : names)
        if (auto u = db_.find_user(n)) return u;
    return std::nullopt;
}

verdict policy::local(request const& r, config::settings const& s)
{
    verdict v;
    v.what = proto::relay_verdict::local;
    auto u = mailbox_user(r);
    // RFC 5321 §4.5.1: mail to postmaster is never refused. With no user of
    // that name it still goes to the Maildir a "postmaster" user would have;
    // adding that user makes it readable over POP3.
    if (!u && iequals(r.local_part, "postmaster")) {
        u.emplace();
        u->name = "postmaster";
    }
    if (u) {
        try {
            v.box = mailbox{u->name, mail::user_maildir(s.maildir, u->name)};
        } catch (std::invalid_argument const&) {
            // A name that cannot have a Maildir is no mailbox.
        }
    }
    v.detail = v.box ? "user=" + log::field(v.box->user, 64) : "unknown-user";
    return v;
}

verdict policy::decide(request const& r, config::settings const& s)
{
    auto v = gather(r, s);
    metrics::relay_decisions.with({r.from == asker::mta ? "policy" : "smtp", proto::to_string(v.what)}).inc();
    return v;
}

verdict policy::gather(request const& r, config::settings const& s)
{
    try {
        bool const own = r.from == asker::smtp_listener;
        quota_request const q{r.new_message, {s.grant_max_messages_per_hour, s.grant_max_recipients_per_hour}};
        auto const d = decider_.decide(r.client, r.authenticated, r.auth_required,
                                       own && is_local_domain(s, r.domain), r.local_needs_auth, q, r.client_named);
        if (d.verdict == proto::relay_verdict::local) return local(r, s);
        verdict v{d.verdict, d.detail, std::nullopt, d.reason};
        if (d.verdict == proto::relay_verdict::deny && own)
            writes_.post(store::audit_record{"deny", r.client.to_string(), "", std::string(r.address)});
        else if (d.verdict == proto::relay_verdict::over_quota)
            writes_.post(store::audit_record{"deny", r.client.to_string(), "",
                                             std::string(r.address) + " quota: " + d.reason});
        else if (d.verdict == proto::relay_verdict::relay_grant && !d.grant_address.empty())
            // The hit and this use of the quota, added up and written once a
            // second (the book above holds the exact count meanwhile).
            writes_.post(store::grant_touch{d.grant_address, store::now(), 1, d.quota.hour,
                                            d.quota.new_message ? 1 : 0, 1});
        return v;
    } catch (store::store_error const& e) {
        // Never relay on a store failure; the client tries again later.
        return {proto::relay_verdict::tempfail, e.what(), std::nullopt, {}};
    }
}

}  // namespace popgate::relay
