#pragma once
// Protocol and parse errors shared by every pure parser in popgate::proto.
// The session layer turns them into replies; nothing here does I/O.
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

namespace popgate::proto {

enum class errc {
    empty_line = 1,
    line_too_long,
    unknown_command,
    bad_arguments,
    bare_cr_or_lf,      // CR or LF outside a CRLF pair (SMTP smuggling class)
    nul_byte,
    bad_address,
    bad_parameter,
    bad_number,
    bad_base64,
    bad_cidr,
    bad_address_literal,
    too_long,
    out_of_range,
    too_many_attributes,  // a policy request with more name=value lines than allowed
    bad_attribute,        // a policy line that is not name=value, or names an attribute twice
};

boost::system::error_category const& proto_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept
{
    return {static_cast<int>(e), proto_category()};
}

template <class T>
using result = boost::system::result<T>;

}  // namespace popgate::proto

template <>
struct boost::system::is_error_code_enum<popgate::proto::errc> : std::true_type {};
