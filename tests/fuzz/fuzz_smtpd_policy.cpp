// Postfix policy delegation requests: the input split at LF into lines and
// fed to the parser as the session does; whatever comes in, the request
// stays within its bounds and an error stops the feed.
#include "fuzz_support.hpp"
#include "popgate/proto/smtpd_policy.hpp"

#include <string>

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
    using namespace popgate::proto;
    auto in = as_view(data, size);
    policy_request r;
    while (!in.empty()) {
        auto const lf = in.find('\n');
        auto const line = in.substr(0, lf);
        in = lf == std::string_view::npos ? std::string_view{} : in.substr(lf + 1);
        auto const res = policy_add_line(r, line);
        POPGATE_FUZZ_CHECK(r.attributes <= policy_max_attributes);
        if (!res) {
            POPGATE_FUZZ_CHECK(!policy_violation_action(res.error()).empty());
            return 0;
        }
        POPGATE_FUZZ_CHECK(line.size() < policy_max_line);
        if (*res == policy_line::end) {
            (void)policy_scope_of(r);
            auto const a = policy_answer(policy_action(relay_verdict::deny, "OK"));
            POPGATE_FUZZ_CHECK(a == "action=DUNNO\n\n");
            r = {};
        }
    }
    return 0;
}
