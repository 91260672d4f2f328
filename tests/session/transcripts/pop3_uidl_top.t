# RFC 1939 §7 optional commands: UIDL (the unique id is the Maildir base name)
# and TOP (headers, the blank line, then n body lines, byte-stuffed).
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
C: UIDL
S: +OK
S: 1 1000000001.M1P1.test
S: 2 1000000002.M1P1.test
S: .
C: UIDL 2
S: +OK 2 1000000002.M1P1.test
C: UIDL 3
S: -ERR no such message, only 2 messages in maildrop
C: TOP 2 0
S: +OK top of message follows
S: From: carol@gw.test
S: To: alice@gw.test
S: Subject: two
S:
S: .
C: TOP 2 1
S: +OK top of message follows
S: From: carol@gw.test
S: To: alice@gw.test
S: Subject: two
S:
S: ..leading dot
S: .
C: TOP 1
S: -ERR TOP needs a message number and a line count
C: TOP 3 0
S: -ERR no such message, only 2 messages in maildrop
C: QUIT
S: +OK popgate POP3 server signing off (2 messages left)
=closed
