// Pure POP3 session logic: CAPA and the maildrop view. The command steps are
// in pop3_steps.cpp.
#include "popgate/session/pop3/pop3_state.hpp"

namespace popgate::session {

using proto::pop3_verb;

bool pop3_allowed(pop3_verb v, pop3_phase phase) noexcept
{
    return proto::spec_for(v).allowed_in(phase);
}

std::vector<proto::sasl_mech> pop3_sasl_mechs(pop3_offer const& o)
{
    std::vector<proto::sasl_mech> out;
    if (o.plaintext) {
        out.push_back(proto::sasl_mech::plain);
        out.push_back(proto::sasl_mech::login);
    }
    if (o.cram_md5) out.push_back(proto::sasl_mech::cram_md5);
    return out;
}

std::string pop3_capa(pop3_offer const& o, pop3_phase phase)
{
    std::string out = "+OK Capability list follows\r\n";
    out += "TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n";
    if (phase == pop3_phase::authorization) {
        if (o.plaintext) out += "USER\r\n";
        if (o.stls) out += "STLS\r\n";
        auto const mechs = pop3_sasl_mechs(o);
        if (!mechs.empty()) {
            out += "SASL";
            for (auto m : mechs) {
                out += ' ';
                out += proto::sasl_mech_name(m);
            }
            out += "\r\n";
        }
    }
    out += "IMPLEMENTATION popgate\r\n.\r\n";
    return out;
}

std::string pop3_auth_list(pop3_offer const& o)
{
    std::string out = "+OK Supported mechanisms follow\r\n";
    for (auto m : pop3_sasl_mechs(o)) {
        out += proto::sasl_mech_name(m);
        out += "\r\n";
    }
    out += ".\r\n";
    return out;
}

pop3_maildrop::pop3_maildrop(std::vector<mail::message_entry> messages)
    : messages_(std::move(messages)), deleted_(messages_.size(), false)
{
}

std::size_t pop3_maildrop::live_count() const noexcept
{
    std::size_t n = 0;
    for (bool d : deleted_) n += d ? 0 : 1;
    return n;
}

std::uint64_t pop3_maildrop::live_octets() const noexcept
{
    std::uint64_t n = 0;
    for (std::size_t i = 0; i < messages_.size(); ++i)
        if (!deleted_[i]) n += messages_[i].size;
    return n;
}

std::string pop3_maildrop::stat() const
{
    // RFC 1939 §5: "+OK nn mm", nothing else on the line (clients parse it).
    return "+OK " + std::to_string(live_count()) + " " + std::to_string(live_octets()) + "\r\n";
}

pop3_maildrop::lookup pop3_maildrop::find(std::uint32_t n) const
{
    if (n == 0 || n > messages_.size())
        return {nullptr, proto::pop3_err("no such message, only " + std::to_string(messages_.size()) +
                                         " messages in maildrop")};
    if (deleted_[n - 1]) return {nullptr, proto::pop3_err("message " + std::to_string(n) + " already deleted")};
    return {&messages_[n - 1], {}};
}

pop3_maildrop::lookup pop3_maildrop::find(std::string_view number) const
{
    auto n = proto::parse_msg_number(number);
    if (!n) return {nullptr, proto::pop3_err("invalid message number")};
    return find(*n);
}

std::string pop3_maildrop::list(std::string_view args) const
{
    if (!args.empty()) {
        auto l = find(args);
        if (!l.msg) return l.error;
        auto const n = static_cast<std::size_t>(l.msg - messages_.data()) + 1;
        return proto::pop3_ok(std::to_string(n) + " " + std::to_string(l.msg->size));
    }
    std::string out = proto::pop3_ok(std::to_string(live_count()) + " messages (" + std::to_string(live_octets()) +
                                      " octets)");
    for (std::size_t i = 0; i < messages_.size(); ++i)
        if (!deleted_[i]) out += std::to_string(i + 1) + " " + std::to_string(messages_[i].size) + "\r\n";
    out += ".\r\n";
    return out;
}

std::string pop3_maildrop::uidl(std::string_view args) const
{
    if (!args.empty()) {
        auto l = find(args);
        if (!l.msg) return l.error;
        auto const n = static_cast<std::size_t>(l.msg - messages_.data()) + 1;
        return proto::pop3_ok(std::to_string(n) + " " + l.msg->uid);
    }
    std::string out = proto::pop3_ok("");
    for (std::size_t i = 0; i < messages_.size(); ++i)
        if (!deleted_[i]) out += std::to_string(i + 1) + " " + messages_[i].uid + "\r\n";
    out += ".\r\n";
    return out;
}

std::string pop3_maildrop::dele(std::string_view args)
{
    auto l = find(args);
    if (!l.msg) return l.error;
    auto const i = static_cast<std::size_t>(l.msg - messages_.data());
    deleted_[i] = true;
    return proto::pop3_ok("message " + std::to_string(i + 1) + " deleted");
}

std::string pop3_maildrop::rset()
{
    deleted_.assign(messages_.size(), false);
    return proto::pop3_ok("maildrop has " + std::to_string(live_count()) + " messages (" +
                          std::to_string(live_octets()) + " octets)");
}

std::vector<mail::message_entry> pop3_maildrop::marked() const
{
    std::vector<mail::message_entry> out;
    for (std::size_t i = 0; i < messages_.size(); ++i)
        if (deleted_[i]) out.push_back(messages_[i]);
    return out;
}

}  // namespace popgate::session
