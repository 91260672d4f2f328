# RFC 2449 §6.6 PIPELINING: a whole session sent in one write; the replies
# come in order, and QUIT still runs UPDATE.
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
C: PASS secret
C: STAT
C: LIST
C: DELE 2
C: QUIT
S: +OK
S: +OK Logged in, maildrop has 2 messages (145 octets)
S: +OK 2 145
S: +OK 2 messages (145 octets)
S: 1 69
S: 2 76
S: .
S: +OK message 2 deleted
S: +OK popgate POP3 server signing off (1 messages left)
=closed
