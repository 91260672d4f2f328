// The protocol registry: one line per protocol a [[listener]] can name.
#include "popgate/daemon/context.hpp"
#include "popgate/session/policy/policy_protocol.hpp"
#include "popgate/session/http/http_protocol.hpp"
#include "popgate/session/pop3/pop3_protocol.hpp"
#include "popgate/session/smtp/smtp_protocol.hpp"

#include <array>
#include <stdexcept>

namespace popgate::daemon {
namespace {

using maker = std::unique_ptr<server::protocol> (*)(context&);

struct registration {
    std::string_view name;
    maker make;
};

template <class Protocol, auto Services>
std::unique_ptr<server::protocol> make(context& c)
{
    return std::make_unique<Protocol>((c.*Services)());
}

constexpr std::array registry{
    registration{"pop3", make<session::pop3_protocol, &context::pop3_services>},
    registration{"smtp", make<session::smtp_protocol, &context::smtp_services>},
    registration{"policy", make<session::policy_protocol, &context::policy_services>},
    registration{"http", make<session::http_protocol, &context::http_services>},
};

constexpr auto names = [] {
    std::array<std::string_view, registry.size()> out{};
    for (std::size_t i = 0; i < registry.size(); ++i) out[i] = registry[i].name;
    return out;
}();

}  // namespace

std::vector<std::unique_ptr<server::protocol>> make_protocols(context& c)
{
    std::vector<std::unique_ptr<server::protocol>> out;
    for (auto const& r : registry) {
        out.push_back(r.make(c));
        if (out.back()->name() != r.name) throw std::logic_error("protocol registered under another name");
    }
    return out;
}

}  // namespace popgate::daemon

std::span<std::string_view const> popgate::config::listener_protocols() noexcept
{
    return popgate::daemon::names;
}
