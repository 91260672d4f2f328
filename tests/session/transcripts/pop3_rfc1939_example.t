# RFC 1939 §10 example session with USER/PASS (§7) instead of APOP: STAT,
# LIST, RETR, DELE, then QUIT enters the UPDATE state (§6) and removes both
# messages. Sizes count LF as CRLF (RFC 1939 §11: octets as sent); the second
# message shows byte-stuffing of a line that starts with "." (§3).
@protocol pop3
@user alice secret
@message alice 1000000001.M1P1.test
From: bob@gw.test
To: alice@gw.test
Subject: one

Hello, Alice.
@end
@message alice 1000000002.M1P1.test
From: carol@gw.test
To: alice@gw.test
Subject: two

.leading dot
Bye.
@end
S~ \+OK popgate POP3 server ready <\d+\.\d+\.[0-9a-f]{16}@gw\.test>
C: USER alice
S: +OK
C: PASS secret
S: +OK Logged in, maildrop has 2 messages (145 octets)
C: STAT
S: +OK 2 145
C: LIST
S: +OK 2 messages (145 octets)
S: 1 69
S: 2 76
S: .
C: RETR 1
S: +OK 69 octets
S: From: bob@gw.test
S: To: alice@gw.test
S: Subject: one
S:
S: Hello, Alice.
S: .
C: DELE 1
S: +OK message 1 deleted
C: RETR 2
S: +OK 76 octets
S: From: carol@gw.test
S: To: alice@gw.test
S: Subject: two
S:
S: ..leading dot
S: Bye.
S: .
C: DELE 2
S: +OK message 2 deleted
C: QUIT
S: +OK popgate POP3 server signing off (maildrop empty)
=closed
