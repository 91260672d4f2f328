// The exposition format of metrics::registry (Prometheus text format 0.0.4):
// HELP/TYPE lines, label escaping, cumulative histogram buckets, the bound
// on children, and counts from several threads.
#include "popgate/metrics/catalog.hpp"
#include "popgate/metrics/registry.hpp"

#include <boost/test/unit_test.hpp>

#include <array>
#include <limits>
#include <string>
#include <thread>
#include <vector>

using namespace popgate::metrics;

BOOST_AUTO_TEST_SUITE(metrics_registry, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(counter_with_labels_renders_help_type_and_samples)
{
    registry r;
    family<counter> logins(r, "t_logins_total", "Logins by result", {"protocol", "result"});
    logins.with({"pop3", "ok"}).inc();
    logins.with({"pop3", "ok"}).inc(2);
    logins.with({"smtp", "fail"});
    BOOST_TEST(r.render() == "# HELP t_logins_total Logins by result\n"
                             "# TYPE t_logins_total counter\n"
                             "t_logins_total{protocol=\"pop3\",result=\"ok\"} 3\n"
                             "t_logins_total{protocol=\"smtp\",result=\"fail\"} 0\n");
}

BOOST_AUTO_TEST_CASE(label_values_and_help_are_escaped)
{
    registry r;
    family<gauge> g(r, "t_open", "Help with \\ and\nnewline", {"listener"});
    g.with({"a\"b\\c\nd"}).set(-2);
    BOOST_TEST(r.render() == "# HELP t_open Help with \\\\ and\\nnewline\n"
                             "# TYPE t_open gauge\n"
                             "t_open{listener=\"a\\\"b\\\\c\\nd\"} -2\n");
    BOOST_TEST(escape_label_value("plain-value_1.2") == "plain-value_1.2");
}

BOOST_AUTO_TEST_CASE(a_family_without_children_writes_nothing)
{
    registry r;
    family<counter> unused(r, "t_unused_total", "never counted", {"x"});
    BOOST_TEST(r.render().empty());
}

BOOST_AUTO_TEST_CASE(histogram_buckets_are_cumulative_with_sum_and_count)
{
    static constexpr std::array bounds{0.25, 0.5, 1.0};
    registry r;
    family<histogram> h(r, "t_seconds", "Latency", {"step"}, bounds);
    auto& rcpt = h.with({"rcpt"});
    for (double v : {0.125, 0.25, 0.375, 0.75, 2.0, 3.0}) rcpt.observe(v);  // exact in binary
    BOOST_TEST(r.render() == "# HELP t_seconds Latency\n"
                             "# TYPE t_seconds histogram\n"
                             "t_seconds_bucket{step=\"rcpt\",le=\"0.25\"} 2\n"  // le: upper bound included
                             "t_seconds_bucket{step=\"rcpt\",le=\"0.5\"} 3\n"
                             "t_seconds_bucket{step=\"rcpt\",le=\"1\"} 4\n"
                             "t_seconds_bucket{step=\"rcpt\",le=\"+Inf\"} 6\n"
                             "t_seconds_sum{step=\"rcpt\"} 6.5\n"
                             "t_seconds_count{step=\"rcpt\"} 6\n");
}

BOOST_AUTO_TEST_CASE(histogram_without_labels_has_only_le)
{
    static constexpr std::array bounds{0.5};
    registry r;
    family<histogram> h(r, "t_commit_seconds", "Commit", {}, bounds);
    h.get().observe(0.25);
    auto const out = r.render();
    BOOST_TEST(out.find("t_commit_seconds_bucket{le=\"0.5\"} 1\n") != std::string::npos);
    BOOST_TEST(out.find("t_commit_seconds_bucket{le=\"+Inf\"} 1\n") != std::string::npos);
    BOOST_TEST(out.find("t_commit_seconds_sum 0.25\n") != std::string::npos);
    BOOST_TEST(out.find("t_commit_seconds_count 1\n") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(children_past_the_bound_count_as_other)
{
    registry r;
    family<counter> c(r, "t_bounded_total", "Bounded", {"listener"}, {}, 2);
    c.with({"a"}).inc();
    c.with({"b"}).inc();
    c.with({"c"}).inc();
    c.with({"d"}).inc(5);
    c.with({"a"}).inc();  // an existing child is still found
    auto const out = r.render();
    BOOST_TEST(out.find("t_bounded_total{listener=\"a\"} 2\n") != std::string::npos);
    BOOST_TEST(out.find("t_bounded_total{listener=\"b\"} 1\n") != std::string::npos);
    BOOST_TEST(out.find("t_bounded_total{listener=\"other\"} 6\n") != std::string::npos);
    BOOST_TEST(out.find("\"c\"") == std::string::npos);
    BOOST_TEST(out.find("\"d\"") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(wrong_number_of_label_values_is_other_not_a_crash)
{
    registry r;
    family<counter> c(r, "t_pairs_total", "Pairs", {"a", "b"});
    c.with({"only-one"}).inc();
    BOOST_TEST(r.render().find("t_pairs_total{a=\"other\",b=\"other\"} 1\n") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(counts_from_many_threads_are_all_kept)
{
    registry r;
    family<counter> c(r, "t_threads_total", "Threads", {"verdict"});
    static constexpr char const* verdicts[] = {"grant", "denied", "local", "auth"};
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t)
        ts.emplace_back([&c] {
            for (int i = 0; i < 10000; ++i) c.with({verdicts[i % 4]}).inc();
        });
    for (auto& t : ts) t.join();
    auto const out = r.render();
    for (auto v : verdicts)
        BOOST_TEST(out.find("t_threads_total{verdict=\"" + std::string(v) + "\"} 10000\n") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(numbers_are_written_in_shortest_form)
{
    BOOST_TEST(format_number(0.005) == "0.005");
    BOOST_TEST(format_number(1.0) == "1");
    BOOST_TEST(format_number(300.0) == "300");
    BOOST_TEST(format_number(std::numeric_limits<double>::infinity()) == "+Inf");
}

BOOST_AUTO_TEST_CASE(the_catalog_declares_its_fixed_series_at_zero)
{
    auto const out = process().render();
    BOOST_TEST(out.find("# TYPE popgate_relay_decisions_total counter\n") != std::string::npos);
    BOOST_TEST(out.find("popgate_relay_decisions_total{asker=\"smtp\",verdict=\"denied\"} ") != std::string::npos);
    BOOST_TEST(out.find("popgate_build_info{version=\"" POPGATE_VERSION "\",commit=\"") != std::string::npos);
    BOOST_TEST(out.find("popgate_grant_commit_seconds_bucket{le=\"+Inf\"} ") != std::string::npos);
    declare_listener("pop3s", "pop3", true);
    auto const after = process().render();
    BOOST_TEST(after.find("popgate_sessions_open{listener=\"pop3s\",protocol=\"pop3\"} 0\n") != std::string::npos);
    BOOST_TEST(after.find("popgate_tls_handshakes_total{listener=\"pop3s\",result=\"failed\"} 0\n") !=
               std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
