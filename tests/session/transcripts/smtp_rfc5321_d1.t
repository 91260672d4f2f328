# RFC 5321 Appendix D.1, a typical SMTP transaction, adapted: local delivery
# to users of gw.test; the unknown mailbox (Green in the RFC) is refused with
# 550 5.1.1 and the message goes to the other two. The queue id varies.
@protocol smtp
@user alice secret
@user bob secret
S: 220 gw.test ESMTP popgate
C: EHLO client.example
S: 250-gw.test
S: 250-PIPELINING
S: 250-SIZE 26214400
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250 AUTH PLAIN LOGIN CRAM-MD5
C: MAIL FROM:<Smith@bar.com>
S: 250 2.1.0 Ok
C: RCPT TO:<alice@gw.test>
S: 250 2.1.5 Ok
C: RCPT TO:<Green@gw.test>
S: 550 5.1.1 <Green@gw.test>: Recipient address rejected: User unknown
C: RCPT TO:<bob@gw.test>
S: 250 2.1.5 Ok
C: DATA
S: 354 End data with <CR><LF>.<CR><LF>
C: From: Smith@bar.com
C: To: alice@gw.test, bob@gw.test
C: Subject: D.1
C:
C: Blah blah blah...
C: ...etc. etc. etc.
C: .
S~ 250 2\.0\.0 Ok: queued as [0-9A-F]{12}
C: QUIT
S: 221 2.0.0 Bye
=closed
