# RFC 5034 §4 AUTH PLAIN without an initial response: the server sends an
# empty challenge, "+ " (matched as "\+[ ]" so that no trailing space has to
# survive in this file), the client answers base64("\0alice\0secret").
@protocol pop3
@user alice secret
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C: AUTH PLAIN
S~ \+[ ]
C: AGFsaWNlAHNlY3JldA==
S: +OK Logged in, maildrop has 0 messages (0 octets)
C: QUIT
S: +OK popgate POP3 server signing off (maildrop empty)
=closed
