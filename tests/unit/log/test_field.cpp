// log::field: no value that came from outside can forge a field of the line.
#include "popgate/log/log.hpp"

#include <boost/test/unit_test.hpp>

#include <regex>
#include <string>
#include <utility>
#include <vector>

using popgate::log::field;

namespace {

// A reader of key=value lines as a log shipper would write one: a value is
// bare up to the next space, or a double-quoted string with \" \\ \xNN.
std::vector<std::pair<std::string, std::string>> parse_fields(std::string const& line)
{
    std::vector<std::pair<std::string, std::string>> out;
    std::size_t i = 0;
    while (i < line.size()) {
        while (i < line.size() && line[i] == ' ') ++i;
        auto const eq = line.find('=', i);
        BOOST_REQUIRE(eq != std::string::npos);
        std::string key = line.substr(i, eq - i);
        BOOST_REQUIRE(key.find(' ') == std::string::npos);
        i = eq + 1;
        std::string value;
        if (i < line.size() && line[i] == '"') {
            for (++i; i < line.size() && line[i] != '"'; ++i) {
                if (line[i] != '\\') {
                    value += line[i];
                } else if (line[i + 1] == 'x') {
                    value += static_cast<char>(std::stoi(line.substr(i + 2, 2), nullptr, 16));
                    i += 3;
                } else {
                    value += line[++i];
                }
            }
            BOOST_REQUIRE(i < line.size());  // the closing quote
            ++i;
        } else {
            auto const end = std::min(line.find(' ', i), line.size());
            value = line.substr(i, end - i);
            i = end;
        }
        out.emplace_back(std::move(key), std::move(value));
    }
    return out;
}

std::vector<std::string> const hostile{
    "evil ip=192.0.2.66 result=ok",
    "evil\" ip=192.0.2.66 result=\"ok",
    "a\\\" ip=192.0.2.66",
    "ip=192.0.2.66",
    "x\r\n2026-12-03T00:00:00.000+0000 info sid=1 pop3 login user=x ip=192.0.2.66 result=fail",
    "tab\tip=192.0.2.66",
    std::string("nul\0 ip=192.0.2.66", 18),
    "caf\xc3\xa9 ip=192.0.2.66",
    "\\x20ip=192.0.2.66",
    "\"",
    "\\",
    "",
    " ",
};

}  // namespace

BOOST_AUTO_TEST_SUITE(log_field)

BOOST_AUTO_TEST_CASE(plain_values_stay_bare)
{
    BOOST_TEST(field("alice") == "alice");
    BOOST_TEST(field("alice@example.org") == "alice@example.org");
    BOOST_TEST(field("<bob@example.org>") == "<bob@example.org>");
    BOOST_TEST(field("2001:db8::/32") == "2001:db8::/32");
}

BOOST_AUTO_TEST_CASE(anything_else_is_quoted_and_escaped)
{
    BOOST_TEST(field("") == "\"\"");
    BOOST_TEST(field("a b") == "\"a b\"");
    BOOST_TEST(field("a=b") == "\"a\\x3db\"");
    BOOST_TEST(field("say \"hi\"") == "\"say \\\"hi\\\"\"");
    BOOST_TEST(field("back\\slash") == "\"back\\\\slash\"");
    BOOST_TEST(field("cr\rlf\n") == "\"cr\\x0dlf\\x0a\"");
    BOOST_TEST(field("caf\xc3\xa9") == "\"caf\\xc3\\xa9\"");
}

BOOST_AUTO_TEST_CASE(long_values_are_cut_inside_the_field)
{
    BOOST_TEST(field(std::string(200, 'a'), 10) == "aaaaaaaaaa...");
    BOOST_TEST(field(std::string(20, ' '), 4) == "\"    ...\"");
    // A cut never splits an escape.
    BOOST_TEST(field(std::string(20, '='), 2) == "\"\\x3d\\x3d...\"");
}

BOOST_AUTO_TEST_CASE(a_hostile_value_cannot_forge_a_field)
{
    static std::regex const naive_ip(R"((?:^| )ip=(\S+))");
    for (auto const& name : hostile) {
        std::string const line = "pop3 login user=" + field(name, 200) + " ip=203.0.113.7 result=fail";
        BOOST_TEST_CONTEXT(line)
        {
            BOOST_TEST(line.find('\n') == std::string::npos);
            BOOST_TEST(line.find('\r') == std::string::npos);
            // The regex a fail2ban filter would be written with finds one ip=: the true one.
            auto it = std::sregex_iterator(line.begin(), line.end(), naive_ip);
            std::vector<std::string> ips;
            for (; it != std::sregex_iterator(); ++it) ips.push_back((*it)[1].str());
            BOOST_TEST(ips == std::vector<std::string>{"203.0.113.7"});
            // A structured reader finds exactly the fields written, and the name intact.
            auto const f = parse_fields(line.substr(line.find("user=")));
            BOOST_REQUIRE(f.size() == 3u);
            BOOST_TEST(f[0].first == "user");
            BOOST_TEST(f[0].second == name);
            BOOST_TEST(f[1].first == "ip");
            BOOST_TEST(f[1].second == "203.0.113.7");
            BOOST_TEST(f[2].first == "result");
            BOOST_TEST(f[2].second == "fail");
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()
