#pragma once
// The sessions open now, so that the end of a SIGTERM drain can end them the
// way a timeout does: each on its own I/O thread, its deadline set to now, so
// its watchdog says its last words and closes the socket, and the session
// runs its usual end (the `end reason=shutdown` log line, after_close: an
// upstream transaction reset or closed). Without that, stopping the I/O
// threads destroyed them mid-await, silently.
#include "popgate/io/line_io.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <cstdint>
#include <mutex>
#include <unordered_map>

namespace popgate::server {

class open_sessions {
public:
    // `clock` lives as long as the registration; `ex` runs the session (one
    // I/O thread's context: the session's strand).
    std::uint64_t add(boost::asio::any_io_executor ex, io::session_clock& clock);
    void remove(std::uint64_t id);
    // Marks every open session's clock shut down and due now, on its own
    // executor; with `spare_awaiting`, not those awaiting an upstream's
    // verdict on a message (session_clock::awaiting_verdict). Returns how
    // many it asked.
    std::size_t cut_all(bool spare_awaiting = false);
    // How many sessions await an upstream's verdict on a message now.
    std::size_t awaiting_verdict();

private:
    struct entry {
        boost::asio::any_io_executor ex;
        io::session_clock* clock;
    };
    std::mutex mutex_;
    std::uint64_t next_ = 0;
    std::unordered_map<std::uint64_t, entry> open_;
};

// One registration for the life of a session.
class open_session {
public:
    open_session(open_sessions& all, boost::asio::any_io_executor ex, io::session_clock& clock);
    ~open_session();
    open_session(open_session const&) = delete;
    open_session& operator=(open_session const&) = delete;

private:
    open_sessions& all_;
    std::uint64_t id_;
};

}  // namespace popgate::server
