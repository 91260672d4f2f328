#include "popgate/server/open_sessions.hpp"

#include <boost/asio/post.hpp>

#include <vector>

namespace popgate::server {

std::uint64_t open_sessions::add(boost::asio::any_io_executor ex, io::session_clock& clock)
{
    std::lock_guard lock(mutex_);
    open_.emplace(++next_, entry{std::move(ex), &clock});
    return next_;
}

void open_sessions::remove(std::uint64_t id)
{
    std::lock_guard lock(mutex_);
    open_.erase(id);
}

std::size_t open_sessions::awaiting_verdict()
{
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (auto const& [id, e] : open_) n += e.clock->awaiting_verdict.load() ? 1 : 0;
    return n;
}

std::size_t open_sessions::cut_all(bool spare_awaiting)
{
    std::vector<std::pair<std::uint64_t, boost::asio::any_io_executor>> asked;
    {
        std::lock_guard lock(mutex_);
        for (auto const& [id, e] : open_)
            if (!spare_awaiting || !e.clock->awaiting_verdict.load()) asked.emplace_back(id, e.ex);
    }
    for (auto const& [id, ex] : asked) {
        // Run where the session runs: it removes itself there too, so an
        // entry found here is a clock still alive.
        boost::asio::post(ex, [this, id = id, spare_awaiting] {
            io::session_clock* c = nullptr;
            {
                std::lock_guard lock(mutex_);
                auto const it = open_.find(id);
                if (it != open_.end()) c = it->second.clock;
            }
            if (!c || c->finished || (spare_awaiting && c->awaiting_verdict.load())) return;
            c->shutdown = true;
            c->set(io::clock::now());
        });
    }
    return asked.size();
}

open_session::open_session(open_sessions& all, boost::asio::any_io_executor ex, io::session_clock& clock)
    : all_(all), id_(all.add(std::move(ex), clock))
{
}

open_session::~open_session() { all_.remove(id_); }

}  // namespace popgate::server
