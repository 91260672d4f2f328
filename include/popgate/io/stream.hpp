#pragma once
// A session's byte stream, as the session sees it: read what arrived, write
// all of a buffer, and upgrade to TLS in place (STLS, STARTTLS). The
// connection frame implements it over a TCP socket (and an OpenSSL stream
// after the handshake); tests implement it in memory. Sessions are written
// against this interface only, so one session coroutine serves clear text,
// implicit TLS, an upgraded connection and a transcript test alike.
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <utility>

namespace popgate::io {

class stream {
public:
    virtual ~stream() = default;

    // Whatever has arrived (at least one byte), or an error: eof when the
    // peer closed, any error once the frame's watchdog closed the connection.
    virtual boost::asio::awaitable<std::pair<boost::system::error_code, std::size_t>>
    read_some(boost::asio::mutable_buffer into) = 0;

    // All of `data`, or the error that stopped it.
    virtual boost::asio::awaitable<boost::system::error_code> write(boost::asio::const_buffer data) = 0;

    // Whether start_tls() can be offered now: the listener allows an upgrade,
    // a certificate is loaded, and TLS is not active yet.
    virtual bool can_start_tls() const noexcept = 0;
    // The server side of the TLS handshake on this connection. false: it
    // failed (logged by the frame); the session must end.
    virtual boost::asio::awaitable<bool> start_tls() = 0;
    virtual bool tls_active() const noexcept = 0;
};

}  // namespace popgate::io
