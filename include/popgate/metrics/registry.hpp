#pragma once
// Counters, gauges and histograms with labels, written out in the Prometheus
// text exposition format 0.0.4 (what GET /metrics on the HTTP listener
// answers). The hot paths only add to relaxed atomics: a counted point is
// one line, `metrics::logins.with({"pop3", "pass", "ok"}).inc()`.
//
// A family is one metric name with fixed label names. Its children (one per
// set of label values) are created on first use and never removed, so a
// reference to one stays valid for the life of the family. Finding a child
// reads without a lock (a short scan of an append-only table); creating one
// takes the family's mutex. Cardinality is bounded: label values come from
// small fixed sets (protocols, mechanisms, verdicts, listener names), never
// from a client (no user names, no addresses), and a family holds at most
// `max_children`; past that, new label sets all count in one child whose
// values are "other".
//
// No Asio, no spdlog: every room may count.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace popgate::metrics {

class counter {
public:
    struct options {};
    explicit counter(options = {}) noexcept {}
    static constexpr std::string_view type_name = "counter";
    void inc(std::uint64_t n = 1) noexcept { v_.fetch_add(n, std::memory_order_relaxed); }
    std::uint64_t value() const noexcept { return v_.load(std::memory_order_relaxed); }

private:
    std::atomic<std::uint64_t> v_{0};
};

class gauge {
public:
    struct options {};
    explicit gauge(options = {}) noexcept {}
    static constexpr std::string_view type_name = "gauge";
    void inc() noexcept { v_.fetch_add(1, std::memory_order_relaxed); }
    void dec() noexcept { v_.fetch_sub(1, std::memory_order_relaxed); }
    void set(std::int64_t v) noexcept { v_.store(v, std::memory_order_relaxed); }
    std::int64_t value() const noexcept { return v_.load(std::memory_order_relaxed); }

private:
    std::atomic<std::int64_t> v_{0};
};

// Holds a gauge up for a scope (a session open).
class gauge_hold {
public:
    explicit gauge_hold(gauge& g) noexcept : g_(g) { g_.inc(); }
    ~gauge_hold() { g_.dec(); }
    gauge_hold(gauge_hold const&) = delete;
    gauge_hold& operator=(gauge_hold const&) = delete;

private:
    gauge& g_;
};

class histogram {
public:
    // Upper bounds of the buckets, ascending, in static storage; +Inf is implied.
    using options = std::span<double const>;
    explicit histogram(options bounds);
    static constexpr std::string_view type_name = "histogram";
    void observe(double v) noexcept;

    struct snapshot {
        std::vector<std::uint64_t> cumulative;  // per bound, then +Inf (= count)
        double sum = 0;
    };
    snapshot read() const;
    std::span<double const> bounds() const noexcept { return bounds_; }

private:
    std::span<double const> bounds_;
    std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;  // per bucket (not cumulative), +Inf last
    std::atomic<double> sum_{0};
};

// One family as the registry writes it out.
class collector {
public:
    virtual ~collector() = default;
    // Appends HELP, TYPE and the samples; nothing for a family with no child yet.
    virtual void render(std::string& out) const = 0;
};

class registry {
public:
    registry() = default;
    registry(registry const&) = delete;
    registry& operator=(registry const&) = delete;
    // `c` must outlive the registry's use; written out in the order added.
    void add(collector& c);
    // The whole exposition (text format 0.0.4).
    std::string render() const;

private:
    mutable std::mutex mutex_;
    std::vector<collector*> collectors_;
};

// The exposition's escapes: a label value gets \\, \" and \n; HELP text \\ and \n.
std::string escape_label_value(std::string_view v);
std::string escape_help(std::string_view v);
// A sample value or bucket bound: shortest round-trip form, "+Inf", "NaN".
std::string format_number(double v);

namespace detail {
// `name{a="x",b="y"}` with `extra` (le="...") appended to the labels.
std::string sample_labels(std::span<std::string const> names, std::span<std::string const> values,
                          std::string_view extra = {});
void render_header(std::string& out, std::string_view name, std::string_view help, std::string_view type);
void render_samples(std::string& out, std::string_view name, std::string const& labels, counter const& c);
void render_samples(std::string& out, std::string_view name, std::string const& labels, gauge const& g);
void render_samples(std::string& out, std::string_view name, std::span<std::string const> label_names,
                    std::span<std::string const> values, histogram const& h);
}  // namespace detail

template <class Metric>
class family final : public collector {
public:
    static constexpr std::size_t default_max_children = 64;

    family(registry& r, std::string name, std::string help, std::vector<std::string> label_names,
           typename Metric::options o = {}, std::size_t max_children = default_max_children)
        : name_(std::move(name)), help_(std::move(help)), label_names_(std::move(label_names)), options_(o),
          max_(max_children), slots_(std::make_unique<std::unique_ptr<child>[]>(max_children + 1))
    {
        r.add(*this);
    }

    // The child for these label values (as many as label names), created on
    // first use. Lock-free once it exists.
    Metric& with(std::initializer_list<std::string_view> values)
    {
        if (auto* m = find(values, count_.load(std::memory_order_acquire))) return *m;
        std::lock_guard lock(mutex_);
        auto const n = count_.load(std::memory_order_relaxed);
        if (auto* m = find(values, n)) return *m;
        bool const full = n >= max_ || values.size() != label_names_.size();
        if (full) {
            if (!overflow_) {
                // Stored past the table: counted, rendered, never matched.
                std::vector<std::string> other(label_names_.size(), "other");
                slots_[max_] = std::make_unique<child>(std::move(other), options_);
                overflow_ = slots_[max_].get();
            }
            return overflow_->metric;
        }
        slots_[n] = std::make_unique<child>(std::vector<std::string>(values.begin(), values.end()), options_);
        count_.store(n + 1, std::memory_order_release);
        return slots_[n]->metric;
    }
    // The one child of a family without labels.
    Metric& get() { return with({}); }

    std::string_view name() const noexcept { return name_; }

    void render(std::string& out) const override
    {
        std::lock_guard lock(mutex_);  // scrapes only: the hot path never takes it
        auto const n = count_.load(std::memory_order_relaxed);
        if (n == 0 && !overflow_) return;
        detail::render_header(out, name_, help_, Metric::type_name);
        for (std::size_t i = 0; i < n; ++i) render_child(out, *slots_[i]);
        if (overflow_) render_child(out, *overflow_);
    }

private:
    struct child {
        child(std::vector<std::string> v, typename Metric::options o) : values(std::move(v)), metric(o) {}
        std::vector<std::string> values;
        Metric metric;
    };

    Metric* find(std::initializer_list<std::string_view> values, std::size_t n) const noexcept
    {
        for (std::size_t i = 0; i < n; ++i) {
            auto const& have = slots_[i]->values;
            if (have.size() != values.size()) continue;
            std::size_t k = 0;
            for (auto v : values) {
                if (have[k] != v) break;
                ++k;
            }
            if (k == have.size()) return &slots_[i]->metric;
        }
        return nullptr;
    }

    void render_child(std::string& out, child const& c) const
    {
        if constexpr (std::is_same_v<Metric, histogram>)
            detail::render_samples(out, name_, label_names_, c.values, c.metric);
        else
            detail::render_samples(out, name_, detail::sample_labels(label_names_, c.values), c.metric);
    }

    std::string name_;
    std::string help_;
    std::vector<std::string> label_names_;
    typename Metric::options options_;
    std::size_t max_;
    // Append-only: slots_[i] for i < count_ is published by count_ (release)
    // and never changes after; slots_[max_] holds the overflow child.
    std::unique_ptr<std::unique_ptr<child>[]> slots_;
    std::atomic<std::size_t> count_{0};
    child* overflow_ = nullptr;  // under mutex_
    mutable std::mutex mutex_;
};

}  // namespace popgate::metrics
