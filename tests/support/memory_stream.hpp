#pragma once
// An io::stream in memory, for driving a session with no socket: the test
// feeds the client's bytes, the session's writes collect in output(). A read
// with nothing to give waits (on a timer that feed() and close() wake), and
// waiting() tells the test that the session has consumed everything it was
// given. start_tls() pretends: the session is told TLS is now active.
#include "popgate/io/stream.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>

namespace popgate::test {

class memory_stream final : public io::stream {
public:
    // `starttls_port`: the listener offers STLS/STARTTLS; `tls`: implicit TLS
    // (active from the start).
    memory_stream(bool starttls_port, bool tls) : starttls_port_(starttls_port), tls_(tls) {}

    void feed(std::string_view bytes)
    {
        input_ += bytes;
        wake();
    }
    // The client closes its side: reads then end with eof.
    void close()
    {
        closed_ = true;
        wake();
    }
    // The session waits for bytes and has none left to read.
    bool waiting() const noexcept { return waiting_ && input_.empty(); }
    std::string& output() noexcept { return output_; }

    boost::asio::awaitable<std::pair<boost::system::error_code, std::size_t>>
    read_some(boost::asio::mutable_buffer into) override
    {
        namespace asio = boost::asio;
        while (input_.empty() && !closed_) {
            asio::steady_timer t(co_await asio::this_coro::executor, asio::steady_timer::time_point::max());
            timer_ = &t;
            waiting_ = true;
            co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
            waiting_ = false;
            timer_ = nullptr;
        }
        if (input_.empty()) co_return std::pair{boost::system::error_code(asio::error::eof), std::size_t{0}};
        auto const n = std::min(into.size(), input_.size());
        std::memcpy(into.data(), input_.data(), n);
        input_.erase(0, n);
        co_return std::pair{boost::system::error_code{}, n};
    }

    boost::asio::awaitable<boost::system::error_code> write(boost::asio::const_buffer data) override
    {
        output_.append(static_cast<char const*>(data.data()), data.size());
        co_return boost::system::error_code{};
    }

    bool can_start_tls() const noexcept override { return starttls_port_ && !tls_; }
    boost::asio::awaitable<bool> start_tls() override
    {
        if (!can_start_tls()) co_return false;
        tls_ = true;
        co_return true;
    }
    bool tls_active() const noexcept override { return tls_; }

private:
    void wake()
    {
        if (timer_) timer_->cancel();
    }

    bool starttls_port_;
    bool tls_;
    bool closed_ = false;
    bool waiting_ = false;
    boost::asio::steady_timer* timer_ = nullptr;
    std::string input_;
    std::string output_;
};

}  // namespace popgate::test
