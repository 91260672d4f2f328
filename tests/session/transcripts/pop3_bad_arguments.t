# RFC 1939 §5 argument errors in TRANSACTION: extra arguments, missing or
# invalid message numbers (they start at 1), messages that do not exist or
# are already marked deleted. All -ERR, the session goes on.
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
C: NOOP x
S: -ERR NOOP takes no argument
C: STAT x
S: -ERR STAT takes no argument
C: RSET x
S: -ERR RSET takes no argument
C: DELE
S: -ERR DELE needs a message number
C: RETR
S: -ERR RETR needs a message number
C: LIST x
S: -ERR invalid message number
C: LIST 0
S: -ERR invalid message number
C: RETR 3
S: -ERR no such message, only 2 messages in maildrop
C: DELE 1
S: +OK message 1 deleted
C: DELE 1
S: -ERR message 1 already deleted
C: RETR 1
S: -ERR message 1 already deleted
C: LIST
S: +OK 1 messages (76 octets)
S: 2 76
S: .
C: QUIT
S: +OK popgate POP3 server signing off (1 messages left)
=closed
