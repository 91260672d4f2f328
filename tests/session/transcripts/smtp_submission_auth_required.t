# RFC 6409 submission (auth_required listener): without AUTH an outside
# recipient is refused (there only AUTH counts, not grants or networks);
# local recipients are still accepted; after AUTH it relays.
@protocol smtp
@listener tls=starttls auth_required=yes
@user alice secret
S: 220 gw.test ESMTP popgate
C: EHLO client.example
S: 250-gw.test
S: 250-PIPELINING
S: 250-SIZE 26214400
S: 250-8BITMIME
S: 250-ENHANCEDSTATUSCODES
S: 250-STARTTLS
S: 250 AUTH PLAIN LOGIN CRAM-MD5
C: MAIL FROM:<alice@gw.test>
S: 250 2.1.0 Ok
C: RCPT TO:<x@example.org>
S: 554 5.7.1 <x@example.org>: Relay access denied
C: RCPT TO:<alice@gw.test>
S: 250 2.1.5 Ok
C: RSET
S: 250 2.0.0 Ok
C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
S: 235 2.7.0 Authentication successful
C: MAIL FROM:<alice@gw.test>
S: 250 2.1.0 Ok
C: RCPT TO:<x@example.org>
S: 250 2.1.5 Ok
C: QUIT
S: 221 2.0.0 Bye
=closed
