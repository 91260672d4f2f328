# RFC 2595 §4: STLS only in the AUTHORIZATION state; after login it is a
# command in the wrong state.
@protocol pop3
@listener tls=starttls
@user alice secret
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C: USER alice
S: +OK
C: PASS secret
S: +OK Logged in, maildrop has 0 messages (0 octets)
C: STLS
S: -ERR Command not valid in this state
C: QUIT
S: +OK popgate POP3 server signing off (maildrop empty)
=closed
