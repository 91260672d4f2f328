# Installing popgate as a system daemon, and its Debian package.
#
# `cmake --install` lays out what the package holds: /usr/sbin/popgate,
# /etc/popgate/popgate.toml (generated from config/popgate.toml by
# cmake/package_config.cmake), the systemd unit, sysusers.d and tmpfiles.d
# snippets, a logrotate file (rename, then SIGUSR1), the man pages and bash
# completion.
#
# The package is built with CPack's DEB generator (`cpack -G DEB` in a build
# directory): from the binary this very build made and the tests ran, with
# nothing but dpkg-deb and dpkg-shlibdeps, which every Debian build machine
# has. A debian/ directory would need debhelper and dpkg-buildpackage and a
# second compilation of the whole tree for the same result. The maintainer
# scripts are in deploy/debian/.

include(GNUInstallDirs)

set(POPGATE_PKG_DIR ${CMAKE_BINARY_DIR}/package)
set(POPGATE_PKG_CONFIG ${POPGATE_PKG_DIR}/popgate.toml)
add_custom_command(OUTPUT ${POPGATE_PKG_CONFIG}
  COMMAND ${CMAKE_COMMAND} -DIN=${CMAKE_SOURCE_DIR}/config/popgate.toml -DOUT=${POPGATE_PKG_CONFIG}
          -P ${CMAKE_SOURCE_DIR}/cmake/package_config.cmake
  DEPENDS ${CMAKE_SOURCE_DIR}/config/popgate.toml ${CMAKE_SOURCE_DIR}/cmake/package_config.cmake
  COMMENT "Writing the packaged /etc/popgate/popgate.toml" VERBATIM)
set(POPGATE_MAN_PAGES popgate.8 popgate.toml.5)
set(POPGATE_MAN_GZ)
foreach(page IN LISTS POPGATE_MAN_PAGES)
  # Debian ships man pages gzipped; -n keeps the archive byte-identical per build.
  add_custom_command(OUTPUT ${POPGATE_PKG_DIR}/${page}.gz
    COMMAND sh -c "gzip -9n < \"$0\" > \"$1\"" ${CMAKE_SOURCE_DIR}/man/${page} ${POPGATE_PKG_DIR}/${page}.gz
    DEPENDS ${CMAKE_SOURCE_DIR}/man/${page} VERBATIM)
  list(APPEND POPGATE_MAN_GZ ${POPGATE_PKG_DIR}/${page}.gz)
endforeach()
add_custom_target(popgate_package_files ALL DEPENDS ${POPGATE_PKG_CONFIG} ${POPGATE_MAN_GZ})

install(TARGETS popgate RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})
# Absolute, whatever the prefix: where an installed binary looks (POPGATE_SYSTEM_CONFIG).
get_filename_component(POPGATE_SYSTEM_CONFIG_DIR ${POPGATE_SYSTEM_CONFIG} DIRECTORY)
install(FILES ${POPGATE_PKG_CONFIG} DESTINATION ${POPGATE_SYSTEM_CONFIG_DIR})
install(FILES ${CMAKE_SOURCE_DIR}/deploy/systemd/popgate.service DESTINATION /lib/systemd/system)
install(FILES ${CMAKE_SOURCE_DIR}/deploy/sysusers.d/popgate.conf DESTINATION lib/sysusers.d)
install(FILES ${CMAKE_SOURCE_DIR}/deploy/tmpfiles.d/popgate.conf DESTINATION lib/tmpfiles.d)
install(FILES ${CMAKE_SOURCE_DIR}/deploy/logrotate/popgate DESTINATION /etc/logrotate.d)
install(FILES ${POPGATE_PKG_DIR}/popgate.8.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
install(FILES ${POPGATE_PKG_DIR}/popgate.toml.5.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man5)
install(FILES ${CMAKE_SOURCE_DIR}/deploy/bash-completion/popgate DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions)
install(FILES ${CMAKE_SOURCE_DIR}/README.md ${CMAKE_SOURCE_DIR}/deploy/postfix/relay_clients.cf
  DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${CMAKE_SOURCE_DIR}/sql/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR} RENAME schema.md)
# Examples, not active: fail2ban reads only what is in /etc/fail2ban.
install(DIRECTORY ${CMAKE_SOURCE_DIR}/deploy/fail2ban DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
# storage.group for Postfix's sqlite: table under the unit: a drop-in the
# administrator copies to /etc/systemd/system/popgate.service.d/.
install(FILES ${CMAKE_SOURCE_DIR}/deploy/systemd/popgate.service.d/postfix-sqlite.conf
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples/systemd/popgate.service.d)
# Monitoring: a Prometheus scrape job and alert rules, a Grafana dashboard.
install(DIRECTORY ${CMAKE_SOURCE_DIR}/deploy/prometheus ${CMAKE_SOURCE_DIR}/deploy/grafana
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
# The MTA and Dovecot pieces popgate(8) and the README point to, and the
# PostgreSQL roles (a site runs roles.sql; the daemon creates the schema).
install(DIRECTORY ${CMAKE_SOURCE_DIR}/deploy/postfix ${CMAKE_SOURCE_DIR}/deploy/exim
        ${CMAKE_SOURCE_DIR}/deploy/dovecot DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
install(FILES ${CMAKE_SOURCE_DIR}/sql/postgresql/roles.sql DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples/postgresql)

# dpkg treats these as the administrator's: kept on upgrade, removed on purge.
file(WRITE ${POPGATE_PKG_DIR}/conffiles "${POPGATE_SYSTEM_CONFIG}\n/etc/logrotate.d/popgate\n")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME popgate)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "popgate maintainers <root@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "POP-before-SMTP relay authorization gateway")
# The unit names /usr/sbin/popgate: a Debian package installs under /usr.
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION mail)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# The extended description only: CPack puts the summary above it and
# indents each line itself.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "A POP3 login (USER/PASS, APOP, SASL; STLS or POP3S) grants the client's
address relay rights for a while; the SMTP listener relays for granted
addresses, allowed networks and SMTP AUTH clients to the legacy MTA.
Users, networks and grants live in SQLite or PostgreSQL. Runs as the popgate
user under a hardened systemd unit; not started on install.")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# Debug information stays in the build tree (the binary is 60 MB with it).
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "systemd | adduser")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "sqlite3")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${CMAKE_SOURCE_DIR}/deploy/debian/postinst ${CMAKE_SOURCE_DIR}/deploy/debian/prerm
  ${CMAKE_SOURCE_DIR}/deploy/debian/postrm ${POPGATE_PKG_DIR}/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
