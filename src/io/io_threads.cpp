#include "popgate/io/io_threads.hpp"

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
