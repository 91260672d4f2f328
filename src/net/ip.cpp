#include "popgate/net/ip.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cstdio>
#include <cstring>

namespace popgate::net {
namespace {

constexpr std::array<std::uint8_t, 12> v4_mapped_prefix{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

void set_why(std::string* why, std::string text)
{
    if (why) *why = std::move(text);
}

bool is_v4_mapped(std::array<std::uint8_t, 16> const& b) noexcept
{
    return std::equal(v4_mapped_prefix.begin(), v4_mapped_prefix.end(), b.begin());
}

}  // namespace

ip_address ip_address::from_v4(std::uint32_t host_order) noexcept
{
    ip_address a;
    std::copy(v4_mapped_prefix.begin(), v4_mapped_prefix.end(), a.bytes.begin());
    a.bytes[12] = static_cast<std::uint8_t>(host_order >> 24);
    a.bytes[13] = static_cast<std::uint8_t>(host_order >> 16);
    a.bytes[14] = static_cast<std::uint8_t>(host_order >> 8);
    a.bytes[15] = static_cast<std::uint8_t>(host_order);
    a.v4 = true;
    return a;
}

ip_address ip_address::from_v6(std::array<std::uint8_t, 16> const& network_order) noexcept
{
    ip_address a;
    a.bytes = network_order;
    a.v4 = is_v4_mapped(a.bytes);
    return a;
}

std::string ip_address::to_string() const
{
    char buf[INET6_ADDRSTRLEN] = {};
    if (v4 || is_v4_mapped(bytes)) {
        ::inet_ntop(AF_INET, bytes.data() + 12, buf, sizeof buf);
        // RFC 5952 §5: a mapped address keeps its dotted tail (parse_ip folds
        // those to IPv4, so only a hand-built ip_address gets here).
        return v4 ? std::string(buf) : "::ffff:" + std::string(buf);
    }
    // RFC 5952 §4 by hand: glibc's inet_ntop prints any address whose first 96
    // bits are zero in the deprecated IPv4-compatible form (::1:0 as
    // "::0.1.0.0"), which is not RFC 5952 and which the relay_grants and
    // allowed_networks triggers refuse.
    std::array<unsigned, 8> w{};
    for (std::size_t i = 0; i < 8; ++i) w[i] = (unsigned{bytes[2 * i]} << 8) | bytes[2 * i + 1];
    // §4.2.2/§4.2.3: the longest run of two or more zero fields, the first on a tie.
    std::size_t best = 8, best_len = 0;
    for (std::size_t i = 0; i < 8;) {
        if (w[i] != 0) { ++i; continue; }
        std::size_t j = i;
        while (j < 8 && w[j] == 0) ++j;
        if (j - i > best_len) { best = i; best_len = j - i; }
        i = j;
    }
    if (best_len < 2) best = 8;
    std::string out;
    for (std::size_t i = 0; i < 8; ++i) {
        if (i == best) {
            out += "::";
            i += best_len - 1;
            continue;
        }
        if (!out.empty() && out.back() != ':') out += ':';
        std::snprintf(buf, sizeof buf, "%x", w[i]);  // §4.3: lowercase; §4.1: no leading zeros
        out += buf;
    }
    return out;
}

bool ip_address::is_loopback() const noexcept
{
    if (v4) return bytes[12] == 127;
    static constexpr std::array<std::uint8_t, 16> one{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    return bytes == one;
}

std::optional<ip_address> parse_ip(std::string_view text, std::string* why)
{
    // A NUL would end the C string inet_pton sees: "1.2.3.4\0junk" is not 1.2.3.4.
    if (text.empty() || text.size() > 45 || text.find('\0') != std::string_view::npos) {
        set_why(why, "not an IP address: '" + std::string(text.substr(0, 64)) + "'");
        return std::nullopt;
    }
    std::string const s(text);  // inet_pton needs a NUL-terminated string
    if (s.find(':') == std::string::npos) {
        // inet_pton(AF_INET) already refuses shorthand ("10.1") and octal-looking
        // forms are refused below: "010.0.0.1" means 8.0.0.1 to some parsers.
        in_addr v4{};
        bool leading_zero = false;
        for (std::size_t i = 0; i + 1 < s.size(); ++i)
            if (s[i] == '0' && (i == 0 || s[i - 1] == '.') && s[i + 1] != '.') leading_zero = true;
        if (leading_zero || ::inet_pton(AF_INET, s.c_str(), &v4) != 1) {
            set_why(why, "not an IPv4 address: '" + s + "'");
            return std::nullopt;
        }
        std::uint32_t host = ntohl(v4.s_addr);
        return ip_address::from_v4(host);
    }
    in6_addr v6{};
    if (::inet_pton(AF_INET6, s.c_str(), &v6) != 1) {
        set_why(why, "not an IPv6 address: '" + s + "'");
        return std::nullopt;
    }
    std::array<std::uint8_t, 16> b{};
    std::memcpy(b.data(), &v6, 16);
    return ip_address::from_v6(b);  // ::ffff:192.0.2.7 is the IPv4 client 192.0.2.7
}

ip_address mask(ip_address a, unsigned prefix) noexcept
{
    unsigned bits = a.v4 ? prefix + 96 : prefix;
    if (bits > 128) bits = 128;
    for (unsigned i = 0; i < 16; ++i) {
        unsigned const keep = bits >= 8 * (i + 1) ? 8 : (bits > 8 * i ? bits - 8 * i : 0);
        a.bytes[i] &= static_cast<std::uint8_t>(keep == 8 ? 0xff : (0xff << (8 - keep)) & 0xff);
    }
    return a;
}

bool cidr::contains(ip_address const& a) const noexcept
{
    if (a.v4 != base.v4) return false;
    return mask(a, prefix) == base;
}

std::string cidr::to_string() const
{
    return base.to_string() + "/" + std::to_string(prefix);
}

std::optional<cidr> parse_cidr(std::string_view text, std::string* why, bool allow_host_bits)
{
    auto const slash = text.find('/');
    auto const addr = parse_ip(text.substr(0, slash), why);
    if (!addr) return std::nullopt;
    unsigned const max = addr->v4 ? 32 : 128;
    unsigned prefix = max;
    if (slash != std::string_view::npos) {
        auto const p = text.substr(slash + 1);
        auto const [end, ec] = std::from_chars(p.data(), p.data() + p.size(), prefix);
        if (p.empty() || p.size() > 3 || ec != std::errc{} || end != p.data() + p.size() ||
            (p.size() > 1 && p[0] == '0') || prefix > max) {
            std::string const shown(p.substr(0, 40));
            if (auto const m = addr->v4 ? parse_ip(p) : std::nullopt; m && m->v4 && p.find(':') == p.npos) {
                // A netmask where a prefix length belongs (Cisco, ifconfig).
                auto const bits = std::uint32_t{m->bytes[12]} << 24 | std::uint32_t{m->bytes[13]} << 16 |
                                  std::uint32_t{m->bytes[14]} << 8 | m->bytes[15];
                auto const len = static_cast<unsigned>(std::countl_one(bits));
                bool const contiguous = len == 32 || (bits << len) == 0;
                set_why(why, "'/" + shown + "' is a netmask, not a prefix length" +
                                 (contiguous ? "; write /" + std::to_string(len) : std::string("; write /0../32")));
            } else if (addr->v4 && text.substr(0, slash).find(':') != std::string_view::npos && ec == std::errc{} &&
                       end == p.data() + p.size() && p[0] != '0' && prefix >= 96 && prefix <= 128) {
                // An IPv4-mapped address is taken as the IPv4 one, and its
                // prefix length counts the IPv4 bits: name the IPv4 network
                // meant, which the CLI and the file both take.
                set_why(why, "'" + std::string(text.substr(0, std::min<std::size_t>(slash, 64))) +
                                 "' is IPv4-mapped: its prefix length counts the IPv4 bits (0..32); write the IPv4 "
                                 "network " + cidr{mask(*addr, prefix - 96), prefix - 96}.to_string());
            } else {
                set_why(why, "bad prefix length '/" + shown + "' (0.." + std::to_string(max) + ")");
            }
            return std::nullopt;
        }
    }
    cidr c{mask(*addr, prefix), prefix};
    if (c.base != *addr && !allow_host_bits) {
        set_why(why, "host bits set in '" + std::string(text) + "'; write the network " + c.to_string() + ", or " +
                         cidr{*addr, max}.to_string() + " for one address");
        return std::nullopt;
    }
    return c;
}

std::string canonical_text(cidr const& c, std::string_view as_written)
{
    if (as_written.find('/') == std::string_view::npos && c.prefix == c.max_prefix()) return c.base.to_string();
    return c.to_string();
}

namespace {
constexpr std::string_view rfc5952 =
    " (RFC 5952: lowercase, no leading zeros, :: for the longest run of two or more zero groups)";
}

std::string spelling_problem(std::string_view text, ip_address const& a)
{
    auto const canon = a.to_string();
    if (canon == text) return {};
    std::string const t(text.substr(0, 64));
    if (a.v4) return "IPv4-mapped IPv6 '" + t + "' is not accepted; write the IPv4 address " + canon;
    return "'" + t + "' is not IPv6 in canonical form" + std::string(rfc5952) + "; write " + canon;
}

std::string spelling_problem(std::string_view text, cidr const& c)
{
    auto const canon = canonical_text(c, text);
    if (canon == text) return {};
    std::string const t(text.substr(0, 64));
    if (c.base.v4 && text.find(':') != std::string_view::npos)
        return "IPv4-mapped IPv6 '" + t + "' is not accepted; write the IPv4 network " + canon;
    if (c.base.v4) return "'" + t + "' is not written in canonical form; write " + canon;
    return "'" + t + "' is not IPv6 in canonical form" + std::string(rfc5952) + "; write " + canon;
}

namespace {
// ::/8, reserved by the IETF (RFC 4291 §2.4): ::1, the unspecified ::, the
// deprecated IPv4-compatible ::a.b.c.d. No site's prefix: ::1 is one host,
// and ::/64 would hold it with every IPv4-compatible address.
bool reserved_v6(ip_address const& a) noexcept { return !a.v4 && a.bytes[0] == 0; }
}  // namespace

ip_address grant_key(ip_address client, unsigned ipv6_prefix) noexcept
{
    if (client.v4) return client;
    // fe80::/10: every link's hosts share fe80::/64, so its prefix names no
    // site; a link-local client is granted by its own address.
    if (client.bytes[0] == 0xfe && (client.bytes[1] & 0xc0) == 0x80) return client;
    return limit_key(client, ipv6_prefix);
}

ip_address grant_key(ip_address client, unsigned ipv6_prefix, std::span<cidr const> own_address_only) noexcept
{
    for (auto const& n : own_address_only)
        if (n.contains(client)) return client;
    return grant_key(client, ipv6_prefix);
}

ip_address limit_key(ip_address client, unsigned ipv6_prefix) noexcept
{
    if (client.v4 || reserved_v6(client)) return client;
    return mask(client, std::min(ipv6_prefix, 128u));
}

}  // namespace popgate::net
