#include "popgate/net/ip.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
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

std::string ip_address::to_string() const
{
    char buf[INET6_ADDRSTRLEN] = {};
    if (v4) {
        ::inet_ntop(AF_INET, bytes.data() + 12, buf, sizeof buf);
    } else {
        // glibc's inet_ntop follows RFC 5952 (lowercase, longest zero run as ::)
        // except that it prints mapped forms with a dotted tail; those never
        // reach here because parse_ip folds them to IPv4.
        ::inet_ntop(AF_INET6, bytes.data(), buf, sizeof buf);
    }
    return buf;
}

bool ip_address::is_loopback() const noexcept
{
    if (v4) return bytes[12] == 127;
    static constexpr std::array<std::uint8_t, 16> one{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    return bytes == one;
}

std::optional<ip_address> parse_ip(std::string_view text, std::string* why)
{
    if (text.empty() || text.size() > 45) {
        set_why(why, "not an IP address: '" + std::string(text.substr(0, 64)) + "'");
        return std::nullopt;
    }
    std::string const s(text);  // inet_pton needs a NUL-terminated string
    ip_address a;
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
    std::memcpy(a.bytes.data(), &v6, 16);
    a.v4 = is_v4_mapped(a.bytes);  // ::ffff:192.0.2.7 is the IPv4 client 192.0.2.7
    return a;
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
            set_why(why, "bad prefix length '/" + std::string(p.substr(0, 8)) + "' (0.." +
                             std::to_string(max) + ")");
            return std::nullopt;
        }
    }
    cidr c{mask(*addr, prefix), prefix};
    if (c.base != *addr && !allow_host_bits) {
        set_why(why, "host bits set in '" + std::string(text) + "'; the network is " + c.to_string());
        return std::nullopt;
    }
    return c;
}

ip_address grant_key(ip_address client, unsigned ipv6_prefix) noexcept
{
    if (client.v4) return client;
    return mask(client, std::min(ipv6_prefix, 128u));
}

}  // namespace popgate::net
