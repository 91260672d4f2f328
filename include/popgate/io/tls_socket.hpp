#pragma once
// The server side of TLS straight on a TCP socket's file descriptor
// (SSL_set_fd): OpenSSL reads and writes the socket itself and Asio only waits
// for it to become readable or writable. asio::ssl::stream keeps two 17 KB
// buffers of its own and a 2 x 17 KB BIO pair per connection for the
// connection's whole life; here an idle session holds OpenSSL's SSL object
// only, its record buffers released between records (SSL_MODE_RELEASE_BUFFERS
// on the context). 10,000 idle TLS sessions fit in a fraction of the memory.
//
// One operation at a time (the session coroutine is sequential); closing the
// socket (the frame's watchdog) ends any wait with an error.
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <string_view>
#include <utility>

struct ssl_st;

namespace popgate::io {

class tls_socket {
public:
    // Throws std::bad_alloc when OpenSSL cannot make the SSL object. `alpn`:
    // the ALPN ids the session answers (io::expect_alpn), in static storage.
    tls_socket(boost::asio::ip::tcp::socket& sock, boost::asio::ssl::context& ctx, std::string_view alpn);
    ~tls_socket();
    tls_socket(tls_socket const&) = delete;
    tls_socket& operator=(tls_socket const&) = delete;

    ssl_st* native_handle() const noexcept { return ssl_; }

    boost::asio::awaitable<boost::system::error_code> handshake();
    // At least one byte, or an error: eof for a close_notify, stream_truncated
    // (as Asio reports it) for a TCP close without one.
    boost::asio::awaitable<std::pair<boost::system::error_code, std::size_t>>
    read_some(boost::asio::mutable_buffer into);
    boost::asio::awaitable<boost::system::error_code> write(boost::asio::const_buffer data);
    // Sends a close_notify if the socket is still open, without waiting: a
    // client that sees the TCP close without one counts the connection as
    // truncated and (OpenSSL) discards the session instead of resuming it.
    void close_notify() noexcept;
    // Last words before a close (a timeout, the end of a drain): one
    // non-blocking attempt, errors ignored. Only between operations (the
    // session waits for a command, no write of its own pending): OpenSSL
    // refuses a new write while one is unfinished.
    void send_nowait(std::string_view bytes) noexcept;

private:
    bool usable(boost::system::error_code& ec) const;
    enum class step { done, again, failed };
    // After an SSL call that returned `ret`: waits when OpenSSL wants the
    // socket readable or writable (again), or sets ec (failed).
    boost::asio::awaitable<step> after(int ret, boost::system::error_code& ec);

    boost::asio::ip::tcp::socket& sock_;
    ssl_st* ssl_ = nullptr;
    std::string_view alpn_;  // the handshake's ALPN callback reads it through ssl_
};

}  // namespace popgate::io
