#pragma once
// The trace header an SMTP server prepends to every message it accepts
// (RFC 5321 §4.4) and the RFC 5322 §3.3 date it carries. Pure: no I/O.
#include <ctime>
#include <string>
#include <string_view>

namespace popgate::mail {

struct received_info {
    std::string_view helo;      // the client's HELO/EHLO argument, as sent
    std::string_view client_ip; // "192.0.2.7" or IPv6 text (written "IPv6:..." in the header)
    std::string_view by_host;   // our hostname
    std::string_view protocol;  // SMTP / ESMTP / ESMTPS / ESMTPA / ESMTPSA (RFC 3848)
    std::string_view queue_id;
    std::time_t when = 0;
};

// "Received: from helo (unknown [ip])\r\n\tby host (popgate) with ESMTP id Q;\r\n\t<date>\r\n".
// Peer text is reduced to printable ASCII without '(' ')' '\\' and capped, so a
// HELO argument can neither add header lines nor break the comment.
std::string received_header(received_info const& r);

// RFC 5322 §3.3 date-time in UTC: "Tue, 02 Jan 2024 15:04:05 +0000" (locale-free).
std::string rfc5322_date(std::time_t t);

// RFC 3848 protocol name: SMTP for HELO, ESMTP for EHLO, "S" with TLS, "A" with AUTH.
std::string_view received_protocol(bool esmtp, bool tls, bool authenticated) noexcept;

}  // namespace popgate::mail
