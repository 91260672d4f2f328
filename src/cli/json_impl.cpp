// Boost.JSON header-only: its implementation, compiled once for the whole
// binary (the CLI's --json output).
#include <boost/json/src.hpp>
