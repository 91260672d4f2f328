#include "popgate/relay/grant_issuer.hpp"

#include "popgate/log/log.hpp"
#include "popgate/metrics/catalog.hpp"

#include <algorithm>
#include <ctime>

namespace popgate::relay {

std::string_view to_string(no_grant_reason r) noexcept
{
    switch (r) {
    case no_grant_reason::none: return "none";
    case no_grant_reason::listener: return "listener";
    case no_grant_reason::no_client_address: return "no-client-address";
    case no_grant_reason::no_grant_network: return "no-grant-network";
    case no_grant_reason::no_tls: return "no-tls";
    case no_grant_reason::max_grants_per_user: return "max-grants-per-user";
    }
    return "?";
}

std::string_view metric_reason(no_grant_reason r) noexcept
{
    // The config key of the guard rail: what an operator looks up.
    switch (r) {
    case no_grant_reason::none: break;
    case no_grant_reason::listener: return "listener";
    case no_grant_reason::no_client_address: return "proxy_protocol";
    case no_grant_reason::no_grant_network: return "no_grant_networks";
    case no_grant_reason::no_tls: return "grant_requires_tls";
    case no_grant_reason::max_grants_per_user: return "max_grants_per_user";
    }
    return {};
}

void count_grant_plan(grant_plan const& p, std::string_view via)
{
    // A label is a fixed word, never the caller's string as such.
    std::string_view const source = via == "dovecot" ? "dovecot" : "pop3";
    if (p.refused != no_grant_reason::none)
        metrics::grants_withheld.with({source, metric_reason(p.refused)}).inc();
    else if (!p.replaced.empty())
        metrics::grants_replaced.with({source}).inc(p.replaced.size());
}

std::string iso_utc(store::unix_time t)
{
    std::time_t const tt = static_cast<std::time_t>(t);
    std::tm tm{};
    ::gmtime_r(&tt, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

grant_plan grant_issuer::plan(login_facts const& l, config::settings const& s) const
{
    grant_plan p;
    auto& g = p.grant;
    g.address = decider_.grant_keys(l.client).front();
    g.user = l.user;
    g.method = l.method;
    g.tls = l.tls;
    g.listener = l.listener;
    g.granted_at = store::now();
    g.expires_at = g.granted_at + s.grant_ttl.count();
    // The audit detail names the login; user names are in their own column.
    std::string detail = std::string(l.via) + " mech=" + g.method + " listener=" + log::field(g.listener) +
                         " tls=" + (g.tls ? "yes" : "no");

    std::string why;  // the fact behind the reason, for the detail and the log
    auto const net = std::find_if(s.no_grant_networks.begin(), s.no_grant_networks.end(),
                                  [&](net::cidr const& c) { return c.contains(l.client); });
    if (!l.listener_grants) {
        p.refused = no_grant_reason::listener;
    } else if (!l.client_named) {
        p.refused = no_grant_reason::no_client_address;
    } else if (net != s.no_grant_networks.end()) {
        p.refused = no_grant_reason::no_grant_network;
        why = " network=" + net->to_string();
    } else if (s.grant_requires_tls && !l.tls) {
        p.refused = no_grant_reason::no_tls;
    } else if (s.max_grants_per_user > 0) {
        // The user's other unexpired grants, oldest first; refreshing the
        // grant at this very address is never refused.
        auto held = db_.active_grants_of_user(l.user, g.granted_at);
        std::erase_if(held, [&](store::grant const& x) { return x.address == g.address; });
        if (held.size() >= s.max_grants_per_user) {
            why = " held=" + std::to_string(held.size()) + " max=" + std::to_string(s.max_grants_per_user);
            if (s.grant_limit == config::grant_limit_action::refuse) {
                p.refused = no_grant_reason::max_grants_per_user;
            } else {
                for (std::size_t i = 0; i + s.max_grants_per_user <= held.size(); ++i)
                    p.replaced.push_back(held[i].address);
            }
        }
    }

    if (p.refused != no_grant_reason::none) {
        auto const reason = std::string(to_string(p.refused));
        p.log_fields = "grant=no reason=" + reason + why;
        p.ops.emplace_back(store::audit_record{"no-grant", l.client.to_string(), l.user,
                                               detail + " reason=" + reason + why});
        return p;
    }
    g.needs_user = l.via != "dovecot";  // a Dovecot login's user is Dovecot's
    g.checked = l.checked;
    g.audit_address = l.client.to_string();
    g.audit_detail = detail + " until=" + iso_utc(g.expires_at);
    p.ops.emplace_back(g);
    if (s.max_grants_per_user > 0)
        // In the grant's transaction: the cap holds whatever other logins of
        // the user commit beside this one.
        p.ops.emplace_back(store::grant_cap{l.user, g.address, s.max_grants_per_user, g.granted_at,
                                            "max_grants_per_user=" + std::to_string(s.max_grants_per_user) +
                                                ": replaced by a login from " + g.address});
    p.log_fields = "grant=" + g.address + " grant_until=" + iso_utc(g.expires_at);
    if (!p.replaced.empty()) {
        std::string list;
        for (auto const& a : p.replaced) list += (list.empty() ? "" : ",") + a;
        p.log_fields += " replaced=" + list + why;
    }
    return p;
}

}  // namespace popgate::relay
