#pragma once
// `popgate db copy`'s inserts into the destination, one table at a time, for
// both engines' write_site.
#include "popgate/log/log.hpp"
#include "popgate/store/store.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace popgate::store {

// The key each table's refusal names.
namespace site_key {
inline std::string user(user_record const& u) { return u.name; }
inline std::string network(struct network const& n) { return n.cidr; }
inline std::string grant(struct grant const& g) { return g.address; }
inline std::string login(grant_login const& l) { return l.address + " " + l.user; }
}  // namespace site_key

// Runs `insert` for each row. When the destination refuses one (PostgreSQL:
// a name that is not UTF-8, a network with host bits that SQLite before
// schema 3 took), the error names the table and the row's key, quoted as a
// log field is, before the engine's own message: the administrator can fix
// that row in the source and copy again. The copy's transaction is rolled
// back by the caller, as before.
template <class Row, class Key, class Insert>
void copy_rows(std::string_view table, std::vector<Row> const& rows, Key const& key, Insert const& insert)
{
    for (auto const& r : rows) {
        try {
            insert(r);
        } catch (store_error const& e) {
            throw store_error(e.code(), std::string(table) + " row " + log::field(key(r)) + " refused: " + e.what());
        }
    }
}

}  // namespace popgate::store
