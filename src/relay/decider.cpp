#include "popgate/relay/decider.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace popgate::relay {

std::vector<std::string> decider::grant_keys(net::ip_address const& client) const
{
    unsigned const prefix = ipv6_prefix_.load(std::memory_order_relaxed);
    std::vector<std::string> keys{net::grant_key(client, prefix).to_string()};
    if (!client.v4 && prefix < 128) keys.push_back(client.to_string());
    return keys;
}

std::optional<std::string> decider::find_network(net::ip_address const& client, store::unix_time now)
{
    auto const gen = db_.network_generation();
    std::lock_guard lock(mutex_);
    if (gen != generation_) {
        std::vector<bucket> fresh;
        for (auto const& n : db_.list_networks()) {
            std::string why;
            // Rows written by hand with host bits set are masked, as Postfix's
            // cidr tables do, rather than ignored.
            auto c = net::parse_cidr(n.cidr, &why, true);
            if (!c) {
                spdlog::warn("allowed_networks id={} cidr='{}' ignored: {}", n.id, n.cidr, why);
                continue;
            }
            auto it = std::find_if(fresh.begin(), fresh.end(),
                                   [&](bucket const& b) { return b.v4 == c->base.v4 && b.prefix == c->prefix; });
            if (it == fresh.end()) it = fresh.insert(fresh.end(), bucket{c->base.v4, c->prefix, {}});
            it->by_base[c->base].push_back({*c, n.expires_at, n.cidr});
        }
        buckets_ = std::move(fresh);
        generation_ = gen;
    }
    for (auto const& b : buckets_) {
        if (b.v4 != client.v4) continue;
        auto const it = b.by_base.find(net::mask(client, b.prefix));
        if (it == b.by_base.end()) continue;
        for (auto const& e : it->second)
            if (!e.expires_at || *e.expires_at > now) return e.text;
    }
    return std::nullopt;
}

decision decider::decide(net::ip_address const& client, bool authenticated, bool auth_required, bool local_domain)
{
    proto::relay_facts f;
    f.local_domain = local_domain;
    f.authenticated = authenticated;
    f.auth_required = auth_required;
    decision d;
    auto const now = store::now();
    std::optional<store::grant> g;
    std::optional<std::string> net;
    if (!local_domain && !authenticated && !auth_required) {
        auto const keys = grant_keys(client);
        g = db_.find_active_grant(keys, now);
        f.has_grant = g.has_value();
        if (!g) {
            net = find_network(client, now);
            f.in_network = net.has_value();
        }
    }
    d.verdict = proto::decide_relay(f);
    switch (d.verdict) {
    case proto::relay_verdict::relay_grant:
        d.detail = "grant_user=" + (g->user.empty() ? std::string("-") : g->user) + " grant=" + g->address;
        d.grant_address = g->address;
        break;
    case proto::relay_verdict::relay_network: d.detail = "network=" + *net; break;
    case proto::relay_verdict::relay_auth: d.detail = "sasl"; break;
    case proto::relay_verdict::local: d.detail = "local domain"; break;
    default: d.detail = auth_required && !authenticated ? "auth required on this listener" : "no grant or network";
    }
    return d;
}

}  // namespace popgate::relay
