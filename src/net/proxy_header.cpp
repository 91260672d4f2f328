#include "popgate/net/proxy_header.hpp"

#include <algorithm>
#include <array>
#include <charconv>

namespace popgate::net {
namespace {

constexpr std::string_view v1_prefix = "PROXY ";
// §2.2: CR LF CR LF NUL CR LF "QUIT" LF; it holds a NUL, so never a C string.
constexpr std::string_view v2_signature{"\r\n\r\n\0\r\nQUIT\n", 12};

proxy_parse invalid(std::string_view why) noexcept { return {proxy_status::invalid, {}, why}; }

proxy_parse complete(int version, std::size_t length, std::optional<ip_address> source = std::nullopt,
                     std::uint16_t port = 0) noexcept
{
    return {proxy_status::complete, {version, length, source, port}, {}};
}

// Whether `bytes` could still become `prefix`: equal on what both have.
bool starts_as(std::string_view bytes, std::string_view prefix) noexcept
{
    auto const n = std::min(bytes.size(), prefix.size());
    return bytes.substr(0, n) == prefix.substr(0, n);
}

// §2.1: decimal 0..65535, no leading zeros.
std::optional<std::uint16_t> v1_port(std::string_view s) noexcept
{
    if (s.empty() || s.size() > 5 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
    unsigned v = 0;
    auto const [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || end != s.data() + s.size() || v > 65535) return std::nullopt;
    return static_cast<std::uint16_t>(v);
}

// §2.1: the family named on the line decides the spelling. parse_ip refuses
// leading zeros in IPv4 as the spec does; an IPv4-mapped IPv6 address on a
// TCP6 line is the IPv4 client it maps.
std::optional<ip_address> v1_address(std::string_view s, bool tcp6)
{
    if ((s.find(':') != std::string_view::npos) != tcp6) return std::nullopt;
    return parse_ip(s);
}

// The line without its CRLF: "PROXY TCP4 src dst sport dport" or
// "PROXY UNKNOWN[ anything]".
proxy_parse parse_v1_line(std::string_view line, std::size_t length)
{
    std::array<std::string_view, 6> f{};
    std::size_t n = 0;
    for (std::size_t pos = 0;;) {
        auto const sp = line.find(' ', pos);
        if (n == f.size()) return invalid("v1: too many fields");
        f[n++] = line.substr(pos, sp == line.npos ? line.npos : sp - pos);
        if (sp == line.npos) break;
        pos = sp + 1;
        // §2.1: the receiver ignores whatever follows UNKNOWN.
        if (n == 2 && f[1] == "UNKNOWN") break;
    }
    if (n >= 2 && f[1] == "UNKNOWN") return complete(1, length);
    bool const tcp4 = n >= 2 && f[1] == "TCP4";
    bool const tcp6 = n >= 2 && f[1] == "TCP6";
    if (!tcp4 && !tcp6) return invalid("v1: protocol is not TCP4, TCP6 or UNKNOWN");
    if (n != 6) return invalid("v1: expected source, destination and two ports");
    auto const src = v1_address(f[2], tcp6);
    auto const dst = v1_address(f[3], tcp6);
    if (!src || !dst) return invalid("v1: address does not match its family");
    auto const sport = v1_port(f[4]);
    auto const dport = v1_port(f[5]);
    if (!sport || !dport) return invalid("v1: bad port");
    return complete(1, length, src, *sport);
}

proxy_parse parse_v1(std::string_view bytes)
{
    if (!starts_as(bytes, v1_prefix)) return invalid("not a PROXY header");
    auto const window = bytes.substr(0, proxy_v1_max);
    auto const end = window.find_first_of("\r\n");
    if (end == window.npos) {
        if (window.size() == proxy_v1_max) return invalid("v1: no CRLF within 107 octets");
        return {};
    }
    // §2.1: a lone CR or LF does not end the line.
    if (window[end] == '\n') return invalid("v1: LF without CR");
    if (end + 1 == window.size()) {
        if (window.size() == proxy_v1_max) return invalid("v1: no CRLF within 107 octets");
        return {};
    }
    if (window[end + 1] != '\n') return invalid("v1: CR without LF");
    return parse_v1_line(bytes.substr(0, end), end + 2);
}

std::uint16_t be16(std::string_view b, std::size_t at) noexcept
{
    return static_cast<std::uint16_t>((static_cast<unsigned char>(b[at]) << 8) | static_cast<unsigned char>(b[at + 1]));
}

proxy_parse parse_v2(std::string_view bytes) noexcept
{
    if (!starts_as(bytes, v2_signature)) return invalid("not a PROXY header");
    if (bytes.size() < proxy_v2_fixed) return {};
    auto const ver_cmd = static_cast<unsigned char>(bytes[12]);
    auto const fam = static_cast<unsigned char>(bytes[13]);
    if ((ver_cmd >> 4) != 2) return invalid("v2: version is not 2");
    unsigned const command = ver_cmd & 0xf;
    if (command > 1) return invalid("v2: command is neither LOCAL nor PROXY");
    unsigned const family = fam >> 4;
    unsigned const transport = fam & 0xf;
    if (family > 3 || transport > 2) return invalid("v2: unknown address family or transport");
    std::size_t const len = be16(bytes, 14);
    if (len > proxy_v2_max_payload) return invalid("v2: header longer than 1040 octets");
    std::size_t const total = proxy_v2_fixed + len;
    if (bytes.size() < total) return {};
    // §2.2: LOCAL is the proxy speaking for itself; the address block, if
    // any, is skipped. TLVs after the addresses are skipped too.
    if (command == 0) return complete(2, total);
    constexpr unsigned inet = 1, inet6 = 2, stream = 1;
    if (transport != stream || (family != inet && family != inet6)) return complete(2, total);
    std::size_t const addr_len = family == inet ? 4 : 16;
    if (len < 2 * addr_len + 4) return invalid("v2: address block shorter than its family needs");
    auto const* p = reinterpret_cast<unsigned char const*>(bytes.data()) + proxy_v2_fixed;
    ip_address src;
    if (family == inet) {
        src = ip_address::from_v4(std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 |
                                  p[3]);
    } else {
        std::copy(p, p + 16, src.bytes.begin());
        // One spelling for an IPv4 client, however it reached the proxy.
        static constexpr std::array<unsigned char, 12> mapped{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        src.v4 = std::equal(mapped.begin(), mapped.end(), p);
    }
    return complete(2, total, src, be16(bytes, proxy_v2_fixed + 2 * addr_len));
}

}  // namespace

proxy_parse parse_proxy_header(std::string_view bytes)
{
    if (bytes.empty()) return {};
    // The two versions differ in their first octet ('P' and CR).
    if (bytes[0] == v1_prefix[0]) return parse_v1(bytes);
    return parse_v2(bytes);
}

}  // namespace popgate::net
