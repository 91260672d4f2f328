# RFC 2595 §4: STLS on a listener without TLS (tls=none) is refused, and CAPA
# does not announce it.
@protocol pop3
@listener tls=none
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
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
C: STLS
S: -ERR STLS not offered on this port
C: QUIT
S: +OK popgate POP3 server signing off
=closed
