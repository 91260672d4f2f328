#include "popgate/io/tls_socket.hpp"

#include "popgate/io/tls.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cerrno>
#include <new>

namespace popgate::io {

namespace asio = boost::asio;
using boost::system::error_code;

tls_socket::tls_socket(asio::ip::tcp::socket& sock, asio::ssl::context& ctx, std::string_view alpn)
    : sock_(sock), alpn_(alpn)
{
    ssl_ = SSL_new(ctx.native_handle());
    if (!ssl_) throw std::bad_alloc();
    SSL_set_accept_state(ssl_);
    expect_alpn(ssl_, &alpn_);
    // OpenSSL's own reads and writes must not block the I/O thread.
    error_code ec;
    sock_.non_blocking(true, ec);
    if (ec || SSL_set_fd(ssl_, static_cast<int>(sock_.native_handle())) != 1) {
        SSL_free(ssl_);
        throw std::bad_alloc();
    }
}

tls_socket::~tls_socket() { SSL_free(ssl_); }  // the socket is the frame's: not closed here

asio::awaitable<tls_socket::step> tls_socket::after(int ret, error_code& ec)
{
    int const err = SSL_get_error(ssl_, ret);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        auto const what = err == SSL_ERROR_WANT_READ ? asio::socket_base::wait_read : asio::socket_base::wait_write;
        auto [wec] = co_await sock_.async_wait(what, asio::as_tuple(asio::use_awaitable));
        if (!wec) co_return step::again;
        ec = wec;
        co_return step::failed;
    }
    unsigned long const e = ERR_peek_error();
    if (err == SSL_ERROR_ZERO_RETURN) {
        ec = asio::error::eof;
    } else if (err == SSL_ERROR_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ec = asio::ssl::error::stream_truncated;
    } else if (err == SSL_ERROR_SYSCALL && !e) {
        ec = errno ? error_code(errno, boost::system::system_category()) : error_code(asio::error::eof);
    } else {
        ec = error_code(static_cast<int>(e ? e : static_cast<unsigned long>(err)), asio::error::get_ssl_category());
    }
    ERR_clear_error();
    co_return step::failed;
}

// OpenSSL holds the descriptor's number, not the socket: once the frame's
// watchdog closed the socket that number may already belong to another
// connection, so no SSL call may touch it. (The watchdog runs on the
// session's strand: it cannot close the socket between this check and the call.)
bool tls_socket::usable(error_code& ec) const
{
    if (sock_.is_open()) return true;
    ec = asio::error::bad_descriptor;
    return false;
}

void tls_socket::close_notify() noexcept
{
    error_code ec;
    if (!usable(ec) || !SSL_is_init_finished(ssl_)) return;
    ERR_clear_error();
    // One attempt on the non-blocking socket: a close_notify is a few dozen
    // octets; the peer's reply is not awaited (RFC 8446 §6.1 allows that).
    SSL_shutdown(ssl_);
    ERR_clear_error();
}

void tls_socket::send_nowait(std::string_view bytes) noexcept
{
    error_code ec;
    if (bytes.empty() || !usable(ec) || !SSL_is_init_finished(ssl_)) return;
    ERR_clear_error();
    std::size_t written = 0;
    SSL_write_ex(ssl_, bytes.data(), bytes.size(), &written);  // a line fits the send buffer
    ERR_clear_error();
}

asio::awaitable<error_code> tls_socket::handshake()
{
    for (;;) {
        error_code ec;
        if (!usable(ec)) co_return ec;
        ERR_clear_error();  // the thread's queue may hold another session's errors
        errno = 0;
        int const r = SSL_do_handshake(ssl_);
        if (r == 1) co_return error_code{};
        step const s = co_await after(r, ec);
        if (s == step::failed) co_return ec;
    }
}

asio::awaitable<std::pair<error_code, std::size_t>> tls_socket::read_some(asio::mutable_buffer into)
{
    if (into.size() == 0) co_return std::pair{error_code{}, std::size_t{0}};
    for (;;) {
        error_code ec;
        if (!usable(ec)) co_return std::pair{ec, std::size_t{0}};
        ERR_clear_error();
        errno = 0;
        std::size_t n = 0;
        int const r = SSL_read_ex(ssl_, into.data(), into.size(), &n);
        if (r == 1) co_return std::pair{error_code{}, n};
        step const s = co_await after(r, ec);
        if (s == step::failed) co_return std::pair{ec, std::size_t{0}};
    }
}

asio::awaitable<error_code> tls_socket::write(asio::const_buffer data)
{
    auto const* p = static_cast<unsigned char const*>(data.data());
    std::size_t left = data.size();
    while (left > 0) {
        error_code ec;
        if (!usable(ec)) co_return ec;
        ERR_clear_error();
        errno = 0;
        std::size_t n = 0;
        // Retried with the same arguments after a wait, as OpenSSL requires.
        int const r = SSL_write_ex(ssl_, p, left, &n);
        if (r == 1) {
            p += n;
            left -= n;
            continue;
        }
        step const s = co_await after(r, ec);
        if (s == step::failed) co_return ec;
    }
    co_return error_code{};
}

}  // namespace popgate::io
