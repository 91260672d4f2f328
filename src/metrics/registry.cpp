#include "popgate/metrics/registry.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace popgate::metrics {

histogram::histogram(options bounds)
    : bounds_(bounds), counts_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds.size() + 1))
{
    for (std::size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void histogram::observe(double v) noexcept
{
    // The first bucket whose upper bound is >= v (le: "less than or equal").
    auto const i = static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(v, std::memory_order_relaxed);
}

histogram::snapshot histogram::read() const
{
    snapshot s;
    s.cumulative.reserve(bounds_.size() + 1);
    std::uint64_t running = 0;
    for (std::size_t i = 0; i <= bounds_.size(); ++i) {
        running += counts_[i].load(std::memory_order_relaxed);
        s.cumulative.push_back(running);
    }
    s.sum = sum_.load(std::memory_order_relaxed);
    return s;
}

void registry::add(collector& c)
{
    std::lock_guard lock(mutex_);
    collectors_.push_back(&c);
}

std::string registry::render() const
{
    std::lock_guard lock(mutex_);
    std::string out;
    for (auto const* c : collectors_) c->render(out);
    return out;
}

namespace {
std::string escaped(std::string_view v, bool quotes)
{
    std::string out;
    out.reserve(v.size());
    for (char ch : v) {
        if (ch == '\\') out += "\\\\";
        else if (ch == '\n') out += "\\n";
        else if (ch == '"' && quotes) out += "\\\"";
        else out += ch;
    }
    return out;
}
}  // namespace

std::string escape_label_value(std::string_view v) { return escaped(v, true); }
std::string escape_help(std::string_view v) { return escaped(v, false); }

std::string format_number(double v)
{
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    char buf[32];
    auto const r = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, r.ptr);
}

namespace detail {

std::string sample_labels(std::span<std::string const> names, std::span<std::string const> values,
                          std::string_view extra)
{
    if (names.empty() && extra.empty()) return {};
    std::string out = "{";
    for (std::size_t i = 0; i < names.size() && i < values.size(); ++i) {
        if (i) out += ',';
        out += names[i];
        out += "=\"";
        out += escape_label_value(values[i]);
        out += '"';
    }
    if (!extra.empty()) {
        if (!names.empty()) out += ',';
        out += extra;
    }
    out += '}';
    return out;
}

void render_header(std::string& out, std::string_view name, std::string_view help, std::string_view type)
{
    out.append("# HELP ").append(name).append(" ").append(escape_help(help)).append("\n");
    out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

void render_samples(std::string& out, std::string_view name, std::string const& labels, counter const& c)
{
    out.append(name).append(labels).append(" ").append(std::to_string(c.value())).append("\n");
}

void render_samples(std::string& out, std::string_view name, std::string const& labels, gauge const& g)
{
    out.append(name).append(labels).append(" ").append(std::to_string(g.value())).append("\n");
}

void render_samples(std::string& out, std::string_view name, std::span<std::string const> label_names,
                    std::span<std::string const> values, histogram const& h)
{
    auto const s = h.read();
    auto const bounds = h.bounds();
    for (std::size_t i = 0; i < s.cumulative.size(); ++i) {
        double const le = i < bounds.size() ? bounds[i] : INFINITY;
        out.append(name).append("_bucket");
        out.append(sample_labels(label_names, values, "le=\"" + format_number(le) + "\""));
        out.append(" ").append(std::to_string(s.cumulative[i])).append("\n");
    }
    auto const plain = sample_labels(label_names, values);
    out.append(name).append("_sum").append(plain).append(" ").append(format_number(s.sum)).append("\n");
    out.append(name).append("_count").append(plain).append(" ").append(std::to_string(s.cumulative.back()));
    out.append("\n");
}

}  // namespace detail
}  // namespace popgate::metrics
