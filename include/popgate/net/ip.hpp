#pragma once
// Client addresses and networks. Pure code (inet_pton/inet_ntop only), shared by
// the daemon, the admin command and the store. grant_key() is THE one place where
// a client address is normalised for relay_grants (DESIGN: normalised in exactly
// one place).
#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace popgate::net {

struct ip_address {
    // IPv4 is held in its IPv4-mapped IPv6 form (::ffff:a.b.c.d) so that one
    // comparison and one mask routine serve both families.
    std::array<std::uint8_t, 16> bytes{};
    bool v4 = false;

    static ip_address from_v4(std::uint32_t host_order) noexcept;
    // An IPv6 address as the socket gives it (network order); an IPv4-mapped
    // one is folded to IPv4, as parse_ip does. A zone (scope id) is not part
    // of the address: fe80::1 on any interface is fe80::1.
    static ip_address from_v6(std::array<std::uint8_t, 16> const& network_order) noexcept;
    std::string to_string() const;  // dotted quad, or RFC 5952 lowercase IPv6
    bool is_loopback() const noexcept;
    friend auto operator<=>(ip_address const&, ip_address const&) = default;
};

// Accepts dotted-quad IPv4 (no leading zeros, no shorthand) and IPv6 text; an
// IPv4-mapped IPv6 address (::ffff:192.0.2.7) is folded to IPv4. Brackets and
// zone ids are refused.
std::optional<ip_address> parse_ip(std::string_view text, std::string* why = nullptr);

// Keeps the first `prefix` bits (of 32 for IPv4, of 128 for IPv6).
ip_address mask(ip_address a, unsigned prefix) noexcept;

struct cidr {
    ip_address base;   // host bits are zero
    unsigned prefix = 0;

    bool contains(ip_address const& a) const noexcept;
    unsigned max_prefix() const noexcept { return base.v4 ? 32 : 128; }
    std::string to_string() const;  // "192.0.2.0/24"; a host network keeps its /32 or /128
    friend auto operator<=>(cidr const&, cidr const&) = default;
};

// "a.b.c.d/n", "x:y::/n", or a bare address (a host network). Host bits set
// below the prefix are refused unless `allow_host_bits` (then they are masked):
// "192.0.2.5/24" is almost always a typo for a single host.
std::optional<cidr> parse_cidr(std::string_view text, std::string* why = nullptr,
                               bool allow_host_bits = false);

// The one spelling popgate writes and looks up (sql/README.md, "Canonical
// form"): IPv4 as a dotted quad without leading zeros; IPv6 as RFC 5952 text
// (lowercase, no leading zeros, :: for the longest run of two or more zero
// groups, the first of equally long runs); an IPv4-mapped address as its IPv4
// address. A network keeps the shape it was written in: a bare address stays
// bare ("192.0.2.7"), anything else is "base/prefix".
std::string canonical_text(cidr const& c, std::string_view as_written);

// Empty when `text`, which parses as `a` (or as the network `c`), is written
// in canonical form; otherwise what is wrong, ending in "write <canonical>".
std::string spelling_problem(std::string_view text, ip_address const& a);
std::string spelling_problem(std::string_view text, cidr const& c);

// The relay_grants key of a client: IPv4 as is; IPv6 truncated to
// `ipv6_prefix` bits (so a /64 of privacy addresses shares one grant),
// except link-local IPv6 (fe80::/10), which is taken whole: fe80::/64 is
// every link's prefix, a grant to it would cover every LAN the host is on;
// and ::/8 (::1, IPv4-compatible ::a.b.c.d), whole as in limit_key().
ip_address grant_key(ip_address client, unsigned ipv6_prefix) noexcept;
// The same, but a client in one of `own_address_only` (relay.no_grant_networks)
// is taken whole: a grant of its prefix, made by a login elsewhere in it,
// must not cover a guest network inside it, and a grant an administrator
// gives such a client is of its address alone.
ip_address grant_key(ip_address client, unsigned ipv6_prefix, std::span<cidr const> own_address_only) noexcept;

// The key a client is counted by for the per-address limits and the
// brute-force counters: IPv4 as is, IPv6 truncated to `ipv6_prefix` bits,
// link-local too. A link's hosts then share one count (as an office behind
// one NAT does), and no host escapes a limit by adding fe80:: addresses,
// which every host may do at will. IPv6 in ::/8 (reserved: ::1, ::, the
// IPv4-compatible ::a.b.c.d a proxy may name) is taken whole: it is no
// site's prefix, and ::/64 would put the loopback host with every
// IPv4-compatible client.
ip_address limit_key(ip_address client, unsigned ipv6_prefix) noexcept;

}  // namespace popgate::net
