#include "popgate/relay/decider.hpp"

#include "popgate/log/log.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace popgate::relay {

std::vector<std::string> decider::grant_keys(net::ip_address const& client) const
{
    unsigned const prefix = ipv6_prefix_.load(std::memory_order_relaxed);
    if (client.v4 || prefix >= 128) return {client.to_string()};
    std::string key;
    {
        std::lock_guard lock(no_grant_mutex_);
        key = net::grant_key(client, prefix, no_grant_networks_).to_string();
    }
    auto const whole = client.to_string();
    if (key == whole) return {key};  // link-local, or in a no-grant network
    return {key, whole};
}

void decider::set_no_grant_networks(std::vector<net::cidr> nets)
{
    std::lock_guard lock(no_grant_mutex_);
    no_grant_networks_ = std::move(nets);
}

void decider::reload_networks_locked(std::int64_t gen)
{
    if (gen == generation_) return;
    std::vector<bucket> fresh;
    std::set<std::pair<std::int64_t, std::string>> still_wrong;
    auto const warn_once = [&](store::network const& n, std::string const& what) {
        auto key = std::pair{n.id, n.cidr};
        if (!warned_networks_.contains(key))
            spdlog::warn("allowed_networks id={} cidr={} problem={}", n.id, log::field(n.cidr), log::field(what, 400));
        still_wrong.insert(std::move(key));
    };
    for (auto const& n : db_.list_networks()) {
        std::string why;
        // Host bits under the prefix make a row ambiguous (192.0.2.5/24: the
        // network 192.0.2.0/24, or the host 192.0.2.5?): ignored, as Postfix's
        // cidr tables do, never widened. Schema 3 refuses such rows; older
        // ones may remain.
        auto c = net::parse_cidr(n.cidr, &why);
        if (!c) {
            warn_once(n, "ignored: " + why);
            continue;
        }
        if (auto const problem = net::spelling_problem(n.cidr, *c); !problem.empty())
            warn_once(n, "used as " + c->to_string() + ": " + problem);
        auto it = std::find_if(fresh.begin(), fresh.end(),
                               [&](bucket const& b) { return b.v4 == c->base.v4 && b.prefix == c->prefix; });
        if (it == fresh.end()) it = fresh.insert(fresh.end(), bucket{c->base.v4, c->prefix, {}});
        it->by_base[c->base].push_back({*c, n.expires_at, n.cidr});
    }
    buckets_ = std::move(fresh);
    warned_networks_ = std::move(still_wrong);
    generation_ = gen;
}

std::optional<std::string> decider::find_network(net::ip_address const& client, store::unix_time now)
{
    auto const gen = db_.network_generation();
    std::lock_guard lock(mutex_);
    reload_networks_locked(gen);
    for (auto const& b : buckets_) {
        if (b.v4 != client.v4) continue;
        auto const it = b.by_base.find(net::mask(client, b.prefix));
        if (it == b.by_base.end()) continue;
        for (auto const& e : it->second)
            if (!e.expires_at || *e.expires_at > now) return e.text;
    }
    return std::nullopt;
}

void decider::check_rows()
{
    {
        auto const gen = db_.network_generation();
        std::lock_guard lock(mutex_);
        reload_networks_locked(gen);
    }
    auto const addresses = db_.ipv6_grant_addresses(store::now());
    std::lock_guard lock(grants_mutex_);
    std::set<std::string> still_wrong;
    for (auto const& text : addresses) {
        std::string why;
        auto const a = net::parse_ip(text, &why);
        if (a) why = net::spelling_problem(text, *a);
        if (why.empty()) continue;
        if (!warned_grants_.contains(text))
            spdlog::warn("relay_grants address={} never matches problem={}", log::field(text), log::field(why, 400));
        still_wrong.insert(text);
    }
    warned_grants_ = std::move(still_wrong);
}

decision decider::decide(net::ip_address const& client, bool authenticated, bool auth_required, bool local_domain,
                         bool local_needs_auth, quota_request const& quota, bool client_named)
{
    proto::relay_facts f;
    f.local_domain = local_domain;
    f.local_needs_auth = local_needs_auth;
    f.authenticated = authenticated;
    f.auth_required = auth_required;
    decision d;
    auto const now = store::now();
    std::optional<store::grant> g;
    std::optional<std::string> net;
    if (!local_domain && !authenticated && !auth_required && client_named) {
        auto const keys = grant_keys(client);
        g = db_.find_active_grant(keys, now);
        f.has_grant = g.has_value();
        if (g) {
            d.quota = quota_.take(*g, quota.new_message, quota.limits, now);
            f.grant_over_quota = d.quota.result != quota_result::ok;
        }
        if (!g || f.grant_over_quota) {
            net = find_network(client, now);
            f.in_network = net.has_value();
        }
    }
    d.verdict = proto::decide_relay(f);
    auto const grant_fields = [&g] {
        return "grant_user=" + (g->user.empty() ? std::string("-") : log::field(g->user, 64)) +
               " grant=" + log::field(g->address);
    };
    switch (d.verdict) {
    case proto::relay_verdict::relay_grant:
        d.detail = grant_fields();
        d.grant_address = g->address;
        break;
    case proto::relay_verdict::relay_network: d.detail = "network=" + log::field(*net); break;
    case proto::relay_verdict::over_quota: {
        bool const msgs = d.quota.result == quota_result::messages;
        auto const max = msgs ? quota.limits.messages : quota.limits.recipients;
        d.detail = grant_fields() + " quota=" + (msgs ? "messages" : "recipients") +
                   " used=" + std::to_string(msgs ? d.quota.messages : d.quota.recipients) +
                   " max=" + std::to_string(max);
        d.reason = std::to_string(max) + (msgs ? " messages" : " recipients") + " per hour";
        break;
    }
    case proto::relay_verdict::relay_auth: d.detail = "sasl"; break;
    case proto::relay_verdict::local: d.detail = "local-domain"; break;
    default:
        d.detail = auth_required && !authenticated ? "auth-required-on-listener"
                   : client_named                  ? "no-grant-or-network"
                                                   : "client-unnamed";
    }
    return d;
}

}  // namespace popgate::relay
