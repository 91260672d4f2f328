#pragma once
// The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2)
// that a load balancer puts in front of a relayed connection to say who the
// client is. Pure code: bytes in, verdict out; the connection frame
// (server/frame.cpp) does the reading and decides whom to believe.
#include "popgate/net/ip.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace popgate::net {

// proxy-protocol.txt §2.1: the longest v1 line, CRLF included
// ("PROXY UNKNOWN <ipv6> <ipv6> 65535 65535\r\n").
inline constexpr std::size_t proxy_v1_max = 107;
// §2.2: a v2 header is 16 bytes and the length they announce. The spec allows
// up to 65535; addresses take at most 216 and HAProxy's TLVs (ALPN, SNI, SSL,
// unique id) a few hundred more, and the sender keeps the whole header within
// one MSS. Longer is refused.
inline constexpr std::size_t proxy_v2_max_payload = 1024;
inline constexpr std::size_t proxy_v2_fixed = 16;
inline constexpr std::size_t proxy_header_max = proxy_v2_fixed + proxy_v2_max_payload;

struct proxy_header {
    int version = 0;          // 1 or 2
    std::size_t length = 0;   // octets of the header; what follows is the client's
    // The client's address and port as the proxy saw them. Empty for v1
    // UNKNOWN, v2 LOCAL (the proxy's own health check) and a v2 family or
    // transport popgate does not serve (UNSPEC, UNIX, UDP): §2.2 says to use
    // the real connection's addresses then, i.e. the proxy's.
    std::optional<ip_address> source;
    std::uint16_t port = 0;  // the source port
};

enum class proxy_status {
    complete,    // header parsed; header.length octets are its own
    incomplete,  // every octet so far belongs to a header that has not ended yet
    invalid,     // not a PROXY header (or a broken one): close the connection
};

struct proxy_parse {
    proxy_status status = proxy_status::incomplete;
    proxy_header header;    // status == complete
    std::string_view why;   // status == invalid: a fixed phrase for the log
};

// Parses the start of a connection. `bytes` may run past the header (the
// client's first bytes); an `incomplete` answer guarantees it does not, so a
// reader may take all of them off the socket and wait for more. Nothing is
// guessed: the first octet that cannot be part of a v1 or v2 header makes the
// whole invalid.
proxy_parse parse_proxy_header(std::string_view bytes);

}  // namespace popgate::net
