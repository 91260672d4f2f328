# RFC 1939 §10 example session as the RFC writes it, with APOP (§7): the
# digest is MD5(timestamp of the greeting + shared secret), so alice needs a
# shared secret. DELE of one message, QUIT removes it in UPDATE (§6).
@protocol pop3
@user alice secret shared
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
C! apop alice secret
S: +OK Logged in, maildrop has 2 messages (145 octets)
C: STAT
S: +OK 2 145
C: LIST 1
S: +OK 1 69
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
C: QUIT
S: +OK popgate POP3 server signing off (1 messages left)
=closed
