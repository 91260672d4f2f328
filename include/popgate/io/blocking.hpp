#pragma once
// Runs slow, blocking work (crypt(3), SQLite writes, fsync) on the blocking
// pool and resumes the calling coroutine on its own executor afterwards, so an
// I/O thread never stalls (DESIGN decision 3). Exceptions cross back intact.
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "popgate/io/task_clock.hpp"

#include <chrono>
#include <exception>
#include <optional>
#include <type_traits>

namespace popgate::io {

namespace asio = boost::asio;

template <class F>
auto run_blocking(asio::thread_pool& pool, F f)
{
    using raw_t = std::invoke_result_t<F&>;
    using value_t = std::conditional_t<std::is_void_v<raw_t>, bool, raw_t>;
    return asio::async_initiate<asio::use_awaitable_t<> const, void(std::exception_ptr, value_t)>(
        [&pool](auto handler, F fn) {
            auto work = asio::make_work_guard(asio::get_associated_executor(handler));
            auto const posted = std::chrono::steady_clock::now();
            asio::post(pool, [h = std::move(handler), fn = std::move(fn), work = std::move(work), posted]() mutable {
                std::exception_ptr ep;
                std::optional<value_t> v;
                task_waited = std::chrono::steady_clock::now() - posted;
                try {
                    if constexpr (std::is_void_v<raw_t>) {
                        fn();
                        v.emplace(true);
                    } else {
                        v.emplace(fn());
                    }
                } catch (...) {
                    ep = std::current_exception();
                }
                task_waited = {};
                auto ex = asio::get_associated_executor(h);
                asio::dispatch(ex, [h = std::move(h), ep, v = std::move(v)]() mutable {
                    std::move(h)(ep, v ? std::move(*v) : value_t{});
                });
            });
        },
        asio::use_awaitable, std::move(f));
}

// A read of the store: in place when `here` (SQLite: an indexed read from
// the page cache, cheaper than the hop), on the pool when it would cross
// the network (PostgreSQL), so that a slow server stalls no I/O thread.
template <class F>
asio::awaitable<std::invoke_result_t<F&>> run_here_or_blocking(bool here, asio::thread_pool& pool, F f)
{
    if (here) co_return f();
    co_return co_await run_blocking(pool, std::move(f));
}

}  // namespace popgate::io
