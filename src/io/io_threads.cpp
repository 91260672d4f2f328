#include "popgate/io/io_threads.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <thread>

namespace popgate::io {

namespace asio = boost::asio;

io_threads::io_threads(unsigned count)
{
    count = std::max(1u, count);
    contexts_.reserve(count);
    guards_.reserve(count);
    for (unsigned i = 0; i < count; ++i) {
        // Hint 1: each context is run by exactly one thread.
        contexts_.push_back(std::make_unique<asio::io_context>(1));
        guards_.push_back(asio::make_work_guard(*contexts_.back()));
    }
}

asio::any_io_executor io_threads::next()
{
    auto const i = next_.fetch_add(1, std::memory_order_relaxed) % contexts_.size();
    return contexts_[i]->get_executor();
}

std::vector<asio::any_io_executor> io_threads::executors() const
{
    std::vector<asio::any_io_executor> all;
    all.reserve(contexts_.size());
    for (auto const& c : contexts_) all.push_back(c->get_executor());
    return all;
}

asio::awaitable<std::vector<std::size_t>> unanswered(std::vector<asio::any_io_executor> const& threads,
                                                     std::chrono::steady_clock::duration limit)
{
    auto const home = co_await asio::this_coro::executor;
    // Shared with the no-ops, which may answer after the caller is gone.
    // Only the caller's executor touches it.
    struct probe {
        std::vector<bool> answered;
        std::size_t waiting;
        asio::steady_timer timer;
    };
    auto p = std::make_shared<probe>(probe{std::vector<bool>(threads.size()), threads.size(), asio::steady_timer(home, limit)});
    for (std::size_t i = 0; i < threads.size(); ++i) {
        asio::post(threads[i], [p, i, home] {
            asio::post(home, [p, i] {
                p->answered[i] = true;
                if (--p->waiting == 0) p->timer.cancel();
            });
        });
    }
    if (p->waiting > 0) {
        auto [ec] = co_await p->timer.async_wait(asio::as_tuple(asio::use_awaitable));
        (void)ec;  // expired, or cancelled by the last answer
    }
    std::vector<std::size_t> silent;
    for (std::size_t i = 0; i < threads.size(); ++i)
        if (!p->answered[i]) silent.push_back(i);
    co_return silent;
}

void io_threads::run()
{
    std::vector<std::jthread> threads;
    threads.reserve(contexts_.size() - 1);
    for (std::size_t i = 1; i < contexts_.size(); ++i) threads.emplace_back([c = contexts_[i].get()] { c->run(); });
    contexts_.front()->run();
    // jthread joins the others on the way out.
}

void io_threads::stop()
{
    for (auto& c : contexts_) c->stop();
}

}  // namespace popgate::io
