#pragma once
// What a protocol plugs into the connection frame (server/frame.hpp). The
// frame accepts, reads the peer address, admits, does implicit TLS, runs the
// watchdog and writes the connect and end log lines; a protocol provides the
// conversation. A new protocol is a folder under session/ with one class
// deriving from `protocol`, plus one line in the registry (daemon/protocols.cpp).
#include "popgate/config/config.hpp"
#include "popgate/io/line_io.hpp"
#include "popgate/io/stream.hpp"
#include "popgate/net/ip.hpp"
#include "popgate/server/admission.hpp"

#include <boost/asio/awaitable.hpp>

#include <memory>
#include <string>
#include <string_view>

namespace popgate::server {

// One admitted connection, as the frame hands it to a session.
struct connection {
    std::string sid;                 // session id, first in every log line
    net::ip_address peer;            // the client (after a PROXY header, when one is trusted)
    std::string ip;                  // peer as text, for logs
    config::listener const& listener;
    // Snapshot at accept: a SIGHUP does not change a live session.
    std::shared_ptr<config::settings const> settings;
    io::stream& stream;
    io::session_clock& clock;        // the watchdog's deadline
    std::string end_reason = "eof";  // for the end log line
    // A TLS handshake cut by its timeout after the client sent part of it:
    // a stall, counted against the address. A client that sent nothing (a
    // plain-text client pointed at POP3S) is not.
    bool tls_stalled = false;
    // false when a trusted proxy's header named no client (v1 UNKNOWN, v2
    // LOCAL, a v2 UNSPEC, UNIX or UDP address block): `peer` is then the
    // proxy's own address, which stands for whoever reached it that way (a
    // health check, or every client of a frontend that takes no PROXY
    // header itself), so no login on it may grant that address.
    bool client_named = true;
};

class session {
public:
    virtual ~session() = default;
    // Greeting to the end of the conversation. Expected ends (EOF, timeout,
    // QUIT, limits) set connection::end_reason and return; broken invariants
    // throw, and the frame logs them and closes this connection only.
    virtual boost::asio::awaitable<void> run() = 0;
    // After the frame has closed the client's connection: work the client
    // must not wait for (the SMTP session resets its upstream transaction
    // here, so the client's EOF does not wait for the upstream's RSET). The
    // watchdog has stopped: the session's own timeouts bound this, and it
    // must not touch connection::stream.
    virtual boost::asio::awaitable<void> after_close() { co_return; }
    // The watchdog is about to cut the connection (a timeout, the end of a
    // drain): a line to send first, in clear or through TLS (best effort,
    // and only when the session waits at its prompt), or "".
    virtual std::string last_words() const { return {}; }
    // The protocol's own fields of the end log line, after "reason=...".
    virtual std::string end_fields() const = 0;
};

class protocol {
public:
    virtual ~protocol() = default;
    // The name a [[listener]] uses ("pop3", "smtp").
    virtual std::string_view name() const noexcept = 0;
    // The ALPN protocol ids (RFC 7301) it answers under TLS, in wire format
    // (each id after its length octet), most preferred first; "" for a
    // protocol without TLS. A client that offers ALPN without one of them is
    // refused in the handshake (io/tls.hpp).
    virtual std::string_view alpn() const noexcept = 0;
    // Which admission limits a connection from `peer` to listener `l` meets
    // (server/admission.hpp): a mail client's, unless the protocol serves
    // services.
    virtual address_limits limits_for(net::ip_address const& peer, config::listener const& l) const noexcept
    {
        (void)peer;
        (void)l;
        return address_limits::apply;
    }
    // Sent in clear, best effort, to a connection that admission refused.
    virtual std::string refusal(std::string_view why, config::settings const& s) const = 0;
    // The session for one admitted connection; `c` outlives it. Called
    // after the implicit TLS handshake, so `c.stream` is already the
    // transport the session speaks over (tls_active() on SMTPS and POP3S).
    virtual std::unique_ptr<session> open(connection& c) = 0;
};

}  // namespace popgate::server
