#include "popgate/mail/received.hpp"

#include <array>
#include <cstdio>

namespace popgate::mail {
namespace {

std::string clean(std::string_view s, std::size_t cap)
{
    std::string out;
    for (char c : s) {
        if (out.size() >= cap) break;
        auto const u = static_cast<unsigned char>(c);
        // Controls would start a new header line; parentheses and backslash
        // would end or escape the comment the value sits next to.
        if (u < 0x21 || u > 0x7e || c == '(' || c == ')' || c == '\\') out.push_back('_');
        else out.push_back(c);
    }
    return out.empty() ? std::string{"unknown"} : out;
}

}  // namespace

std::string rfc5322_date(std::time_t t)
{
    static constexpr std::array<char const*, 7> days{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr std::array<char const*, 12> months{"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[static_cast<std::size_t>(tm.tm_wday)],
                  tm.tm_mday, months[static_cast<std::size_t>(tm.tm_mon)], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                  tm.tm_sec);
    return buf;
}

std::string_view received_protocol(bool esmtp, bool tls, bool authenticated) noexcept
{
    // AUTH is an ESMTP extension: a client that used it after HELO spoke
    // ESMTP all the same, and RFC 4954 §7 asks for ESMTPA/ESMTPSA then.
    if (!esmtp && !authenticated) return tls ? "SMTPS" : "SMTP";
    if (tls) return authenticated ? "ESMTPSA" : "ESMTPS";
    return authenticated ? "ESMTPA" : "ESMTP";
}

std::string received_header(received_info const& r)
{
    std::string ip = clean(r.client_ip, 64);
    // RFC 5321 §4.1.3: IPv6 address literals carry the "IPv6:" tag.
    if (ip.find(':') != std::string::npos) ip = "IPv6:" + ip;
    std::string h = "Received: from ";
    h += clean(r.helo, 255);
    h += " (unknown [" + ip + "])\r\n\tby " + clean(r.by_host, 255) + " (popgate) with ";
    h += r.protocol;
    h += " id " + clean(r.queue_id, 32) + ";\r\n\t" + rfc5322_date(r.when) + "\r\n";
    return h;
}

}  // namespace popgate::mail
