# RFC 2595 §4 / CVE-2011-0411: a command pipelined behind STLS in the same
# write is discarded, never run under TLS: after the handshake PASS finds no
# USER, and CAPA is the post-TLS one (no STLS).
# @whole-only: the discarded USER must reach the server in the same read as
# STLS; sent byte by byte it would arrive after the upgrade and be executed.
@protocol pop3
@whole-only
@listener tls=starttls
@user alice secret
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C: STLS
C: USER alice
S: +OK Begin TLS negotiation
C! starttls
C: PASS secret
S: -ERR USER first
C: CAPA
S: +OK Capability list follows
S: TOP
S: UIDL
S: RESP-CODES
S: AUTH-RESP-CODE
S: PIPELINING
S: USER
S: SASL PLAIN LOGIN CRAM-MD5
S: IMPLEMENTATION popgate
S: .
C: QUIT
S: +OK popgate POP3 server signing off
=closed
