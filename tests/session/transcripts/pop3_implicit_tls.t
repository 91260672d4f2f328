# RFC 8314 implicit TLS (POP3S): the greeting comes after the handshake; STLS
# is neither announced nor accepted; login works as in clear.
@protocol pop3
@listener tls=implicit
@user alice secret
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
C: USER alice
S: +OK
C: PASS secret
S: +OK Logged in, maildrop has 0 messages (0 octets)
C: QUIT
S: +OK popgate POP3 server signing off (maildrop empty)
=closed
