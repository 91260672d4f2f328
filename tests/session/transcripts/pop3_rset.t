# RFC 1939 §5 RSET: messages marked by DELE are unmarked; QUIT then deletes
# nothing (UPDATE, §6).
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
C: DELE 1
S: +OK message 1 deleted
C: STAT
S: +OK 1 76
C: LIST 1
S: -ERR message 1 already deleted
C: RSET
S: +OK maildrop has 2 messages (145 octets)
C: STAT
S: +OK 2 145
C: QUIT
S: +OK popgate POP3 server signing off (2 messages left)
=closed
