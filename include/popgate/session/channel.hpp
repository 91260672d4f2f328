#pragma once
// A session's line channel: the stream, its line reader and the replies not
// yet written (RFC 2920 §3.1: replies to pipelined commands go out together,
// when the client will wait for them). Both protocols talk through it; the
// SASL exchange (session/auth_flow.hpp) too.
#include "popgate/io/line_io.hpp"
#include "popgate/server/protocol.hpp"
#include "popgate/session/log_line.hpp"

#include <spdlog/spdlog.h>

#include <string>
#include <string_view>
#include <vector>

namespace popgate::session {

namespace asio = boost::asio;

class channel {
public:
    channel(server::connection& c, std::size_t max_line, io::clock::duration idle)
        : conn_(c), reader_(max_line, c.settings->command_timeout), idle_(idle)
    {
    }

    server::connection& conn() noexcept { return conn_; }
    io::line_reader& reader() noexcept { return reader_; }
    io::clock::duration idle() const noexcept { return idle_; }

    void queue(std::string_view bytes) { out_ += bytes; }
    bool has_output() const noexcept { return !out_.empty(); }
    // Writes what is queued; false when the peer is gone or the deadline passed.
    asio::awaitable<bool> flush();
    asio::awaitable<bool> send(std::string_view bytes);
    // The next line, the idle timeout armed while waiting (and `limit`, if
    // any, for the whole read). The session's own work after it gets a full
    // idle period too (the clock is re-armed).
    asio::awaitable<io::read_status> read_line(std::string& line,
                                               std::optional<io::clock::time_point> limit = std::nullopt);

    void write_log(std::vector<log_line> const& lines) const;

private:
    server::connection& conn_;
    io::line_reader reader_;
    io::clock::duration idle_;
    std::string out_;
};

// Waits `d` (the brute-force delay); returns at once for zero.
asio::awaitable<void> pause(std::chrono::milliseconds d);

}  // namespace popgate::session
